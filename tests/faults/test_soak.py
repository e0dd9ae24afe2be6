"""Soak: mixed load with churning SSE clients must reach a plateau, not a slope.

A `healthbus aggregator` and a `healthbus web` serve 100 services heartbeating 500 times a
second (some failing in turn, so transitions flow), ten SSE clients that connect, read a few
events and leave, over and over, and an `/api/health` poller. Once a second: the RSS and open
descriptors of both processes, Redis's memory and connected clients. The readings at the end
may not exceed those after the warm-up (the first 30 %) by more than a small bound.

`HEALTHBUS_SOAK_S` sets the duration (default 24 s, what CI runs; 600 for the ten-minute soak
RELIABILITY.md quotes). The streams' retention is shortened so that they, too, plateau
within the short run.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

from healthbus.config import Config
from publishers import Publisher
from tests.faults.conftest import Figures, Processes, open_fds, rss_kib
from tests.support import wait_until
from tests.webserver import open_stream

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.fault]

SOAK_S = float(os.environ.get("HEALTHBUS_SOAK_S", "24"))
RATE = 500
SERVICES = 100
SSE_CLIENTS = 10
RETENTION = {
    "HEALTHBUS_REPLAY_WINDOW_S": "5",
    "HEALTHBUS_UPDATES_RETENTION_S": "5",
    "HEALTHBUS_TRANSITIONS_MAXLEN": "2000",
}


@dataclass
class Sample:
    at: float
    values: dict[str, int] = field(default_factory=dict)


def publish(publisher: Publisher, stop: threading.Event, seconds: float) -> None:
    start = time.perf_counter()
    for i in range(int(RATE * seconds)):
        if stop.is_set():
            return
        svc = i % SERVICES
        fail = (i // 2000) % SERVICES == svc  # each service fails in turn for a while
        publisher.publish(f"svc{svc}", interval_s=5, ok=not fail, error="boom" if fail else None)
        if i % 50 == 49:
            time.sleep(max(0.0, start + (i + 1) / RATE - time.perf_counter()))


async def test_mixed_load_reaches_a_plateau(
    redis: aioredis.Redis, config: Config, processes: Processes, figures: Figures
) -> None:
    agg = processes.start("aggregator", "aggregator", env=RETENTION)
    url, web_pid = processes.web(env=RETENTION)
    publisher = Publisher(config.redis_url or "", config.namespace, instance="soak")
    stop = threading.Event()
    thread = threading.Thread(target=publish, args=(publisher, stop, SOAK_S + 5), daemon=True)
    samples: list[Sample] = []
    connects = 0
    deadline = time.monotonic() + SOAK_S

    async def churn(client: httpx.AsyncClient) -> None:
        nonlocal connects
        while time.monotonic() < deadline:
            async with open_stream(client, url) as sse:
                connects += 1
                for _ in range(3):
                    await sse.next(timeout=10)

    async def poll(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            assert (await client.get(url + "/api/health", params={"limit": 10})).status_code == 200
            await anyio.sleep(0.5)

    async def sample() -> None:
        while time.monotonic() < deadline:
            info = await redis.info()
            samples.append(
                Sample(
                    time.monotonic(),
                    {
                        "aggregator_rss_kib": rss_kib(agg.pid),
                        "aggregator_fds": open_fds(agg.pid),
                        "web_rss_kib": rss_kib(web_pid),
                        "web_fds": open_fds(web_pid),
                        "redis_used_memory": int(info["used_memory"]),
                        "redis_clients": int(info["connected_clients"]),
                    },
                )
            )
            await anyio.sleep(1)

    thread.start()
    try:
        await wait_until(lambda: redis.exists(config.keys.snapshot), timeout=20)
        async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
            for _ in range(SSE_CLIENTS):
                tg.start_soon(churn, client)
            tg.start_soon(poll, client)
            tg.start_soon(sample)
    finally:
        stop.set()
        thread.join(10)
        publisher.close(timeout=2)

    started = samples[0].at
    warm = [s for s in samples if s.at - started >= 0.3 * SOAK_S]
    base, end = warm[0].values, warm[-1].values
    peak = {k: max(s.values[k] for s in warm) for k in base}
    bounds = {
        "aggregator_rss_kib": max(10_240, base["aggregator_rss_kib"] // 5),
        "web_rss_kib": max(10_240, base["web_rss_kib"] // 5),
        "aggregator_fds": 5,
        "web_fds": 5 + SSE_CLIENTS,
        "redis_used_memory": max(8 << 20, base["redis_used_memory"] // 2),
        "redis_clients": 3,
    }
    grown = {k: end[k] - base[k] for k in base}
    over = {k: grown[k] for k in base if grown[k] > bounds[k]}
    assert over == {}, (over, base, end)
    assert connects > SSE_CLIENTS * 5
    figures.update(
        soak_s=SOAK_S,
        heartbeats_per_s=RATE,
        services=SERVICES,
        sse_connects=connects,
        after_warmup=base,
        end=end,
        peak=peak,
        growth=grown,
        sent=publisher.stats.sent,
        dropped=publisher.stats.dropped,
    )
