"""The `prefect` preset against real targets: a stand-in Prefect (its API routes, its messaging
streams and a docket worker running its twelve perpetual services on their default periods)
on the test's own Redis; its tables and connections in the machine's PostgreSQL; and, when one
is installed, a real `prefect server start` (skipped otherwise: Prefect is no dependency)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from docket import Docket, Perpetual, Worker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from healthbus.embedded import RedisServer, free_port
from publishers.probes import ProbeResult, ProbeSpec, check_all, parse_probes
from publishers.probes.prefect_preset import PREFECT_SERVICES
from tests.probe_support import PG_URL, fill_table, scratch_schema
from tests.support import stop_process, wait_until
from tests.webserver import serve

pytestmark = pytest.mark.anyio

FAST = timedelta(milliseconds=10)
#: A `prefect` executable from an environment with prefect and prefect-redis installed.
PREFECT = os.environ.get("HEALTHBUS_TEST_PREFECT") or shutil.which("prefect")


def preset(api_url: str, extra: str = "") -> list[ProbeSpec]:
    return parse_probes(
        f"""
[[probe]]
name = "prefect"
type = "prefect"
api_url = "{api_url}"
interval = 5
degraded_ms = 5000
error_ms = 5000
{extra}
""",
        "probes.toml",
        {},
    )


async def checked(probes: list[ProbeSpec]) -> dict[str, ProbeResult]:
    return {p.name: r for p, r in zip(probes, await check_all(probes), strict=True)}


def all_healthy(results: dict[str, ProbeResult]) -> bool:
    parts = [part for r in results.values() for part in r.parts.values()]
    return all(r.status == "healthy" for r in [*results.values(), *parts])


async def _health(request: Request) -> JSONResponse:
    return JSONResponse(True)


async def _ready(request: Request) -> JSONResponse:
    return JSONResponse({"message": "OK"})


stand_in_api = Starlette(routes=[Route("/api/health", _health), Route("/api/ready", _ready)])


def perpetual_service(name: str, every: float) -> Callable[..., Awaitable[None]]:
    """A no-op named like one of Prefect's perpetual services, on its period."""
    schedule = Perpetual(every=timedelta(seconds=every), automatic=True)

    async def service(perpetual: Perpetual = schedule) -> None:
        return None

    service.__name__ = service.__qualname__ = name
    return service


@asynccontextmanager
async def stand_in_services(url: str) -> AsyncIterator[None]:
    """Prefect's docket (`prefect-server`) with a worker running its default services."""
    async with Docket(name="prefect-server", url=url, heartbeat_interval=FAST * 10) as docket:
        for name, every in PREFECT_SERVICES.items():
            docket.register(perpetual_service(name, every))
        worker = Worker(docket, minimum_check_interval=FAST, scheduling_resolution=FAST)
        async with worker, anyio.create_task_group() as tg:
            tg.start_soon(worker.run_forever)
            yield
            tg.cancel_scope.cancel()


async def test_the_preset_watches_a_stand_in_prefect(own_redis: RedisServer) -> None:
    redis = aioredis.Redis.from_url(own_redis.url)
    await redis.xgroup_create("events", "event-persister", id="$", mkstream=True)
    await redis.xgroup_create("actions", "actions", id="$", mkstream=True)
    for n in range(3):  # published, not yet delivered to the event persister
        await redis.xadd("events", {"data": f"event {n}"})
    await redis.aclose()
    with serve(stand_in_api) as base:
        probes = preset(f"{base}/api", f'redis_url = "{own_redis.url}"\nlag_degraded = 2')
        async with stand_in_services(own_redis.url):
            results = await wait_until(
                lambda: _when(probes, lambda r: all_healthy({"docket": r["prefect.docket"]}))
            )

    assert list(results) == ["prefect.api", "prefect.ready", "prefect.redis", "prefect.docket"]
    assert results["prefect.api"].details["status_code"] == 200
    messaging = results["prefect.redis"]
    assert messaging.status == "degraded"
    assert messaging.error == "stream events lag 3 (degraded at 2)"
    docket = results["prefect.docket"]
    assert docket.details["workers"] == 1
    assert list(docket.parts) == list(PREFECT_SERVICES)
    assert docket.parts["monitor_late_runs"].details["every_s"] == 5.0


@contextmanager
def prefect_tables(rows: int) -> Iterator[str]:
    """A database URL whose search path finds `events` and `event_resources` of `rows` rows
    each in a schema of the test's own, and a held connection named `prefect-server`."""
    import psycopg

    with scratch_schema() as (conn, schema):
        for table in ("events", "event_resources"):
            fill_table(conn, f"{schema}.{table}", rows)
        url = PG_URL.replace("postgresql://", "postgresql+asyncpg://")
        with psycopg.connect(PG_URL, application_name="prefect-server"):
            yield f"{url}?options=-csearch_path%3D{schema}"


async def test_the_preset_reads_prefects_tables_and_connections() -> None:
    with serve(stand_in_api) as base, prefect_tables(rows=500) as database_url:
        probes = preset(
            f"{base}/api",
            f'database_url = "{database_url}"\napplication_name = "prefect-server"\n'
            "events_rows_warning = 100",
        )
        results = await checked(probes)

    pg = results["prefect.postgres"]
    assert pg.status == "healthy" and pg.details["app.prefect-server.connections"] == 1
    assert pg.details["table.events.rows"] == pg.details["table.event_resources.rows"] == 500
    assert pg.hint is not None and pg.hint.startswith("events table has 500 rows — Prefect deletes")
    assert results["prefect.ready"].status == "healthy"


@pytest.mark.skipif(
    PREFECT is None,
    reason="Prefect is not installed (no dependency of healthbus): to run this, install "
    "prefect and prefect-redis in a separate virtualenv and set HEALTHBUS_TEST_PREFECT to "
    "its `prefect` executable",
)
async def test_a_real_prefect_server(own_redis: RedisServer, tmp_path: Path) -> None:
    """`prefect server start` on SQLite, with its messaging and docket in the test's Redis:
    every check of the preset healthy, each of the twelve services seen on its cadence; when
    the server stops, the API is in error and the docket has no live worker."""
    with prefect_server(own_redis, tmp_path) as (api_url, server):
        await wait_until(lambda: _answers(f"{api_url}/health", server), timeout=120)
        probes = preset(api_url, f'redis_url = "{own_redis.url}"')
        results = await wait_until(lambda: _when(probes, all_healthy), timeout=60)
    services = results["prefect.docket"].parts
    assert list(services) == list(PREFECT_SERVICES)
    assert all(
        isinstance(s.details["runs"], int) and s.details["runs"] >= 1 for s in services.values()
    )
    assert results["prefect.redis"].details["stream.events.length"] is not None
    stopped = await checked(probes)
    assert stopped["prefect.api"].status == "error"
    assert stopped["prefect.docket"].details["workers"] == 0
    assert "0 live worker(s)" in (stopped["prefect.docket"].error or "")


@contextmanager
def prefect_server(
    redis: RedisServer, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """(API URL, process) of `prefect server start` on a free port, stopped on exit; its
    output goes to `server.log` in `tmp_path`."""
    assert PREFECT is not None
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path}/prefect.db",
        "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
        "PREFECT_REDIS_MESSAGING_PORT": str(redis.port),
        "PREFECT_SERVER_DOCKET_URL": redis.url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    command = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield f"http://127.0.0.1:{port}/api", server
        finally:
            stop_process(server, timeout=30)


async def _when(
    probes: list[ProbeSpec], holds: Callable[[dict[str, ProbeResult]], bool]
) -> dict[str, ProbeResult] | None:
    results = await checked(probes)
    return results if holds(results) else None


async def _answers(url: str, server: subprocess.Popen[bytes]) -> bool:
    if server.poll() is not None:
        raise AssertionError(f"prefect server start exited with {server.returncode}")
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False
