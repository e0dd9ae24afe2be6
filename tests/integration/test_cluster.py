"""healthbus on a real 3-master Redis Cluster (`redis-cli --cluster create`, loopback ports).

Selected by the URL alone (`redis+cluster://seed,seed`). The end-to-end contract test runs
here unchanged: only the `config` and `redis` fixtures differ. Each namespace lives in one
hash slot (its keys' `{ns}` tag), so namespaces spread fleets over the masters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
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
from tests.ground_truth import heartbeat
from tests.integration.test_web_http import (  # noqa: F401  (the contract test, unchanged)
    test_end_to_end_a_heartbeat_reaches_the_stream,
)
from tests.redis_topologies import LocalCluster
from tests.support import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(masters=3) as running:
        yield running


@pytest.fixture
def config(cluster: LocalCluster, namespace: str) -> Config:
    return Config(redis_url=cluster.url, namespace=namespace)


@pytest.fixture
async def redis(config: Config) -> AsyncIterator[AsyncClient]:
    assert config.redis_url
    cluster_client = connect(config.redis_url)
    yield cluster_client
    await cluster_client.aclose()


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
    cluster: LocalCluster, namespace: str
) -> None:
    """Two fleets on two masters, one aggregator each, both folding."""
    fleets: dict[int, Keys] = {}
    for i in range(100):
        keys = Keys(f"{namespace}-{i}")
        fleets.setdefault(cluster.node_of(keys.heartbeats).port, keys)
        if len(fleets) == 2:
            break
    assert len(fleets) == 2
    for keys in fleets.values():
        assert len({key_slot(k.encode()) for k in all_keys(keys)}) == 1
    configs = [Config(redis_url=cluster.url, namespace=k.namespace) for k in fleets.values()]
    async with anyio.create_task_group() as tg:
        for cfg in configs:
            tg.start_soon(Aggregator(cfg).run)
        client = connect(cluster.url)
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
