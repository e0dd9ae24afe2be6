"""latency: a heartbeat that changes a status, to an SSE client, under background load.

The bus runs as deployed (aggregator and web worker in processes of their own) while
`healthbus.bench.load` sends 1k or 10k heartbeats a second for a thousand healthy services.
Probe services, healthy at first, fail one after another (each once, so none is ever
flapping); each failure is a transition, and the delay is from the heartbeat's stream entry
time (Redis clock) to its arrival at a client subscribed with `?kind=probe&changes=status`.
"""

from __future__ import annotations

import random
import time
from typing import Any

import anyio
import msgspec

from healthbus.bench.context import Bench, spawn
from healthbus.bench.report import Figure, percentile
from healthbus.bench.sseclient import connect_many
from healthbus.bench.stack import Stack, running_stack
from healthbus.connection import connect

__all__ = ["run"]

TARGET_P99_MS = 25.0
SERVICES = 1000
PROBE = "latency-probe-{:04d}"
WARM_UP_S = 1.0


def run(bench: Bench) -> list[Figure]:
    samples = bench.size(80, 400, least=5)
    figures: list[Figure] = []
    for rate in (1_000, 10_000):
        bench.progress(f"latency: {samples} status changes under {rate:,} heartbeats/s")
        with running_stack(bench, "latency") as stack:
            load_args = ["-m", "healthbus.bench.load", bench.redis_url, stack.keys.heartbeats]
            load_args += [str(rate), str(SERVICES), str(samples * 0.2 + 30)]
            with spawn(load_args, pipes=True) as load:
                load.line()
                delays, missed = anyio.run(_probe, stack, samples, bench.redis_url)
                load.check("during the measurement")
        label = f"latency: heartbeat to SSE at {rate // 1000}k/s"
        p50, p99, worst = (percentile(delays, q) for q in (50, 99, 100))
        figures.append(Figure(name=f"{label}, p50", value=p50, unit="ms"))
        if rate == 10_000:
            figures.append(Figure.check(f"{label}, p99", p99, "ms", "<=", TARGET_P99_MS))
        else:
            figures.append(Figure(name=f"{label}, p99", value=p99, unit="ms"))
        figures.append(
            Figure(
                name=f"{label}, max",
                value=worst,
                unit="ms",
                note=f"{len(delays)} changes, {missed} not seen within 5 s",
            )
        )
    return figures


async def _probe(stack: Stack, samples: int, redis_url: str) -> tuple[list[float], int]:
    url = f"{stack.base_url}/api/health/stream?kind=probe&changes=status"
    redis = connect(redis_url)
    missed = 0
    try:
        for i in range(samples):  # the probes appear, healthy, before the client listens
            await redis.xadd(stack.keys.heartbeats, {"m": _probe_heartbeat(i, ok=True)})
        await anyio.sleep(WARM_UP_S)
        (client,) = await connect_many(url, 1)
        for i in range(samples):
            before = len(client.delays)
            await redis.xadd(stack.keys.heartbeats, {"m": _probe_heartbeat(i, ok=False)})
            missed += not await _arrival(client, before)
            await anyio.sleep(random.uniform(0.02, 0.08))
        client.close()
    finally:
        await redis.aclose()
    return client.delays, missed


def _probe_heartbeat(i: int, *, ok: bool) -> bytes:
    hb = {"v": 1, "service": PROBE.format(i), "kind": "probe", "interval_s": 60, "ok": ok}
    return msgspec.json.encode(hb)


async def _arrival(client: Any, before: int, within: float = 5.0) -> bool:
    """Wait (bounded) for the client's next transition; False when none came."""
    deadline = time.monotonic() + within
    for _ in range(int(within * 1000)):
        if len(client.delays) > before:
            return True
        if client.closed or time.monotonic() > deadline:
            break
        await anyio.sleep(0.001)
    return False
