"""The aggregator: a pure fold (status rules, transitions) and the runner that feeds it."""

from __future__ import annotations

from aggregator.runner import Aggregator

__all__ = ["Aggregator"]
