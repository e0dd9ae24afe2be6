"""`@heartbeat` end to end: decorated runs through real Redis and the aggregator's snapshot,
instances told apart, and a goodbye on SIGTERM from a process configured by environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator

import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.schema import ServiceView, Status, decode_heartbeat
from publishers import Publisher, heartbeat
from tests.support import wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def publisher(config: Config) -> Iterator[Publisher]:
    with Publisher.from_config(config, flush_interval_s=0.01) as p:
        yield p


def view_with(
    redis: aioredis.Redis, config: Config, service: str, status: Status
) -> Callable[[], Awaitable[ServiceView | None]]:
    """A poll for `service` in the snapshot with `status`."""

    async def check() -> ServiceView | None:
        raw = await redis.hget(config.keys.snapshot, service)
        view = msgspec.json.decode(raw, type=ServiceView) if raw else None
        return view if view is not None and view.status == status else None

    return check


async def test_runs_reach_the_snapshot_with_details_and_errors(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config, publisher: Publisher
) -> None:
    @heartbeat(service="nightly_report", interval=60, publisher=publisher)
    async def report(fail: bool = False) -> dict[str, int]:
        if fail:
            raise ConnectionError("smtp://mailer:hunter2@mail refused")
        return {"sent": 12}

    await report()
    healthy = await wait_until(view_with(redis, config, "nightly_report", "healthy"))
    assert healthy.details == {"sent": 12} and healthy.last_duration_ms is not None
    with pytest.raises(ConnectionError):
        await report(fail=True)
    failed = await wait_until(view_with(redis, config, "nightly_report", "error"))
    assert failed.reason == "failed: ConnectionError: smtp://mailer:***@mail refused"


async def test_instances_are_told_apart_and_the_worst_counts(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config, publisher: Publisher
) -> None:
    replicas = [
        heartbeat(service="indexer", interval=60, instance=f"replica-{i}", publisher=publisher)
        for i in (1, 2)
    ]
    for beat in replicas:
        with beat:
            pass
    both = await wait_until(view_with(redis, config, "indexer", "healthy"))
    await wait_until(lambda: _instances(redis, config, "indexer", 2))
    with replicas[1] as it:
        it.fail("index corrupt")
    worst = await wait_until(view_with(redis, config, "indexer", "error"))
    assert both.name == worst.name == "indexer"
    statuses = {i.instance: i.status for i in worst.instances}
    assert statuses == {"replica-1": "healthy", "replica-2": "error"}


async def _instances(redis: aioredis.Redis, config: Config, service: str, n: int) -> bool:
    raw = await redis.hget(config.keys.snapshot, service)
    return raw is not None and len(msgspec.json.decode(raw, type=ServiceView).instances) == n


def test_sigterm_says_goodbye_for_the_environment_configured_default(config: Config) -> None:
    assert config.redis_url
    script = """
        import time
        from publishers import heartbeat, install_signal_handlers

        install_signal_handlers()

        @heartbeat(service="ticker", interval=5)
        def tick() -> dict[str, int]:
            return {"n": 1}

        tick()
        print("ready", flush=True)
        time.sleep(60)
    """
    env = {
        **os.environ,
        "HEALTHBUS_REDIS_URL": config.redis_url,
        "HEALTHBUS_NAMESPACE": config.namespace,
        "HEALTHBUS_INSTANCE": "worker-7",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.stdout.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    with redis.Redis.from_url(config.redis_url) as client:
        entries = client.xrange(config.keys.heartbeats)
    beats = [decode_heartbeat(fields[b"m"]) for _, fields in entries]
    assert [(hb.service, hb.instance, hb.details, hb.goodbye) for hb in beats] == [
        ("ticker", "worker-7", {"n": 1}, False),
        ("ticker", "worker-7", None, True),
    ]
