"""The Redis seam: how every part of healthbus connects, and how Redis errors surface.

Timeouts are chosen on purpose: a blocking read (`XREAD BLOCK`) waits for at most
`block_ms`, so the socket timeout sits well above it and never trips on an idle stream,
yet a dead server is noticed within seconds. Long-running loops reconnect with `Backoff`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from healthbus.errors import BusUnavailable

__all__ = ["CONNECTION_ERRORS", "Backoff", "bus_errors", "connect", "redact_url"]

#: Errors that mean "Redis is not there right now" (as opposed to a bug or a bad reply).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    ConnectionError,
    TimeoutError,
    OSError,
)

CONNECT_TIMEOUT_S = 2.0
#: Added to the longest blocking read to get the socket timeout.
READ_MARGIN_S = 5.0


def connect(url: str, *, block_ms: int = 0, name: str | None = None) -> aioredis.Redis:
    """An asyncio client for `url` whose timeouts fit reads blocking up to `block_ms`."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=block_ms / 1000 + READ_MARGIN_S,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries=2),
        client_name=name,
        decode_responses=False,
    )


@contextmanager
def bus_errors(url: str | None = None) -> Iterator[None]:
    """Turn connection-level Redis errors into BusUnavailable, with a hint what to check."""
    try:
        yield
    except CONNECTION_ERRORS as exc:
        where = f" at {redact_url(url)}" if url else ""
        raise BusUnavailable(
            f"cannot reach Redis{where}: {exc}; check that it runs and HEALTHBUS_REDIS_URL is right"
        ) from exc


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ':'}***@{host}"


class Backoff:
    """Exponential backoff with full jitter for reconnect loops; `reset()` after a success."""

    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0
