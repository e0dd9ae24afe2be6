"""A bus outage is never a service outage (design.md, "Time")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.embedded import RedisServer
from healthbus.schema import Meta, Transition, encode
from tests.support import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.fault]

HB = {"m": encode({"v": 1, "service": "steady", "interval_s": 1, "ok": True})}


@pytest.fixture
def own_config(own_redis: RedisServer, namespace: str) -> Config:
    return Config(redis_url=own_redis.url, namespace=namespace)


@pytest.fixture
async def client(own_config: Config) -> AsyncIterator[aioredis.Redis]:
    assert own_config.redis_url
    c = aioredis.Redis.from_url(own_config.redis_url, socket_timeout=30)
    yield c
    await c.aclose()


async def publish_every(client: aioredis.Redis, key: str, period: float, stop: anyio.Event) -> None:
    """A steady publisher; its XADDs wait while Redis is frozen, fail while it is gone."""
    while not stop.is_set():
        try:
            await client.xadd(key, HB)
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            pass
        await anyio.sleep(period)


async def events(client: aioredis.Redis, config: Config) -> list[str]:
    rows = await client.xrange(config.keys.transitions)
    return [msgspec.json.decode(f[b"m"], type=Transition).event for _, f in rows]


@asynccontextmanager
async def running(config: Config, client: aioredis.Redis) -> AsyncIterator[None]:
    """An aggregator and a steady publisher (every 0.3 s, interval 1 s), already seen; on
    leaving, heartbeats flow again for a while after the outage."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(Aggregator(config).run)
        stop = anyio.Event()
        tg.start_soon(publish_every, client, config.keys.heartbeats, 0.3, stop)
        await wait_until(lambda: events(client, config))
        yield
        await anyio.sleep(1.5)
        stop.set()
        tg.cancel_scope.cancel()


@pytest.fixture
async def flowing(own_config: Config, client: aioredis.Redis) -> AsyncIterator[None]:
    async with running(own_config, client):
        yield


async def test_frozen_redis_does_not_age_services(
    own_redis: RedisServer, own_config: Config, client: aioredis.Redis, flowing: None
) -> None:
    own_redis.pause()
    await anyio.sleep(4)  # the outage itself: 4 intervals of silence, no heartbeat possible
    own_redis.resume()
    await wait_until(lambda: _blind(client, own_config), timeout=10)


async def test_frozen_past_the_lease_does_not_age_services(
    own_redis: RedisServer, own_config: Config, client: aioredis.Redis
) -> None:
    """Frozen for longer than the lease: the aggregator, its lease gone, reloads its
    committed state from Redis, which lacks the blind time it granted and had not committed
    yet; that time must still count as blind."""
    config = msgspec.structs.replace(own_config, lease_ttl_s=1.0)
    async with running(config, client):
        own_redis.pause()
        await anyio.sleep(4)  # four intervals, four leases
        own_redis.resume()
        await wait_until(lambda: _blind(client, config), timeout=10)


async def test_lease_renewal_stalled_past_the_lease_does_not_age_services(
    own_config: Config, client: aioredis.Redis
) -> None:
    """Writes paused (CLIENT PAUSE WRITE) for longer than the lease, with nothing else in
    flight: the tick's lease renewal is the call that stalls, and it finds the lease expired
    when it is answered. That stall alone must count as blind time, though no read or
    commit stalled and the state is reloaded for the new epoch."""
    config = msgspec.structs.replace(own_config, lease_ttl_s=1.0)
    async with running(config, client):
        first = await _meta(client, config)
        await client.client_pause(4000, all=False)  # scripts and XADDs wait; reads go on
        await anyio.sleep(4)  # the pause: four intervals, four leases
        meta = await wait_until(lambda: _blind(client, config), timeout=10)
        assert meta.epoch > first.epoch, "the stalled renewal should have lost the lease"


async def _blind(client: aioredis.Redis, config: Config) -> Meta | None:
    raw = await client.hget(config.keys.snapshot, "_meta")
    meta = msgspec.json.decode(raw, type=Meta) if raw else None
    return meta if meta and meta.blind_ms >= 2000 else None


async def test_redis_restarted_empty_gets_the_state_back(
    own_redis: RedisServer, own_config: Config, client: aioredis.Redis, flowing: None
) -> None:
    first_gen = (await _meta(client, own_config)).gen
    own_redis.kill()
    await anyio.sleep(3)  # the outage: three intervals without Redis at all
    own_redis.start()

    async def new_gen() -> Meta | None:
        meta = await _meta(client, own_config)
        return meta if meta.gen != first_gen and meta.services == 1 else None

    meta = await wait_until(new_gen, timeout=15)
    assert meta.status == "healthy"


@pytest.fixture(autouse=True)
async def no_outage_reported(client: aioredis.Redis, own_config: Config) -> AsyncIterator[None]:
    """After each test here (and its `flowing` teardown): the service never went down.

    (A Redis restarted empty loses the transitions before it, `appeared` included.)"""
    yield
    assert set(await events(client, own_config)) <= {"healthbus.service.appeared"}


async def _meta(client: aioredis.Redis, config: Config) -> Meta:
    async def read() -> Meta | None:
        try:
            raw = await client.hget(config.keys.snapshot, "_meta")
        except (aioredis.ConnectionError, OSError):
            return None
        return msgspec.json.decode(raw, type=Meta) if raw else None

    return await wait_until(read, timeout=15)
