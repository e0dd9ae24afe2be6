"""A flood of invalid entries beside valid traffic: every valid heartbeat is still folded,
and every rejection is dead-lettered with its reason and counted in `_meta.invalid`. The
rates with and without the flood are measured side by side in one run (two namespaces, the
same valid entries, one with as many hostile entries interleaved) and reported as figures
(RELIABILITY.md), not asserted: on this shared VM a bound on them only measures its day."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.schema import MESSAGE_MAX_BYTES, encode
from tests.faults.conftest import Figures
from tests.ground_truth import caught_up, heartbeat, meta
from tests.support import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.fault]

VALID = 20_000
SERVICES = 100

HOSTILE: list[dict[str, bytes]] = [
    {"m": b"{not json"},
    {"m": b"[" * 5000},  # nested past the decoder's recursion limit
    {"m": b'{"v":1,"service":"\xc3\x28","interval_s":1,"ok":true}'},  # invalid UTF-8
    {"m": b'{"v":1,"service":"a","interval_s":NaN,"ok":true}'},
    {"m": b'{"v":1,"service":"a","interval_s":1e999,"ok":true}'},
    {"m": encode({"v": 1, "service": "x" * 200, "interval_s": 1, "ok": True})},
    {"m": encode({"v": 1, "service": "big", "interval_s": 1, "ok": True, "hint": "h" * 9000})},
    {"m": b"\x00" * (MESSAGE_MAX_BYTES + 1)},
    {"m": encode({"v": 2, "service": "future", "interval_s": 1, "ok": True})},
    {"m": encode({"v": 1, "service": "typed", "interval_s": "often", "ok": True})},
    {"other": b"no m field"},
    {"m": encode({"v": 1, "service": "_meta", "interval_s": 1, "ok": True})},
]  # fmt: skip


async def fill(redis: aioredis.Redis, config: Config, flood: bool) -> str:
    """VALID heartbeats of SERVICES services; with `flood`, a hostile entry after each."""
    last = b""
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(VALID):
            pipe.xadd(config.keys.heartbeats, heartbeat(f"svc{n % SERVICES}"))
            if flood:
                pipe.xadd(config.keys.heartbeats, HOSTILE[n % len(HOSTILE)])
        ids = await pipe.execute()
    last = ids[-1]
    return str(last.decode())


async def fold_time(config: Config, redis: aioredis.Redis, last: str) -> float:
    agg = Aggregator(config)
    async with anyio.create_task_group() as tg:
        started = time.perf_counter()
        tg.start_soon(agg.run)
        await wait_until(lambda: caught_up(redis, config, last), timeout=60, interval=0.005)
        took = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return took


async def test_a_flood_of_invalid_entries(
    redis: aioredis.Redis, config: Config, figures: Figures
) -> None:
    clean = config
    flooded = config.replace(namespace=config.namespace + "-flood", deadletters_maxlen=2 * VALID)
    clean_last = await fill(redis, clean, flood=False)
    flooded_last = await fill(redis, flooded, flood=True)
    clean_s = await fold_time(clean, redis, clean_last)
    flooded_s = await fold_time(flooded, redis, flooded_last)

    m = await meta(redis, flooded)
    assert m is not None and m.invalid == VALID
    dead: Any = await redis.xrange(flooded.keys.deadletters)
    assert len(dead) == VALID
    assert all(fields[b"reason"] for _, fields in dead)
    reasons = {fields[b"reason"].decode()[:40] for _, fields in dead}
    # The valid traffic got through whole: every service is there and healthy.
    views = await redis.hgetall(flooded.keys.snapshot)
    assert {f"svc{i}".encode() for i in range(SERVICES)} <= set(views)
    # The clean run writes a row per service a second (the flush); the flooded one writes a
    # dead-letters entry per hostile entry, up to 1 KiB.
    clean_rate, flooded_rate = VALID / clean_s, VALID / flooded_s
    figures.update(
        valid=VALID,
        invalid=VALID,
        kinds_of_hostile=len(HOSTILE),
        distinct_reasons=len(reasons),
        clean_valid_per_s=round(clean_rate),
        flooded_valid_per_s=round(flooded_rate),
        ratio=round(flooded_rate / clean_rate, 2),
        dead_lettered=len(dead),
    )
