"""`type = "redis"`: PING latency, memory against maxmemory, clients, evictions, and how deep
named streams and sorted-set queues have grown: the "tasks piling up in Redis" signal.

`check()` gathers the numbers in two round trips; `judge()` grades them without I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, NamedTuple

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from publishers.probes.base import (
    Millis,
    Seconds,
    UrlProbeSpec,
    closing,
    elapsed_ms,
)
from publishers.probes.result import (
    DetailValue,
    Finding,
    ProbeResult,
    conclude,
    latency_finding,
    threshold_finding,
)

__all__ = ["QueueCheck", "RedisProbe", "StreamCheck", "StreamStats", "connect", "judge", "ping"]

Count = Annotated[int, msgspec.Meta(ge=0)] | None
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]
Key = Annotated[str, msgspec.Meta(min_length=1)]


class StreamCheck(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A stream used as a queue: its length, and per consumer group the entries delivered but
    not acknowledged (`pending`) and not yet delivered (`lag`); the worst group counts unless
    `group` names one."""

    key: Key
    group: str | None = None
    length_degraded: Count = None
    length_error: Count = None
    pending_degraded: Count = None
    pending_error: Count = None
    lag_degraded: Count = None
    lag_error: Count = None


class QueueCheck(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A sorted set used as a queue (scheduled tasks): its length (ZCARD)."""

    key: Key
    length_degraded: Count = None
    length_error: Count = None


class StreamStats(NamedTuple):
    length: int
    pending: int | None = None
    lag: int | None = None
    #: Why the numbers could not be read (wrong type, missing group).
    problem: str | None = None


class RedisProbe(UrlProbeSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """design.md: 50/500 ms, 3 s timeout, checked every 15 s (a critical path)."""

    type: ClassVar[str] = "redis"
    ordered: ClassVar[tuple[tuple[str, str], ...]] = (
        ("degraded_ms", "error_ms"),
        ("memory_degraded", "memory_error"),
        ("clients_degraded", "clients_error"),
    )
    url: Annotated[str, msgspec.Meta(pattern=r"^(redis|rediss|unix)://")]
    streams: Annotated[list[StreamCheck], msgspec.Meta(max_length=6)] = msgspec.field(
        default_factory=list
    )
    queues: Annotated[list[QueueCheck], msgspec.Meta(max_length=6)] = msgspec.field(
        default_factory=list
    )
    #: Fractions of maxmemory (when one is set).
    memory_degraded: Fraction = 0.8
    memory_error: Fraction = 0.95
    clients_degraded: Count = None
    clients_error: Count = None
    interval: Seconds = 15.0
    timeout: Seconds = 3.0
    degraded_ms: Millis | None = 50.0
    error_ms: Millis | None = 500.0

    async def check(self) -> ProbeResult:
        client = connect(self.url)
        async with closing(client.aclose):
            connect_ms, ping_ms = await ping(client)
            pipe = client.pipeline(transaction=False)
            pipe.info()
            for stream in self.streams:
                pipe.xlen(stream.key)
                pipe.xinfo_groups(stream.key)
            for queue in self.queues:
                pipe.zcard(queue.key)
            replies = await pipe.execute(raise_on_error=False)
        info, rest = replies[0], replies[1:]
        if isinstance(info, Exception):
            raise info
        streams = [
            _stream_stats(spec, rest[2 * i], rest[2 * i + 1]) for i, spec in enumerate(self.streams)
        ]
        queues = rest[2 * len(self.streams) :]
        return judge(self, ping_ms, connect_ms, info, streams, queues)


def connect(url: str) -> aioredis.Redis:
    """A client for one check. No retries: a probe reports what a caller meets, and the
    runner bounds the time."""
    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), client_name="healthbus-probe")


async def ping(client: aioredis.Redis) -> tuple[float, float]:
    """(connect_ms, ping_ms): a first PING connects, a second measures the round trip."""
    started = time.perf_counter()
    await client.ping()
    connect_ms = elapsed_ms(started)
    started = time.perf_counter()
    await client.ping()
    return connect_ms, elapsed_ms(started)


def _stream_stats(spec: StreamCheck, length: object, groups: object) -> StreamStats:
    if isinstance(length, Exception):
        return StreamStats(0, problem=f"cannot read stream {spec.key}: {length}")
    if isinstance(groups, Exception):  # "no such key": an empty stream has no groups
        groups = []
    assert isinstance(length, int) and isinstance(groups, list)
    if spec.group is not None:
        groups = [g for g in groups if _text(g.get("name")) == spec.group]
        if not groups:
            return StreamStats(length, problem=f"stream {spec.key} has no group {spec.group!r}")
    pending = [g["pending"] for g in groups if isinstance(g.get("pending"), int)]
    lags = [g["lag"] for g in groups if isinstance(g.get("lag"), int)]
    return StreamStats(length, max(pending, default=None), max(lags, default=None))


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def judge(
    spec: RedisProbe,
    ping_ms: float,
    connect_ms: float,
    info: Mapping[str, Any],
    streams: Sequence[StreamStats],
    queues: Sequence[object],
) -> ProbeResult:
    """Grade one check's numbers against the probe's thresholds (pure)."""
    details: dict[str, DetailValue] = {"connect_ms": connect_ms}
    findings: list[Finding | None] = [latency_finding(ping_ms, spec.degraded_ms, spec.error_ms)]
    used, limit = _int(info.get("used_memory")), _int(info.get("maxmemory"))
    details["used_memory"] = used
    if used is not None and limit:
        percent = round(100 * used / limit, 1)
        details["maxmemory"] = limit
        details["memory_used_pct"] = percent
        findings.append(
            threshold_finding(
                "memory used", percent, 100 * spec.memory_degraded, 100 * spec.memory_error, " %"
            )
        )
    clients = _int(info.get("connected_clients"))
    details["connected_clients"] = clients
    if clients is not None:
        findings.append(
            threshold_finding("clients", clients, spec.clients_degraded, spec.clients_error)
        )
    details["evicted_keys"] = _int(info.get("evicted_keys"))
    for check, stats in zip(spec.streams, streams, strict=True):
        name = f"stream {check.key}"
        details[f"stream.{check.key}.length"] = stats.length
        details[f"stream.{check.key}.pending"] = stats.pending
        details[f"stream.{check.key}.lag"] = stats.lag
        if stats.problem:
            findings.append(Finding("error", stats.problem))
        findings.append(
            threshold_finding(
                f"{name} length", stats.length, check.length_degraded, check.length_error
            )
        )
        if stats.pending is not None:
            findings.append(
                threshold_finding(
                    f"{name} pending", stats.pending, check.pending_degraded, check.pending_error
                )
            )
        if stats.lag is not None:
            findings.append(
                threshold_finding(f"{name} lag", stats.lag, check.lag_degraded, check.lag_error)
            )
    for queue, length in zip(spec.queues, queues, strict=True):
        if isinstance(length, int):
            details[f"queue.{queue.key}.length"] = length
            findings.append(
                threshold_finding(
                    f"queue {queue.key} length", length, queue.length_degraded, queue.length_error
                )
            )
        else:
            findings.append(Finding("error", f"cannot read queue {queue.key}: {length}"))
    return conclude(findings, duration_ms=ping_ms, details=details)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
