"""healthbus on a real 3-master Redis Cluster (`redis-cli --cluster create`, loopback ports).

Selected by the URL alone (`redis+cluster://seed,seed`). The end-to-end contract test runs
here unchanged: only the `config` and `redis` fixtures differ. Each namespace lives in one
hash slot (its keys' `{ns}` tag), so namespaces spread fleets over the masters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import msgspec
import pytest
from redis import Redis as SyncRedis
from redis.crc import key_slot

from aggregator import Aggregator
from healthbus.client import HealthBus
from healthbus.config import Config
from healthbus.connection import AsyncClient, connect
from healthbus.keys import Keys
from healthbus.schema import Heartbeat
from publishers import Publisher, publish_once
from tests import redis_topologies
from tests.ground_truth import assert_matches_pure_fold, caught_up, heartbeat
from tests.integration.test_web_http import (  # noqa: F401  (the contract test, unchanged)
    test_end_to_end_a_heartbeat_reaches_the_stream,
)
from tests.redis_topologies import LocalCluster
from tests.support import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def topology() -> Iterator[LocalCluster]:
    """One cluster for the module; each test has a namespace of its own."""
    with LocalCluster(masters=3) as cluster:
        yield cluster


# `config` and `redis` on this module's topology, for its tests and the imported one.
config = redis_topologies.config
redis = redis_topologies.redis


def all_keys(keys: Keys) -> list[str]:
    return [getattr(keys, name) for name in Keys.__slots__ if name not in ("namespace", "prefix")]


async def test_publisher_aggregator_and_client_work_on_a_cluster(
    aggregator: Aggregator, config: Config
) -> None:
    assert config.redis_url
    publisher = Publisher(config.redis_url, config.namespace)
    publisher.publish("api", interval_s=60)
    publisher.publish("api", interval_s=60, ok=False, error="database unreachable")
    publisher.close(goodbye=False)
    assert publisher.stats.sent == 2, publisher.stats
    entry = publish_once(
        config.redis_url,
        config.namespace,
        Heartbeat(v=1, service="cron", interval_s=3600, ok=True),
    )
    assert entry
    async with HealthBus(config.redis_url, config.namespace) as bus:

        async def settled() -> Any:
            snap = await bus.snapshot()
            views = snap.services
            return (
                snap if {"api", "cron"} <= set(views) and views["api"].status == "error" else None
            )

        snap = await wait_until(settled, timeout=10)
        assert snap.meta is not None and snap.meta.leader == aggregator.name
        events: list[str] = []
        with anyio.fail_after(10):
            async for t in bus.transitions(group="pager", start="0"):
                events.append(f"{t.service}:{t.to}")
                if len(events) == 3:
                    break
    assert events == ["api:healthy", "api:error", "cron:healthy"]


async def test_each_namespace_is_one_slot_and_namespaces_spread_over_masters(
    topology: LocalCluster, namespace: str
) -> None:
    """Two fleets on two masters, one aggregator each, both folding."""
    fleets: dict[int, Keys] = {}
    for i in range(100):
        keys = Keys(f"{namespace}-{i}")
        fleets.setdefault(topology.node_of(keys.heartbeats).port, keys)
        if len(fleets) == 2:
            break
    assert len(fleets) == 2
    for keys in fleets.values():
        assert len({key_slot(k.encode()) for k in all_keys(keys)}) == 1
    configs = [Config(redis_url=topology.url, namespace=k.namespace) for k in fleets.values()]
    async with anyio.create_task_group() as tg:
        for cfg in configs:
            tg.start_soon(Aggregator(cfg).run)
        client = connect(topology.url)
        try:
            for keys in fleets.values():
                await client.xadd(keys.heartbeats, heartbeat(f"svc-of-{keys.namespace}"))
            for keys in fleets.values():
                name = f"svc-of-{keys.namespace}"
                await wait_until(lambda k=keys, n=name: client.hget(k.snapshot, n), timeout=10)
        finally:
            await client.aclose()
        tg.cancel_scope.cancel()
    # Every key of a fleet is on its own master, and none on the other's.
    for port, keys in fleets.items():
        other = next(k for p, k in fleets.items() if p != port)
        with SyncRedis(port=port) as node:
            assert node.exists(keys.snapshot, keys.state, keys.heartbeats, keys.updates) == 4
            slot = key_slot(other.snapshot.encode())
            assert node.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0


#: The publisher loop of the resharding test: bounded in count, paced.
LOAD = 600
PERIOD_S = 0.005


def publish_load(url: str, namespace: str, progress: list[int]) -> Publisher:
    """Heartbeats numbered k, a few services flipping between ok and failing."""
    publisher = Publisher(url, namespace, flush_interval_s=PERIOD_S)
    try:
        for k in range(LOAD):
            fail = (k // 5) % 4 == 3
            publisher.publish(f"svc{k % 5}", interval_s=3600, ok=not fail, details={"k": k})
            progress.append(k)
            time.sleep(PERIOD_S)
    finally:
        publisher.close(timeout=20, goodbye=False)
    return publisher


async def test_resharding_a_namespace_under_load_loses_nothing(
    topology: LocalCluster, aggregator: Aggregator, redis: AsyncClient, config: Config
) -> None:
    """The namespace's slot moves to another master mid-load: MOVED, ASK and TRYAGAIN replies
    send the publisher and the aggregator after it, and no heartbeat or transition is lost."""
    assert config.redis_url
    source = topology.node_of(config.keys.heartbeats)
    target = next(n for n in topology.nodes if n is not source)
    progress: list[int] = []
    done: list[Publisher] = []
    url, namespace = config.redis_url, config.namespace
    loader = threading.Thread(target=lambda: done.append(publish_load(url, namespace, progress)))
    loader.start()
    try:
        await wait_until(lambda: _true(len(progress) > LOAD // 3), timeout=20)
        await anyio.to_thread.run_sync(topology.move_slot, config.keys.heartbeats, target)
    finally:
        await anyio.to_thread.run_sync(loader.join, 60)
    assert topology.node_of(config.keys.heartbeats) is target
    assert done and done[0].stats.dropped == 0, done and done[0].stats
    rows: Any = await redis.xrange(config.keys.heartbeats)
    numbers = {msgspec.json.decode(f[b"m"]).get("details", {}).get("k") for _, f in rows}
    assert set(range(LOAD)) <= numbers, f"lost: {sorted(set(range(LOAD)) - numbers)[:20]}"
    await wait_until(lambda: caught_up(redis, config, rows[-1][0].decode()), timeout=30)
    await assert_matches_pure_fold(redis, config)


async def _true(value: bool) -> bool:
    return value
