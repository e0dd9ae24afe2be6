"""The plain HTTP routes: liveness, readiness, the health document and the dashboard page."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Final

import anyio
import redis.asyncio as aioredis
import redis.exceptions
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from healthbus import __version__
from healthbus.config import Config
from healthbus.connection import CONNECTION_ERRORS, TIME_SCRIPT
from healthbus.schema import decode_meta
from healthbus.web.document import HealthQuery, ServerInfo, health_document
from healthbus.web.hub import Hub
from healthbus.web.selection import BadQuery, withholds_details

__all__ = ["api_health", "dashboard", "health", "ready"]

log = logging.getLogger("healthbus.web")

#: Liveness and readiness answer within this, whatever Redis does.
PROBE_TIMEOUT_S: Final = 2.0
NO_STORE: Final = {"Cache-Control": "no-store"}
REDIS_ERRORS: Final[tuple[type[BaseException], ...]] = (
    *CONNECTION_ERRORS,
    redis.exceptions.RedisError,
)


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse({"status": "unavailable", "reason": reason}, 503, headers=NO_STORE)


async def health(request: Request) -> Response:
    """Liveness: this process is up and reaches Redis."""
    client: aioredis.Redis = request.state.redis
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            await client.ping()
    except REDIS_ERRORS as exc:
        log.info("liveness: Redis unreachable: %r", exc)
        return _unavailable(f"cannot reach Redis ({type(exc).__name__})")
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


async def ready(request: Request) -> Response:
    """Readiness: `_meta.updated_at` is younger than `ready_stale_s`, by Redis time."""
    client: aioredis.Redis = request.state.redis
    config: Config = request.state.config
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            async with client.pipeline(transaction=False) as pipe:
                pipe.eval(TIME_SCRIPT, 1, config.keys.commands)  # its ACL user may write it
                pipe.hget(config.keys.snapshot, "_meta")
                (seconds, micros), raw = await pipe.execute()
    except REDIS_ERRORS as exc:
        log.info("readiness: Redis unreachable: %r", exc)
        return _unavailable(f"cannot reach Redis ({type(exc).__name__})")
    meta = decode_meta(raw)
    if meta is None:
        return _unavailable("no data yet: the aggregator has not committed (is it running?)")
    age_ms = int(seconds) * 1000 + int(micros) // 1000 - meta.updated_at_ms
    limit_ms = config.ready_stale_s * 1000
    if age_ms > limit_ms:
        return _unavailable(
            f"the bus is stale: updated {age_ms / 1000:.1f} s ago "
            f"(limit {config.ready_stale_s:g} s); is the aggregator running?"
        )
    body: dict[str, Any] = {"status": "ready", "age_ms": max(0, age_ms), "seq": meta.seq}
    return JSONResponse(body, headers=NO_STORE)


async def api_health(request: Request) -> Response:
    """The snapshot as one document, from this worker's copy (no Redis round trip)."""
    hub: Hub = request.state.hub
    config: Config = request.state.config
    try:
        query = HealthQuery.from_query(request.query_params)
    except BadQuery as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    server = ServerInfo(
        __version__, request.state.started_ms, int(time.time() * 1000), hub.subscribers
    )
    body = health_document(
        hub.replica,
        query,
        server=server,
        stale=hub.stale,
        redact=withholds_details(config, request.headers),
    )
    return Response(body, media_type="application/json", headers=NO_STORE)


async def dashboard(request: Request) -> Response:
    index: Path = request.state.static_dir / "index.html"
    if not await anyio.Path(index).is_file():
        return PlainTextResponse(
            "the dashboard is not installed; the API is at /api/health", status_code=404
        )
    return FileResponse(index, headers=NO_STORE)
