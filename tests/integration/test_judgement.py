"""Judgement scenarios through a real aggregator, fed redis-cli-style heartbeats."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.client import HealthBus
from healthbus.config import Config
from healthbus.schema import ServiceView, Transition
from tests.ground_truth import heartbeat, transitions
from tests.support import wait_until

pytestmark = pytest.mark.anyio

DEPENDANTS = ("api", "scheduler", "event_persister")


async def xadd(redis: aioredis.Redis, config: Config, service: str, **fields: Any) -> None:
    await redis.xadd(config.keys.heartbeats, heartbeat(service, **fields))


async def test_a_failing_database_is_the_one_root_cause_of_its_dependants(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    assert config.redis_url
    async with HealthBus(config.redis_url, config.namespace) as bus:
        await bus.ensure_group("automation", "0")
        await xadd(redis, config, "postgres", kind="probe")
        for name in DEPENDANTS:
            await xadd(redis, config, name, depends_on=["postgres"])
        await xadd(redis, config, "postgres", kind="probe", ok=False, error="too many clients")
        for name in DEPENDANTS:
            await xadd(redis, config, name, ok=False, error="connection refused")

        seen: list[Transition] = []

        async def failures() -> list[Transition] | None:
            for entry_id, t in await bus.read_transitions("automation", "me", block_ms=100):
                await bus.ack("automation", [entry_id])
                if t is not None and t.to == "error":
                    seen.append(t)
            return seen if len(seen) == 4 else None

        errors = await wait_until(failures)
    roots = [t for t in errors if not t.suppressed]
    assert [(t.service, t.root_cause) for t in roots] == [("postgres", None)]
    dependants = [t for t in errors if t.suppressed]
    assert sorted(t.service for t in dependants) == sorted(DEPENDANTS)
    assert {t.root_cause for t in dependants} == {"postgres"}
    raw = await redis.hget(config.keys.snapshot, "api")
    assert msgspec.json.decode(raw, type=ServiceView).affected_by == ["postgres"]


async def test_a_deploy_with_goodbye_and_re_register_raises_nothing(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    await xadd(redis, config, "worker", instance="pod-a", interval_s=1)
    await xadd(redis, config, "worker", instance="pod-a", interval_s=1, goodbye=True)
    await xadd(redis, config, "worker", instance="pod-b", interval_s=1)
    for _ in range(3):
        await xadd(redis, config, "worker", instance="pod-b", interval_s=1)
    last = await redis.xadd(config.keys.heartbeats, heartbeat("marker"))

    async def done() -> bool:
        m = await redis.hget(config.keys.snapshot, "_meta")
        return m is not None and msgspec.json.decode(m)["as_of"] == last.decode()

    await wait_until(done)
    worker = [t for t in await transitions(redis, config) if t.service == "worker"]
    assert [t.event for t in worker] == ["healthbus.service.appeared"]


async def test_the_bus_reports_its_own_health_as_a_service(
    redis: aioredis.Redis, config: Config
) -> None:
    agg = Aggregator(config.replace(bus_interval_s=0.3))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agg.run)
        await xadd(redis, config, "worker")
        raw = await wait_until(lambda: redis.hget(config.keys.snapshot, "healthbus.aggregator"))
        tg.cancel_scope.cancel()
    bus = msgspec.json.decode(raw, type=ServiceView)
    assert (bus.kind, bus.status, bus.expected_interval_seconds) == ("bus", "healthy", 0.3)
    assert bus.details is not None and bus.details["leader"] == agg.name
    assert int(bus.details["stream_length"] or 0) >= 1
    appeared = [t for t in await transitions(redis, config) if t.service == "healthbus.aggregator"]
    assert [t.event for t in appeared] == ["healthbus.service.appeared"]
