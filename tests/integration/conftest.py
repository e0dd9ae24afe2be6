"""Fixtures of the web tests: an HTTP client, and a writer of the bus shaped like the
aggregator's commits (for exact, scripted states)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from healthbus.config import Config
from tests.webserver import FakeBus


@pytest.fixture
def bus(redis: aioredis.Redis, config: Config) -> FakeBus:
    return FakeBus(redis, config.keys)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c
