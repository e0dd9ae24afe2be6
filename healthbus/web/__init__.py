"""The web side: one hub per worker process fanning the bus out over SSE and HTTP."""

from __future__ import annotations

from healthbus.web.app import app_from_env, create_app, run_web

__all__ = ["app_from_env", "create_app", "run_web"]
