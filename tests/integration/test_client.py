"""The client API: snapshot, live updates, transitions through a consumer group."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.client import HealthBus
from healthbus.config import Config
from healthbus.errors import BusUnavailable
from healthbus.schema import Transition, encode
from tests.support import wait_until

pytestmark = pytest.mark.anyio


def hb(service: str, ok: bool = True) -> dict[str, bytes]:
    return {"m": encode({"v": 1, "service": service, "interval_s": 3600, "ok": ok})}


@pytest.fixture
async def bus(aggregator: Aggregator, config: Config) -> AsyncIterator[HealthBus]:
    async with HealthBus.from_config(config) as client:
        yield client


async def test_snapshot_before_and_after_data(
    bus: HealthBus, redis: aioredis.Redis, config: Config
) -> None:
    await redis.xadd(config.keys.heartbeats, hb("api"))

    async def has_api() -> Any:
        snap = await bus.snapshot()
        return snap if "api" in snap.services else None

    snap = await wait_until(has_api)
    assert snap.meta is not None and snap.meta.status == "healthy"
    assert (await bus.service("api")) == snap.services["api"]
    assert await bus.service("nope") is None


async def test_updates_follow_commits(
    bus: HealthBus, redis: aioredis.Redis, config: Config
) -> None:
    seen: list[Any] = []

    async def follow() -> None:
        async for entry_id, update in bus.updates("0"):
            seen.append((entry_id, update))

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        await redis.xadd(config.keys.heartbeats, hb("worker", ok=False))
        await wait_until(lambda: _true(any(u.transitions for _, u in seen)))
        tg.cancel_scope.cancel()
    (_, update), *_ = seen
    assert update.transitions[0].to == "error" and update.services[0].name == "worker"


async def _true(value: bool) -> bool:
    return value


async def test_transitions_group_resumes_where_it_left_off(
    bus: HealthBus, redis: aioredis.Redis, config: Config
) -> None:
    """Acked entries are not delivered again; the one being handled when we stopped is."""
    got: list[Transition] = []

    async def consume(limit: int) -> None:
        async for t in bus.transitions(group="pager", consumer="c1", start="0"):
            got.append(t)
            if len(got) >= limit:
                return  # stops while handling: this one stays pending

    for i in range(3):
        await redis.xadd(config.keys.heartbeats, hb(f"s{i}"))
    await wait_until(lambda: _count(redis, config.keys.transitions, 3))
    with anyio.fail_after(10):
        await consume(2)
    assert [t.service for t in got] == ["s0", "s1"]
    with anyio.fail_after(10):
        await consume(4)
    # s1 was delivered but never acked (the loop stopped in its body): it comes again first.
    assert [t.service for t in got] == ["s0", "s1", "s1", "s2"]
    pending = await redis.xpending(config.keys.transitions, "pager")
    assert pending["pending"] == 1  # s2, being handled when the loop stopped


async def _count(redis: aioredis.Redis, key: str, n: int) -> bool:
    return bool(await redis.xlen(key) >= n)


async def test_unreachable_redis_is_a_clear_error() -> None:
    from healthbus.embedded import free_port

    async with HealthBus(f"redis://127.0.0.1:{free_port()}/0") as client:
        with pytest.raises(BusUnavailable, match="cannot reach Redis"):
            await client.snapshot()
