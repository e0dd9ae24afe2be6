"""`/metrics` through a real server: names, labels, values, escaping, and `promtool check
metrics` (Debian's prometheus package, installed when missing and possible)."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

from healthbus.config import Config
from healthbus.web.app import create_app
from tests.apt import install
from tests.webserver import FakeBus, serve, view

pytestmark = pytest.mark.anyio

PROMTOOL = Path("/usr/bin/promtool")
ODD_KIND = 'a "quoted"\\kind\nwith a newline'


@pytest.fixture(scope="session")
def promtool() -> Path:
    why = install("prometheus", PROMTOOL)
    if why is not None:
        pytest.skip(f"needs promtool from Debian's prometheus package: {why}")
    return PROMTOOL


async def exposition(config: Config, redis: aioredis.Redis) -> httpx.Response:
    bus = FakeBus(redis, config.keys)
    await bus.commit(
        [
            view("api", last_duration_ms=142.0),
            view("odd", "degraded", kind=ODD_KIND),
            view(
                "EventPersister",
                "error",
                kind="consumer",
                details={"queue_depth": 15, "queue_capacity": 50000, "consecutive_failures": True},
            ),
        ]
    )
    with serve(create_app(config)) as url:
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.get(url + "/metrics")


async def test_metrics_follow_prometheus_conventions(config: Config, redis: aioredis.Redis) -> None:
    response = await exposition(config, redis)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = response.text.splitlines()
    api = 'service="api",kind="perpetual"'
    assert f'healthbus_service_status{{{api},status="healthy"}} 1' in lines
    assert f'healthbus_service_status{{{api},status="error"}} 0' in lines
    assert f"healthbus_service_last_duration_seconds{{{api}}} 0.142" in lines
    assert f"healthbus_service_interval_seconds{{{api}}} 60.0" in lines
    consumer = 'service="EventPersister",kind="consumer"'
    assert f"healthbus_service_queue_depth{{{consumer}}} 15" in lines
    assert f"healthbus_service_queue_capacity{{{consumer}}} 50000" in lines
    assert not any(line.startswith("healthbus_service_consecutive_failures{") for line in lines)
    escaped = 'kind="a \\"quoted\\"\\\\kind\\nwith a newline"'
    assert f'healthbus_service_status{{service="odd",{escaped},status="degraded"}} 1' in lines
    assert 'healthbus_services{status="error"} 1' in lines
    assert "# TYPE healthbus_bus_invalid_total counter" in lines
    assert "healthbus_bus_up 1" in lines
    assert "healthbus_sse_clients_dropped_total 0" in lines
    ages = [line for line in lines if line.startswith("healthbus_service_heartbeat_age_seconds{")]
    assert len(ages) == 3 and all(float(line.rsplit(" ", 1)[1]) > 0 for line in ages)


async def test_promtool_accepts_the_metrics(
    config: Config, redis: aioredis.Redis, promtool: Path
) -> None:
    body = (await exposition(config, redis)).content
    done = await anyio.run_process([str(promtool), "check", "metrics"], input=body, check=False)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
