"""Session fixtures: private redis-server processes on free loopback ports.

Tests never touch the machine's shared Redis: every URL is passed explicitly.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.embedded import RedisServer


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio runs on asyncio only


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server for the session; tests isolate themselves by namespace."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of the test's own, to pause, kill and restart."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def config(redis_server: RedisServer, namespace: str) -> Config:
    return Config(redis_url=redis_server.url, namespace=namespace)


@pytest.fixture
async def redis(config: Config) -> AsyncIterator[aioredis.Redis]:
    assert config.redis_url
    client = aioredis.Redis.from_url(config.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def aggregator(config: Config) -> AsyncIterator[Aggregator]:
    """An aggregator running in the test's event loop, already leading."""
    agg = Aggregator(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agg.run)
        await agg.is_leader.wait()
        yield agg
        tg.cancel_scope.cancel()
