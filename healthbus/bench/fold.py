"""fold: the aggregator's sustained throughput, real commits included, at 1k, 10k and 100k
services; and its ratio to the ceiling, measured around each drain: one `redis-benchmark`
round right before it and one right after, against the same Redis. This VM's speed moves
within minutes (ceiling rounds of one run have differed 2.4-fold), so a ceiling measured
once at the start could make a ratio pass or fail by the VM's mood alone.

Each service is seen once first (so the measure is the steady state, not first sightings),
then a backlog of heartbeats round-robin over all services is drained by a real
`Aggregator` in this process: XREAD from the committed cursor, decode, fold, and commits of
snapshot, state, updates and cursor. Throughput is the measured backlog over the time from
the first commit past the warm-up to the commit of the last entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import redis

from healthbus.bench.context import Bench, drop_namespace
from healthbus.bench.payload import preload
from healthbus.bench.report import Figure
from healthbus.config import Config
from healthbus.schema import parse_stream_id

__all__ = ["SERVICES", "TARGET_RATIO", "fold_name", "run", "throughput"]

TARGET_RATIO = 0.4
SERVICES = (1_000, 10_000, 100_000)
POLL_S = 0.005


def fold_name(services: int) -> str:
    size = f"{services // 1000}k" if services % 1000 == 0 else f"{services:,}"
    return f"fold: {size} services"


def run(bench: Bench) -> list[Figure]:
    from healthbus.bench.ceiling import round_size, xadd_rate

    probe = round_size(bench)
    figures: list[Figure] = []
    for full in SERVICES:
        services = bench.size(full, full, least=10)
        measured = bench.size(max(50_000, full // 2), max(300_000, 3 * full), least=1000)
        bench.progress(f"fold: {services:,} services, the ceiling before it ({probe:,} XADDs)")
        before = xadd_rate(bench, probe)
        rate = throughput(bench, services, measured)
        bench.progress(f"fold: {services:,} services, the ceiling after it")
        after = xadd_rate(bench, probe)
        figures.append(
            Figure(
                name=fold_name(services),
                value=rate,
                unit="heartbeats/s",
                note=f"{measured:,} heartbeats after a warm-up of {services:,}",
            )
        )
        figures.append(
            Figure.check(
                f"{fold_name(services)} / ceiling",
                rate / ((before + after) / 2),
                "ratio",
                ">=",
                TARGET_RATIO,
                note=f"ceiling {before:,.0f} XADD/s before, {after:,.0f} after",
            )
        )
    return figures


def throughput(bench: Bench, services: int, measured: int) -> float:
    """Heartbeats per second the aggregator folds and commits with `services` services."""
    config = Config(redis_url=bench.redis_url, namespace=bench.namespace("fold"))
    keys = config.keys
    with redis.Redis.from_url(bench.redis_url) as client:
        bench.progress(f"fold: {services:,} services, preloading {services + measured:,}")
        warm = preload(client, keys.heartbeats, services, services)
        last = preload(client, keys.heartbeats, measured, services, first=services)
        try:
            bench.progress(f"fold: {services:,} services, draining {measured:,} heartbeats")
            seconds = anyio.run(_drain, config, warm, last)
        finally:
            drop_namespace(client, keys)
    return measured / seconds


async def _drain(config: Config, warm: str, last: str) -> float:
    from aggregator import Aggregator

    agg = Aggregator(config, name="bench")
    warm_pair, last_pair = _pair(warm), _pair(last)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agg.run)
        await _until(lambda: _pair(agg.cursor) >= warm_pair)
        start = time.perf_counter()
        await _until(lambda: _pair(agg.cursor) >= last_pair)
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    return elapsed


async def _until(done: Callable[[], bool], within: float = 600) -> None:
    """Poll `done` (an attribute read, no I/O) until it is true; fail after `within` s."""
    with anyio.fail_after(within):
        for _ in range(int(within / POLL_S) + 1):
            if done():
                return
            await anyio.sleep(POLL_S)


def _pair(stream_id: str) -> tuple[int, int]:
    return parse_stream_id(stream_id) or (0, 0)
