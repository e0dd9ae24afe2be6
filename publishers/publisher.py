"""The buffered, non-blocking heartbeat publisher, for sync code, threads and asyncio alike.

`publish()` builds a `Heartbeat` and appends it to a bounded deque; that is all it does, so it
costs about a microsecond, never touches a socket and never raises because of Redis. A daemon
thread (`publishers._sender`) does the encoding and the I/O. One implementation serves every
caller: asyncio code calls the same `publish()` (it never awaits), and only `close()`, which
may wait for the last flush, has an async form.

Argument checking: a bad service or instance name or a non-positive `interval_s` is a caller
bug, so it raises `InvalidMessage` at once, but only the first time a (service, instance) pair
is seen (a dict lookup afterwards). Everything else is checked in the background thread,
where a wrong heartbeat is counted in `stats.invalid`, logged, and still sent (if it fits the
message size limit) so the aggregator marks that service `error` with the reason.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import socket
import threading
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Literal, Self

import anyio
import msgspec
from msgspec.structs import force_setattr

from healthbus.config import Config
from healthbus.connection import redact_url
from healthbus.errors import ConfigError, InvalidMessage
from healthbus.keys import Keys
from healthbus.schema import (
    SCHEMA_VERSION,
    SERVICE_PATTERN,
    Details,
    Heartbeat,
    Intent,
    SelfStatus,
)
from publishers import _lifecycle
from publishers._sender import Sender

__all__ = [
    "Publisher",
    "PublisherStats",
    "check_names",
    "default_host",
    "default_instance",
    "describe_error",
]

_NAME = re.compile(SERVICE_PATTERN)
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")
_MAX_INTERVAL_S: Final = 31_536_000
#: (service, instance) pairs remembered for goodbyes; past this, new pairs get none.
_MAX_TRACKED: Final = 100_000


class PublisherStats(msgspec.Struct, frozen=True, kw_only=True):
    """A point-in-time view of a publisher's counters."""

    #: Heartbeats buffered or in flight, not yet acknowledged by Redis.
    queued: int
    #: Heartbeats Redis accepted.
    sent: int
    #: Heartbeats thrown away: buffer overflow (oldest first), refused by Redis, or unsent at close.
    dropped: int
    #: Pipeline round trips that failed (Redis down, slow, or refusing entries).
    failed_batches: int
    connected: bool
    last_error: str | None
    #: Heartbeats that failed validation in the background (see the module docstring).
    invalid: int = 0


def default_host() -> str:
    """This host's name, made to fit the instance name rules (for identities that outlive a pid)."""
    return (_INVALID_NAME_CHARS.sub("-", socket.gethostname()) or "host")[:100]


def default_instance() -> str:
    """`host:pid`, made to fit the instance name rules."""
    return f"{default_host()}:{os.getpid()}"


def check_names(service: str, instance: str | None, interval_s: float) -> None:
    """Raise `InvalidMessage` for a bad service or instance name or interval: a caller bug."""
    if not isinstance(service, str) or not _NAME.fullmatch(service):
        raise InvalidMessage(
            f"service name {service!r} is invalid: use 1-128 characters of A-Z a-z 0-9 _ . : -"
        )
    if instance is not None and (not isinstance(instance, str) or not _NAME.fullmatch(instance)):
        raise InvalidMessage(
            f"instance {instance!r} is invalid: use 1-128 characters of A-Z a-z 0-9 _ . : -",
            service,
        )
    if (
        isinstance(interval_s, bool)
        or not isinstance(interval_s, int | float)
        or not 0 < interval_s <= _MAX_INTERVAL_S
    ):
        raise InvalidMessage(
            f"interval_s of {service!r} must be a number of seconds > 0, got {interval_s!r}",
            service,
        )


class Publisher:
    """Buffered heartbeats to one namespace's stream; see the module docstring.

    `buffer_size` bounds memory (the oldest heartbeats go first when it is full),
    `batch_size` bounds one pipeline, and `flush_interval_s` is the longest a heartbeat waits
    before the thread sends it (a full batch goes at once).
    """

    def __init__(
        self,
        redis_url: str,
        namespace: str = "default",
        *,
        instance: str | None = None,
        buffer_size: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.05,
    ) -> None:
        if buffer_size < 1 or batch_size < 1 or not flush_interval_s > 0:
            raise ConfigError("buffer_size and batch_size must be >= 1, flush_interval_s > 0")
        if instance is not None and not _NAME.fullmatch(instance):
            raise ConfigError(f"instance {instance!r} is invalid: use 1-128 of A-Z a-z 0-9 _ . : -")
        self.redis_url = redis_url
        self.keys = Keys(namespace)
        self._fixed_instance = instance
        self._buffer_size = buffer_size
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._start()
        _lifecycle.track(self)

    def _start(self) -> None:
        """(Re)start: a new boot id, counter, buffer and thread (also in a forked child)."""
        self.instance = self._fixed_instance or default_instance()
        self.boot = secrets.token_hex(6)
        self._n = itertools.count()
        self._buffer: deque[Heartbeat] = deque(maxlen=self._buffer_size)
        self._dropped = 0
        self._seen: dict[tuple[str, str], tuple[float, str]] = {}
        self._closed = False
        self._close_lock = threading.Lock()
        self._sender = Sender(
            self.redis_url,
            self.keys.heartbeats,
            self._buffer,
            name=f"healthbus-publisher:{self.instance}",
            batch_size=self._batch_size,
            flush_interval_s=self._flush_interval_s,
        )
        self._sender.start()

    def _restart_after_fork(self) -> None:
        """In a forked child: a new boot, buffer and thread, and `host:<its pid>` as identity.

        An `instance` given to the constructor is kept, so give forked workers their own.
        """
        if not self._closed:
            self._start()

    @classmethod
    def from_config(cls, config: Config, **options: Any) -> Publisher:
        """A publisher for the configured URL, namespace and instance; `options` as for the
        constructor."""
        if config.redis_url is None:
            raise ConfigError("no Redis URL configured: set HEALTHBUS_REDIS_URL or --redis-url")
        return cls(config.redis_url, config.namespace, **{"instance": config.instance, **options})

    def publish(
        self,
        service: str,
        *,
        interval_s: float,
        ok: bool = True,
        kind: str = "perpetual",
        status: SelfStatus | None = None,
        duration_ms: float | None = None,
        error: str | BaseException | None = None,
        details: Details | None = None,
        hint: str | None = None,
        depends_on: Sequence[str] | None = None,
        phase: Literal["start", "end"] | None = None,
        timeout_s: float | None = None,
        intent: Intent | None = None,
        instance: str | None = None,
    ) -> None:
        """Queue one heartbeat and return at once; the background thread sends it.

        `error` may be an exception (formatted as "Type: message"); `details` is copied, so
        a dict reused between calls is safe. Values are encoded later, in the thread.
        """
        inst = instance or self.instance
        if (service, inst) not in self._seen:
            self._first_sight(service, inst, interval_s, kind)
        if error is not None and error.__class__ is not str:
            error = describe_error(error)
        hb = self._stamped(service, inst, interval_s, ok, kind)
        # Only the fields given, set on the new struct before anyone else sees it (what
        # msgspec's force_setattr is for): given as keywords, None for the rest or `**` a
        # dict of the given ones, they cost more than half of this call.
        if status is not None:
            force_setattr(hb, "status", status)
        if duration_ms is not None:
            force_setattr(hb, "duration_ms", duration_ms)
        if error is not None:
            force_setattr(hb, "error", error)
        if details is not None:
            force_setattr(hb, "details", dict(details))
        if hint is not None:
            force_setattr(hb, "hint", hint)
        if depends_on is not None:
            force_setattr(hb, "depends_on", list(depends_on))
        if phase is not None:
            force_setattr(hb, "phase", phase)
        if timeout_s is not None:
            force_setattr(hb, "timeout_s", timeout_s)
        if intent is not None:
            force_setattr(hb, "intent", intent)
        buf = self._buffer
        if len(buf) == self._buffer_size:
            self._dropped += 1
        buf.append(hb)
        if len(buf) >= self._batch_size and not self._sender.wake.is_set():
            self._sender.wake.set()

    def _stamped(
        self, service: str, instance: str, interval_s: float, ok: bool, kind: str
    ) -> Heartbeat:
        """A heartbeat of this publisher: its boot, and the next number of its sequence."""
        return Heartbeat(
            v=SCHEMA_VERSION,
            service=service,
            interval_s=interval_s,
            ok=ok,
            kind=kind,
            instance=instance,
            boot=self.boot,
            n=next(self._n),
        )

    def publish_heartbeat(self, hb: Heartbeat) -> None:
        """Queue a ready-made heartbeat; `instance`, `boot` and `n` are filled in when unset."""
        if hb.instance is None or hb.boot is None or hb.n is None:
            hb = msgspec.structs.replace(
                hb,
                instance=hb.instance or self.instance,
                boot=hb.boot or self.boot,
                n=next(self._n) if hb.n is None else hb.n,
            )
        key = (hb.service, hb.instance or self.instance)
        if hb.goodbye:
            self._seen.pop(key, None)
        elif key not in self._seen:
            self._first_sight(key[0], key[1], hb.interval_s, hb.kind)
        self._push(hb)

    def _push(self, hb: Heartbeat) -> None:
        """publish() inlines this, to save a call on the hot path."""
        if len(self._buffer) == self._buffer_size:
            self._dropped += 1
        self._buffer.append(hb)
        if len(self._buffer) >= self._batch_size:
            self._sender.wake.set()

    def _first_sight(self, service: str, instance: str, interval_s: float, kind: str) -> None:
        check_names(service, instance, interval_s)
        if len(self._seen) < _MAX_TRACKED:
            self._seen[(service, instance)] = (float(interval_s), str(kind))

    @property
    def stats(self) -> PublisherStats:
        s = self._sender
        return PublisherStats(
            queued=len(self._buffer) + s.in_flight,
            sent=s.sent,
            dropped=self._dropped + s.dropped,
            failed_batches=s.failed_batches,
            connected=s.connected,
            last_error=s.last_error,
            invalid=s.invalid,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = 5.0, *, goodbye: bool = True) -> None:
        """Say goodbye for every (service, instance) published, flush within `timeout`, stop.

        Idempotent and safe from any thread. What is still unsent at the deadline is dropped
        (and counted); the daemon thread is then left to finish its last socket timeout.
        `goodbye=False` is for a job that ends but is due again (`healthbus run`): its last
        heartbeat must stay, so that a missed next run is noticed.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for (service, instance), (interval_s, kind) in self._seen.copy().items() if goodbye else ():
            hb = self._stamped(service, instance, interval_s, True, kind)
            force_setattr(hb, "goodbye", True)
            self._push(hb)
        self._seen.clear()
        self._sender.stop(timeout)
        _lifecycle.untrack(self)

    async def aclose(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (bounds the flush)
        """`close()` in a worker thread, shielded: the loop never blocks, cancellation waits."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"Publisher({redact_url(self.redis_url)!r}, {self.keys.namespace!r}, "
            f"instance={self.instance!r}, closed={self._closed})"
        )


def describe_error(error: object) -> str:
    """An exception as "Type: message" (just "Type" when it has no message)."""
    if isinstance(error, BaseException):
        text = str(error)
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return str(error)
