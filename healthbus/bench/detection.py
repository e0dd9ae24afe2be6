"""detection: from a service's last heartbeat to its `degraded` and `error` transitions,
against the rule (no heartbeat for more than 2x and 5x its interval).

Services promise a heartbeat every second, send a few, and go silent at staggered times.
Both ends are read off the Redis clock: the last heartbeat's entry id, and the id of the
transitions-stream entry the aggregator's commit added. Lateness is that span less the rule.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import msgspec
import redis

from healthbus.bench.context import Bench, drop_namespace
from healthbus.bench.report import Figure, percentile
from healthbus.config import Config
from healthbus.schema import Transition

__all__ = ["run"]

INTERVAL_S = 1.0
TARGET_LATE_MS = 100.0
_transition = msgspec.json.Decoder(Transition)


def run(bench: Bench) -> list[Figure]:
    services = bench.size(10, 40, least=2)
    config = Config(redis_url=bench.redis_url, namespace=bench.namespace("detection"))
    bench.progress(f"detection: {services} services go silent; waiting for degraded and error")
    try:
        last, seen = anyio.run(_observe, config, services)
    finally:
        with redis.Redis.from_url(bench.redis_url) as client:
            drop_namespace(client, config.keys)
    figures: list[Figure] = []
    for to, factor in (("degraded", 2.0), ("error", 5.0)):
        rule_ms = factor * INTERVAL_S * 1000
        late = [seen[(name, to)][1] - at - rule_ms for name, at in last.items()]
        stamp = [seen[(name, to)][0] - at - rule_ms for name, at in last.items()]
        p50, worst = percentile(late, 50), percentile(late, 100)
        note = (
            f"{len(late)} services, interval {INTERVAL_S:g} s: committed "
            f"{(rule_ms + p50) / rule_ms:.3f} x the {factor:g} x rule (p50); stamped "
            f"{max(stamp):+.0f} ms from the rule"
        )
        figures.append(Figure(name=f"detection: {to} after the rule, p50", value=p50, unit="ms"))
        figures.append(
            Figure.check(
                f"detection: {to} after the rule, max", worst, "ms", "<=", TARGET_LATE_MS, note
            )
        )
    return figures


async def _observe(
    config: Config, services: int
) -> tuple[dict[str, int], dict[tuple[str, str], tuple[int, int]]]:
    """Run an aggregator, make the services fall silent; returns each one's last heartbeat
    (ms) and, per (service, status), the transition's stamp and its commit time (ms)."""
    from aggregator import Aggregator
    from healthbus.connection import connect

    keys = config.keys
    client = connect(config.redis_url or "", block_ms=1000)
    agg = Aggregator(config, name="bench-detection")
    last: dict[str, int] = {}
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(agg.run)
        await agg.is_leader.wait()
        names = [f"detect-{i:03d}" for i in range(services)]
        for beat in range(3):
            for name in names:
                hb = msgspec.json.encode(
                    {"v": 1, "service": name, "interval_s": INTERVAL_S, "ok": True}
                )
                entry: Any = await client.xadd(keys.heartbeats, {"m": hb})
                last[name] = int(entry.decode().split("-")[0])
                await anyio.sleep(0.2 / services)
            if beat < 2:
                await anyio.sleep(INTERVAL_S / 2)
        cursor = "0-0"
        deadline = time.monotonic() + 5 * INTERVAL_S + 10
        while len(seen) < 2 * services and time.monotonic() < deadline:
            reply: Any = await client.xread({keys.transitions: cursor}, count=1000, block=1000)
            for raw_id, fields in reply[0][1] if reply else ():
                cursor = raw_id.decode()
                t = _transition.decode(fields[b"m"])
                if t.to in ("degraded", "error") and t.service in last:
                    seen[(t.service, t.to)] = (t.at_ms, int(cursor.split("-")[0]))
        tg.cancel_scope.cancel()
    await client.aclose()
    if len(seen) < 2 * services:
        raise RuntimeError(f"only {len(seen)} of {2 * services} transitions seen")
    return last, seen
