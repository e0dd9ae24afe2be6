"""memory: the aggregator's resident memory per service at 100k services, and what Redis
holds per retained heartbeat.

The aggregator runs as its own process (`python -m healthbus.cli aggregator`), so its RSS is
its own: measured once it leads with nothing to fold, and again once every service has sent
ROUNDS heartbeats (the steady state a running fleet is in, not just first sightings; two
with --quick) and
they are folded and flushed; the difference over the number of services is the cost of one.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from healthbus.bench.context import Bench, drop_namespace, rss_bytes, spawn, wait_for
from healthbus.bench.payload import heartbeat, preload
from healthbus.bench.report import Figure
from healthbus.keys import Keys
from healthbus.schema import decode_meta

__all__ = ["run"]

TARGET_BYTES = 1024
ROUNDS = 3
FLUSH_S = 1.5


def run(bench: Bench) -> list[Figure]:
    services = bench.size(100_000, 100_000, least=100)
    retained = bench.size(50_000, 200_000, least=1000)
    rounds = bench.size(2, ROUNDS, least=2)
    return [_aggregator(bench, services, rounds), _redis_per_heartbeat(bench, retained)]


def _aggregator(bench: Bench, services: int, rounds: int) -> Figure:
    keys = Keys(bench.namespace("memory"))
    args = ["-m", "healthbus.cli", "aggregator", "--redis-url", bench.redis_url]
    args += ["--namespace", keys.namespace, "--name", "bench-memory"]
    with redis.Redis.from_url(bench.redis_url) as client, spawn(args) as process:
        try:
            bench.progress("memory: aggregator process started; waiting for its first commit")
            wait_for(lambda: _meta(client, keys) is not None, process, "its first commit")
            time.sleep(FLUSH_S)
            before = rss_bytes(process.pid)
            bench.progress(f"memory: folding {services:,} services, {rounds} heartbeats each")
            last = preload(client, keys.heartbeats, services * rounds, services)

            def folded() -> bool:
                meta = _meta(client, keys)
                return meta is not None and meta.services >= services and meta.as_of == last

            wait_for(folded, process, f"{services:,} services folded", within=600)
            time.sleep(FLUSH_S)
            after = rss_bytes(process.pid)
        finally:
            drop_namespace(client, keys)
    per = (after - before) / services
    return Figure.check(
        f"memory: aggregator RSS per service at {services:,} services",
        per,
        "bytes",
        "<=",
        TARGET_BYTES,
        note=f"RSS {before / 2**20:.0f} MiB idle, {after / 2**20:.0f} MiB with them "
        f"({rounds} heartbeats each)",
    )


def _redis_per_heartbeat(bench: Bench, count: int) -> Figure:
    keys = Keys(bench.namespace("memory"))
    with redis.Redis.from_url(bench.redis_url) as client:
        before = _used(client)
        bench.progress(f"memory: {count:,} heartbeats retained in Redis")
        preload(client, keys.heartbeats, count, 10_000)
        after = _used(client)
        drop_namespace(client, keys)
    return Figure(
        name="memory: Redis per retained heartbeat",
        value=(after - before) / count,
        unit="bytes",
        note=f"{count:,} entries in the stream, {len(heartbeat(0))} bytes of JSON each",
    )


def _used(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def _meta(client: Any, keys: Keys) -> Any:
    return decode_meta(client.hget(keys.snapshot, "_meta"))
