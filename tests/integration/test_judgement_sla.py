"""SLA rollups written by the running aggregator in its commits, read by the web."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.web.app import create_app
from tests.ground_truth import heartbeat
from tests.support import wait_until
from tests.webserver import serve

pytestmark = pytest.mark.anyio


async def test_rollups_are_written_with_the_commits_and_feed_the_sla(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config, client: httpx.AsyncClient
) -> None:
    keys = config.keys
    await redis.xadd(keys.heartbeats, heartbeat("api", duration_ms=12.0))
    await redis.xadd(keys.heartbeats, heartbeat("api", ok=False, error="boom"))

    async def rollups() -> dict[str, dict[str, Any]] | None:
        out = {}
        for resolution in ("minute", "hour", "day"):
            rows: Any = await redis.hgetall(keys.rollup(resolution, "api"))
            merged: dict[str, Any] = {}
            for raw in rows.values():
                for member, value in json.loads(raw).items():
                    if member not in ("p95_duration_ms", "through_ms", "status"):
                        merged[member] = merged.get(member, 0) + value
            out[resolution] = merged
        return out if out["day"].get("error_ms", 0) > 1000 else None

    found = await wait_until(rollups, timeout=10)
    # Every resolution is written by the same commits: they agree up to the last one.
    assert found["day"]["incidents"] == found["hour"]["incidents"] == 1
    assert abs(found["day"]["error_ms"] - found["minute"]["error_ms"]) < 2000
    assert 0 < await redis.pttl(keys.rollup("day", "api")) <= (92 + 1) * 86_400_000
    day = json.loads(next(iter((await redis.hgetall(keys.rollup("day", "api"))).values())))
    assert day["p95_duration_ms"] == pytest.approx(12, rel=0.05)
    with serve(create_app(config)) as url:
        sla = (await client.get(url + "/api/services/api/sla?days=1")).json()
    assert sla["source"] == "rollups" and sla["uptime_pct"] is not None
    assert sla["incidents"] == 1 and sla["error_s"] > 1
