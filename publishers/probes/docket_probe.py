"""`type = "docket"`: a docket (pydocket's task queue in Redis) and its perpetual tasks, watched
from its keys, without its code: one heartbeat for the docket (live workers, tasks waiting for
a slot, tasks overdue) and one per perpetual task, `<probe name>.<task key>` (late, running too
long, not scheduled, its last run failed).

The keys and why `live` matters are in `docket_rules`; `check()` reads them in a few round
trips, the rules grade them without I/O. With `live = true` (the default) the runner keeps
one subscription to the tasks' `{p}:state:<key>` channels open between checks: the only
place a perpetual run's failure and its message appear.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, ClassVar, Final

import anyio
import msgspec
import redis.asyncio as aioredis

from publishers.probes.base import Check, Millis, Seconds, UrlProbeSpec, closing
from publishers.probes.docket_rules import (
    WORKER_GROUP,
    DocketKeys,
    DocketStats,
    LiveLog,
    TaskRules,
    judge_docket,
    judge_task,
)
from publishers.probes.redis_probe import connect, ping
from publishers.probes.result import ProbeResult

__all__ = ["DocketProbe"]

log = logging.getLogger("healthbus.probes")

#: A task key becomes part of a service name.
TASK_KEY: Final = re.compile(r"[A-Za-z0-9_.:-]+")
Count = Annotated[int, msgspec.Meta(ge=0)] | None
Factor = Annotated[float, msgspec.Meta(gt=0)]
#: Seconds between attempts to subscribe again after the live subscription broke.
RESUBSCRIBE_S: Final = 1.0


class DocketProbe(UrlProbeSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Redis latency limits (50/500 ms, 3 s timeout, every 15 s): it is one Redis's keys."""

    type: ClassVar[str] = "docket"
    ordered: ClassVar[tuple[tuple[str, str], ...]] = (
        ("degraded_ms", "error_ms"),
        ("waiting_degraded", "waiting_error"),
        ("overdue_degraded", "overdue_error"),
        ("degraded_after", "error_after"),
    )
    url: Annotated[str, msgspec.Meta(pattern=r"^(redis|rediss|unix)://")]
    #: The docket's name: its keys' prefix (pydocket's default is `docket`).
    docket: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "docket"
    #: Perpetual tasks by key (an automatic Perpetual's key is its function's name) and
    #: their period in seconds (`Perpetual(every=...)`).
    tasks: dict[str, Seconds] = msgspec.field(default_factory=dict)
    #: Listen to the tasks' state channels between checks (failures and their messages).
    live: bool = True
    #: Multiples of a task's period by which it may be late (or run long) before it is
    #: degraded, and in error.
    degraded_after: Factor = 2.0
    error_after: Factor = 5.0
    #: A worker is alive while its last heartbeat is younger than this: pydocket's
    #: heartbeat_interval times missed_heartbeats (2 s and 5 by default).
    worker_timeout: Seconds = 10.0
    workers_min: Annotated[int, msgspec.Meta(ge=0)] = 1
    #: Due tasks waiting in the stream for a free worker slot.
    waiting_degraded: Count = 1_000
    waiting_error: Count = 10_000
    #: Due tasks still in the queue: no worker is moving them to the stream.
    overdue_degraded: Count = 1_000
    overdue_error: Count = 10_000
    interval: Seconds = 15.0
    timeout: Seconds = 3.0
    degraded_ms: Millis | None = 50.0
    error_ms: Millis | None = 500.0

    @property
    def keys(self) -> DocketKeys:
        return DocketKeys(self.docket)

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        for key in self.tasks:
            if not TASK_KEY.fullmatch(key):
                yield (
                    "tasks",
                    (
                        f"task key {key!r} is part of the service name {self.name}.{key}: "
                        "rename the task to letters, digits and _ . : - only"
                    ),
                )
            elif len(f"{self.name}.{key}") > 128:
                yield "tasks", f"{self.name}.{key} is longer than 128 characters: shorten the name"

    async def check(self) -> ProbeResult:
        return await self._check(None)

    @asynccontextmanager
    async def checking(self) -> AsyncIterator[Check]:
        if not (self.live and self.tasks):
            yield self.check
            return
        heard = LiveLog()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._listen, heard)
            yield partial(self._check, heard)
            tg.cancel_scope.cancel()

    async def _check(self, heard: LiveLog | None) -> ProbeResult:
        client = connect(self.url)
        async with closing(client.aclose):
            _, ping_ms = await ping(client)
            stats, runs, able = await self._read(client)
        result = judge_docket(
            stats,
            ping_ms,
            latency=(self.degraded_ms, self.error_ms),
            workers_min=self.workers_min,
            waiting=(self.waiting_degraded, self.waiting_error),
            overdue=(self.overdue_degraded, self.overdue_error),
        )
        rules = TaskRules(self.degraded_after, self.error_after)
        parts = {
            key: judge_task(
                key,
                every,
                run,
                now=stats.now,
                rules=rules,
                able=count,
                ended=heard.ended.get(key) if heard else None,
            )
            for (key, every), run, count in zip(self.tasks.items(), runs, able, strict=True)
        }
        details = {"docket": self.docket, **result.details, "live": heard is not None}
        return msgspec.structs.replace(result, details=details, parts=parts)

    async def _read(
        self, client: aioredis.Redis
    ) -> tuple[DocketStats, list[dict[str, str]], list[int | None]]:
        """The docket's numbers, each task's runs record, and the live workers that have each
        task registered (None: unreadable), by the Redis server's clock."""
        keys = self.keys
        seconds, micros = await client.time()
        now = seconds + micros / 1e6
        alive_since = now - self.worker_timeout
        pipe = client.pipeline(transaction=False)
        pipe.xlen(keys.stream)
        pipe.xpending(keys.stream, WORKER_GROUP)
        pipe.zcard(keys.queue)
        pipe.zcount(keys.queue, "-inf", now)
        pipe.zcount(keys.workers, alive_since, "+inf")
        pipe.zrevrange(keys.workers, 0, 0, withscores=True)
        for key in self.tasks:
            pipe.hgetall(keys.runs(key))
        replies = await pipe.execute(raise_on_error=False)
        length, pending, queued, overdue, alive, last = replies[:6]
        for reply in (length, queued, overdue, alive):
            if isinstance(reply, Exception):
                raise reply
        runs = [_text_map(reply) for reply in replies[6:]]
        pipe = client.pipeline(transaction=False)
        for key, run in zip(self.tasks, runs, strict=True):  # by function: a key may differ
            pipe.zcount(keys.task_workers(run.get("function", key)), alive_since, "+inf")
        able = await pipe.execute(raise_on_error=False) if runs else []
        stats = DocketStats(
            now=now,
            stream_length=length,
            pending=_pending(pending),
            queue_length=queued,
            overdue=overdue,
            workers_alive=alive,
            last_worker_seen=last[0][1] if isinstance(last, list) and last else None,
        )
        return stats, runs, [n if isinstance(n, int) else None for n in able]

    async def _listen(self, heard: LiveLog) -> None:
        """Fold every event of the tasks' state channels into `heard`, subscribing again
        (after RESUBSCRIBE_S) whenever Redis goes away, until cancelled."""
        channels = [self.keys.state(key) for key in self.tasks]
        while True:
            client = aioredis.Redis.from_url(self.url, client_name="healthbus-probe-live")
            try:
                async with closing(client.aclose), client.pubsub() as pubsub:
                    await pubsub.subscribe(*channels)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            heard.record(message["data"])
            except Exception as exc:  # never into the runner: the checks go on without it
                log.warning("probe %s: live subscription lost (%s); retrying", self.name, exc)
            await anyio.sleep(RESUBSCRIBE_S)


def _pending(reply: object) -> int:
    """XPENDING's count; a stream or group not created yet has none."""
    if isinstance(reply, Mapping) and isinstance(reply.get("pending"), int):
        return int(reply["pending"])
    return 0


def _text_map(reply: object) -> dict[str, str]:
    """An HGETALL reply as text; a missing hash (or an error reading it) as empty."""
    if not isinstance(reply, Mapping):
        return {}
    return {_text(k): _text(v) for k, v in reply.items()}


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
