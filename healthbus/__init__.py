"""healthbus: service health over a capped Redis stream."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
