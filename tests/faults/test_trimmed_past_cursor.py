"""The heartbeats stream trimmed past the aggregator's cursor while it was stalled.

The aggregator is stopped (SIGSTOP) while services heartbeat every 0.2 s (promising 1 s);
then everything but the newest entries is trimmed (`XTRIM MINID`), so the entries after its
cursor are gone unread, and it is resumed. It must see the gap, say so (a log line and
`_meta.blind_ms`), count the trimmed span as blind rather than as the services' silence, and
go on from what the stream holds: no service reported down.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

from healthbus.config import Config
from healthbus.schema import Transition
from tests.faults.conftest import Figures, Processes, theirs
from tests.ground_truth import caught_up, heartbeat, meta
from tests.support import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.fault]

SERVICES = 20
STALL_S = 4.0  # 4 promised intervals: degraded at 2, so the gap must not count as silence
MAX_HEARTBEATS = 20_000


async def publish(redis: aioredis.Redis, config: Config, stop: anyio.Event) -> None:
    for n in range(MAX_HEARTBEATS):
        if stop.is_set():
            return
        await redis.xadd(config.keys.heartbeats, heartbeat(f"svc{n % SERVICES}", interval_s=1))
        if n % SERVICES == SERVICES - 1:
            await anyio.sleep(0.2)


async def test_a_gap_in_the_stream_is_blind_time_not_silence(
    redis: aioredis.Redis, config: Config, processes: Processes, figures: Figures
) -> None:
    agg = processes.start("aggregator", "aggregator", "--name", "agg")
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(publish, redis, config, stop)
        before = await wait_until(lambda: _with(redis, config, SERVICES), timeout=20)
        await anyio.sleep(1.5)
        agg.send_signal(signal.SIGSTOP)
        stalled = await meta(redis, config)
        assert stalled is not None
        await anyio.sleep(STALL_S)
        newest = (await redis.xrevrange(config.keys.heartbeats, count=1))[0][0].decode()
        trim_to = f"{int(newest.split('-')[0]) - 200}-0"
        trimmed = int(await redis.xtrim(config.keys.heartbeats, minid=trim_to))
        first = (await redis.xrange(config.keys.heartbeats, count=1))[0][0].decode()
        assert _key(first) > _key(stalled.as_of)  # the cursor's successors are gone
        agg.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        await wait_until(lambda: _logged(processes, "trimmed before they were read"), timeout=10)
        detected_s = time.monotonic() - resumed
        await anyio.sleep(2)
        stop.set()
    last = (await redis.xrevrange(config.keys.heartbeats, count=1))[0][0].decode()
    await wait_until(lambda: caught_up(redis, config, last), timeout=20)
    after = await meta(redis, config)
    assert after is not None
    gap_ms = int(first.split("-")[0]) - int(stalled.as_of.split("-")[0])
    # The services' own transitions (the bus's own service may report the gap: its job).
    events = [t.event for t in await _transitions(redis, config) if theirs(t.service)]
    assert set(events) == {"healthbus.service.appeared"}, events
    views = await redis.hgetall(config.keys.snapshot)
    statuses = [msgspec.json.decode(v)["status"] for k, v in views.items() if theirs(k.decode())]
    assert statuses == ["healthy"] * SERVICES
    assert after.blind_ms - before.blind_ms >= gap_ms * 0.9
    assert after.gaps == before.gaps + 1, processes.log("aggregator")
    assert agg.poll() is None
    figures.update(
        services=SERVICES,
        stalled_s=STALL_S,
        entries_trimmed_unread=trimmed,
        gap_ms=gap_ms,
        blind_ms_granted=after.blind_ms - before.blind_ms,
        detected_after_resume_s=round(detected_s, 2),
    )


async def _with(redis: aioredis.Redis, config: Config, n: int) -> Any:
    m = await meta(redis, config)
    return m if m is not None and m.services >= n else None


async def _transitions(redis: aioredis.Redis, config: Config) -> list[Transition]:
    rows: Any = await redis.xrange(config.keys.transitions)
    return [msgspec.json.decode(f[b"m"], type=Transition) for _, f in rows]


async def _logged(processes: Processes, needle: str) -> bool:
    return needle in processes.log("aggregator")


def _key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)
