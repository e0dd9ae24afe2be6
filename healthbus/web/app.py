"""The Starlette app: `create_app(config)`, the uvicorn factory and `run_web`.

The lifespan owns the Redis client and the hub; nothing lives at module level, so every
worker process (`--workers N`) builds its own from the same configuration:

    uvicorn --factory healthbus.web.app:app_from_env --workers 4

`app_from_env` reads the configuration from `HEALTHBUS_*` variables (and `HEALTHBUS_CONFIG`),
or the whole of it from `_HEALTHBUS_WEB_CONFIG` when `run_web` started the workers.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import msgspec
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from healthbus.config import Config
from healthbus.connection import connect
from healthbus.errors import ConfigError
from healthbus.schema import encode
from healthbus.web.api import (
    incidents,
    service_detail,
    service_history,
    service_sla,
    transitions,
)
from healthbus.web.badge import badge
from healthbus.web.hub import BLOCK_MS, running_hub
from healthbus.web.metrics import metrics
from healthbus.web.openapi import openapi
from healthbus.web.routes import api_health, dashboard, health, ready
from healthbus.web.session import create_session, delete_session, get_session
from healthbus.web.silences import delete_silence, get_silences, post_silence
from healthbus.web.stream import SERVER_SEND, TRANSPORT, health_stream

__all__ = ["CONFIG_ENV", "STATIC_DIR", "app_from_env", "check_bind", "create_app", "run_web"]

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
#: The whole configuration as JSON, handed by `run_web` to its worker processes.
CONFIG_ENV: Final = "_HEALTHBUS_WEB_CONFIG"
#: Seconds open SSE streams get to end when the server stops.
GRACEFUL_SHUTDOWN_S: Final = 3
#: uvicorn's HTTP/1.1 implementation, whatever else is installed: the fan-out writes to idle
#: SSE connections itself only behind h11 (direct.py). With httptools, which
#: `uvicorn[standard]` brings and uvicorn then prefers, every event would wake every client's
#: task, ~45 µs a client.
HTTP: Final = "h11"


def create_app(
    config: Config,
    *,
    static_dir: Path | None = None,
    hub_options: dict[str, Any] | None = None,
) -> Starlette:
    """The web app of one worker. `hub_options` tune the hub (ring size, block time) in tests."""
    static = static_dir or STATIC_DIR

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        client = connect(config.redis_url or DEFAULT_REDIS_URL, block_ms=BLOCK_MS, name="hb-web")
        try:
            async with running_hub(client, config, **(hub_options or {})) as hub:
                yield {
                    "config": config,
                    "redis": client,
                    "hub": hub,
                    "static_dir": static,
                    "started_ms": int(time.time() * 1000),
                }
        finally:
            await client.aclose()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/api/health", api_health, methods=["GET"]),
        Route("/api/health/stream", health_stream, methods=["GET"]),
        Route("/api/services/{name}", service_detail, methods=["GET"]),
        Route("/api/services/{name}/history", service_history, methods=["GET"]),
        Route("/api/services/{name}/sla", service_sla, methods=["GET"]),
        Route("/api/transitions", transitions, methods=["GET"]),
        Route("/api/incidents", incidents, methods=["GET"]),
        Route("/api/silences", get_silences, methods=["GET"]),
        Route("/api/silences", post_silence, methods=["POST"]),
        Route("/api/silences", delete_silence, methods=["DELETE"]),
        Route("/api/session", get_session, methods=["GET"]),
        Route("/api/session", create_session, methods=["POST"]),
        Route("/api/session", delete_session, methods=["DELETE"]),
        Route("/badge/{name}.svg", badge, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/", dashboard, methods=["GET"]),
        Mount("/static", StaticFiles(directory=static, check_dir=False), name="static"),
    ]
    return _App(routes=routes, lifespan=lifespan)


class _App(Starlette):
    """Keeps each request's connection in its scope state (`TRANSPORT`), so that an SSE
    stream whose client stopped reading can be cut off, and the server's own `send`
    (`SERVER_SEND`), so that the hub may write events to an idle stream directly (stream.py,
    direct.py). uvicorn's `send` is a method of the request's cycle, which holds the
    transport; other servers' may not be."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "state" in scope:
            scope["state"][SERVER_SEND] = send
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None:
                scope["state"][TRANSPORT] = transport
        await super().__call__(scope, receive, send)


def app_from_env() -> Starlette:
    """The uvicorn factory: `uvicorn --factory healthbus.web.app:app_from_env`."""
    raw = os.environ.get(CONFIG_ENV)
    if raw:
        try:
            config = msgspec.json.decode(raw, type=Config)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{CONFIG_ENV} holds an invalid configuration: {exc}") from None
    else:
        config = Config.load()
    return create_app(config)


def check_bind(config: Config) -> None:
    """Refuse to listen beyond loopback without a token (design.md, "HTTP")."""
    if config.token:
        return
    host = config.host
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"refusing to listen on {host} without a token: set HEALTHBUS_TOKEN "
            "(or bind 127.0.0.1 and put a proxy in front)"
        )


def run_web(config: Config) -> None:
    """Serve until stopped, with `config.workers` processes on `config.host:config.port`."""
    import uvicorn

    check_bind(config)
    os.environ[CONFIG_ENV] = encode(config).decode()
    # uvicorn raises a SIGTERM it caught again once it has shut down gracefully, so that the
    # process dies of it (status 143): this handler then makes the planned stop exit 0.
    signal.signal(signal.SIGTERM, _exit_ok)
    uvicorn.run(
        "healthbus.web.app:app_from_env",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        log_level=config.log_level,
        lifespan="on",
        http=HTTP,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


def _exit_ok(signum: int, frame: object) -> None:
    raise SystemExit(0)
