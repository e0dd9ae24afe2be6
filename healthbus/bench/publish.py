"""publish: what `Publisher.publish()` costs its caller, with Redis up and with it down.

Each call is timed on its own (the cost of reading the clock, measured first, is taken
off), paced at about 100k calls a second so the sender thread drains as it would in a busy
service. With Redis down the publisher points at a loopback port nothing listens on: a call
that waited on Redis would take the socket timeout (2 s); the target says none does.
"""

from __future__ import annotations

import logging
import time

from healthbus.bench.context import Bench
from healthbus.bench.report import Figure, percentile
from healthbus.embedded import free_port

__all__ = ["run"]

TARGET_P50_US = 2.0
#: Far below the sender's 2 s socket timeout, far above a GIL hand-over (5 ms).
NEVER_BLOCKS_MS = 50.0
BURST = 100
PAUSE_S = 0.001


def run(bench: Bench) -> list[Figure]:
    calls = bench.size(100_000, 500_000, least=1000)
    figures: list[Figure] = []
    for label, url in (("up", bench.redis_url), ("down", f"redis://127.0.0.1:{free_port()}/0")):
        bench.progress(f"publish: {calls:,} calls with Redis {label}")
        times = _time_calls(url, bench.namespace("publish"), calls, outage=label == "down")
        p50, p99, worst = (percentile(times, q) for q in (50, 99, 100))
        figures.append(Figure.check(f"publish: p50, Redis {label}", p50, "µs", "<=", TARGET_P50_US))
        figures.append(Figure(name=f"publish: p99, Redis {label}", value=p99, unit="µs"))
        figures.append(
            Figure.check(
                f"publish: slowest call, Redis {label}",
                worst / 1000,
                "ms",
                "<=",
                NEVER_BLOCKS_MS,
                note="never waits on Redis (socket timeout 2 s)",
            )
        )
    return figures


def _time_calls(url: str, namespace: str, calls: int, *, outage: bool) -> list[float]:
    """Each call's time (µs). With `outage`, the publisher's warning that it lost Redis is
    held back: the outage is the scenario, not news for whoever reads the tables."""
    from publishers import Publisher

    publisher_log = logging.getLogger("healthbus.publisher")
    level = publisher_log.level
    if outage:
        publisher_log.setLevel(logging.ERROR)
    clock = time.perf_counter_ns
    overhead = min(-clock() + clock() for _ in range(1000))
    times: list[float] = []
    record = times.append
    try:
        with Publisher(url, namespace, instance="bench") as publisher:
            publish = publisher.publish
            publish("bench-publish", interval_s=1.0)  # the first sight checks the name, once
            for _ in range(calls // BURST):
                for _ in range(BURST):
                    start = clock()
                    publish("bench-publish", interval_s=1.0, duration_ms=3.2)
                    record((clock() - start - overhead) / 1000)
                time.sleep(PAUSE_S)
            publisher.close(timeout=0.5)
    finally:
        publisher_log.setLevel(level)
    return times
