"""healthbus through Redis Sentinel: a master, a replica and a sentinel on loopback ports.

Selected by the URL alone (`redis+sentinel://host:port/mymaster/0`). The end-to-end contract
test runs unchanged before and after a `SENTINEL FAILOVER`; in between, a failover under load
measures the loss window: heartbeats a bounded publisher loop sent, against those the new
master's stream holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from redis import Redis as SyncRedis

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.connection import MASTER_CHECK_S, AsyncClient
from healthbus.schema import Heartbeat
from healthbus.web.app import create_app
from publishers import Publisher
from tests import redis_topologies
from tests.ground_truth import assert_matches_pure_fold, caught_up, heartbeat, meta
from tests.integration.test_web_http import test_end_to_end_a_heartbeat_reaches_the_stream
from tests.redis_topologies import LocalSentinel
from tests.support import wait_until
from tests.webserver import RawEvent, SSEReader, open_stream, serve

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.fault]

#: The publisher loop: one heartbeat every PERIOD_S, at most LOAD of them.
LOAD = 1000
PERIOD_S = 0.005
#: The bound on the measured loss window: Sentinel names the promoted replica about a second
#: after promoting it (its INFO period during a failover), every writer follows within one
#: MASTER_CHECK_S, and a second of slack for a busy machine. Without following, the window
#: lasts until Sentinel demotes the old master, about ten seconds.
LOSS_WINDOW_BOUND_S = 1.0 + MASTER_CHECK_S + 1.0


@pytest.fixture(scope="module")
def topology() -> Iterator[LocalSentinel]:
    """One master, one replica, one sentinel for the module, failed over on the way."""
    with LocalSentinel(replicas=1, sentinels=1) as group:
        yield group


# `config` and `redis` on this module's topology, for its tests and the imported one.
config = redis_topologies.config
redis = redis_topologies.redis


def publish_load(url: str, namespace: str, sent_at: dict[int, float]) -> Publisher:
    """Heartbeats numbered k = 0 … LOAD-1 through a real Publisher, paced; a few services flip
    between ok and failing so that transitions flow too. Returns the closed publisher."""
    publisher = Publisher(url, namespace, flush_interval_s=PERIOD_S)
    try:
        for k in range(LOAD):
            service = f"svc{k % 5}"
            fail = (k // 5) % 4 == 3
            publisher.publish(service, interval_s=3600, ok=not fail, details={"k": k})
            sent_at[k] = time.monotonic()
            time.sleep(PERIOD_S)
    finally:
        publisher.close(timeout=10, goodbye=False)
    return publisher


@asynccontextmanager
async def sse_events(url: str) -> AsyncIterator[list[RawEvent]]:
    """The events of one SSE client, read as they come, for the duration of the block."""
    events: list[RawEvent] = []

    async def read(sse: SSEReader) -> None:
        while True:
            events.append(await sse.next(timeout=60))

    async with httpx.AsyncClient(timeout=30) as http, open_stream(http, url) as sse:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read, sse)
            yield events
            tg.cancel_scope.cancel()


async def test_failover_under_load_loses_only_a_short_measured_window(
    topology: LocalSentinel, aggregator: Aggregator, redis: AsyncClient, config: Config
) -> None:
    assert config.redis_url
    old_port = topology.master_port()
    sent_at: dict[int, float] = {}
    done: list[Publisher] = []
    loader = threading.Thread(
        target=lambda: done.append(publish_load(config.redis_url or "", config.namespace, sent_at))
    )
    with serve(create_app(config)) as url:
        async with sse_events(url) as events:
            loader.start()
            try:
                await wait_until(lambda: _true(len(sent_at) > LOAD // 4), timeout=20)
                requested_at = time.monotonic()
                new_port = await anyio.to_thread.run_sync(topology.failover)
                named_at = time.monotonic()
            finally:
                await anyio.to_thread.run_sync(loader.join, 60)
            # The web worker's hub followed the new master too: a change made there now
            # reaches a client that stayed connected, long before Sentinel demotes the old one.
            await redis.xadd(config.keys.heartbeats, heartbeat("after", ok=False, error="x"))
            await wait_until(lambda: _true(_has_transition(events, "after")), timeout=5)
    assert new_port != old_port and done, "the failover or the publisher loop did not finish"
    publisher = done[0]

    # What the new master holds is what survived; everything else was lost in the failover.
    with SyncRedis(port=new_port) as master:
        rows: Any = master.xrange(config.keys.heartbeats)
    found = {_number(fields) for _, fields in rows} - {None}
    lost = sorted(set(range(LOAD)) - found)
    window = (sent_at[lost[-1]] - sent_at[lost[0]]) if lost else 0.0
    print(
        f"\nfailover under load: {len(lost)} of {LOAD} heartbeats lost, a window of "
        f"{window * 1000:.0f} ms around the promotion (publisher: {publisher.stats})"
    )
    assert window <= LOSS_WINDOW_BOUND_S, f"lost {len(lost)} heartbeats over {window:.2f} s"
    follow_by = named_at + MASTER_CHECK_S + 1.0
    assert all(requested_at <= sent_at[k] <= follow_by for k in lost), "a loss off the failover"

    # The aggregator followed the new master and folded exactly what it holds.
    with SyncRedis(port=new_port) as master:
        last = master.xrevrange(config.keys.heartbeats, count=1)[0][0].decode()
    await wait_until(lambda: caught_up(redis, config, last), timeout=30)
    m = await meta(redis, config)
    assert m is not None and m.leader == aggregator.name
    await assert_matches_pure_fold(redis, config)


def _has_transition(events: list[RawEvent], service: str) -> bool:
    return any(e.event == "transition" and e.json()["service"] == service for e in events)


def _number(fields: dict[bytes, bytes]) -> int | None:
    hb = msgspec.json.decode(fields[b"m"], type=Heartbeat)
    k = (hb.details or {}).get("k")
    return k if isinstance(k, int) else None


async def _true(value: bool) -> bool:
    return value


# The contract test again, now against the master Sentinel promoted.
test_end_to_end_after_a_failover = test_end_to_end_a_heartbeat_reaches_the_stream
