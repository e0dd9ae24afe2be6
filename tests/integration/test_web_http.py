"""`/health`, `/ready`, `/api/health`, the dashboard route, detail withholding and the
end-to-end path heartbeat → aggregator → SSE, through a real uvicorn server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.embedded import RedisServer, free_port
from healthbus.errors import ConfigError
from healthbus.schema import encode
from healthbus.web.app import CONFIG_ENV, app_from_env, check_bind, create_app
from tests.support import wait_until
from tests.webserver import FakeBus, instance, open_stream, serve, transition, view

pytestmark = pytest.mark.anyio


@contextmanager
def web(config: Config, **options: Any) -> Iterator[str]:
    with serve(create_app(config, **options)) as url:
        yield url


def fleet() -> list[Any]:
    return [
        view("alpha", details={"runs": 1}),
        view("beta", "error", kind="consumer", error="queue full"),
        view("gamma", "degraded", kind="probe"),
        view("delta", kind="custom-kind"),
        view("epsilon", "error"),
    ]


async def test_api_health_is_one_document_grouped_by_kind(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    last = await bus.commit(fleet())
    with web(config) as url:
        response = await client.get(url + "/api/health")
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        doc = response.json()
    assert (doc["status"], doc["seq"], doc["total"]) == ("error", 1, 5)
    assert doc["counts"] == {"healthy": 2, "degraded": 1, "error": 2}
    assert set(doc["server"]) == {"version", "started_at", "uptime_seconds", "sse_clients"}
    bus_info = doc["bus"]
    assert (bus_info["gen"], bus_info["update_id"], bus_info["stale"]) == ("g1", last, False)
    assert bus_info["leader"] == "test-leader" and bus_info["updated_at"]
    groups = {kind: [s["name"] for s in items] for kind, items in doc["services"].items()}
    assert groups == {
        "perpetual": ["alpha", "delta", "epsilon"],  # an unknown kind goes with perpetual
        "consumer": ["beta"],
        "probe": ["gamma"],
    }
    assert doc["services"]["perpetual"][0]["details"] == {"runs": 1}


@pytest.mark.parametrize(
    ("query", "names", "total"),
    [
        ({"status": "error"}, ["beta", "epsilon"], 2),
        ({"status": "error,degraded"}, ["beta", "epsilon", "gamma"], 3),
        ({"kind": "consumer"}, ["beta"], 1),
        ({"kind": "perpetual"}, ["alpha", "delta", "epsilon"], 3),
        ({"name": "ta"}, ["beta", "delta"], 2),
        ({"name": "ALPHA"}, ["alpha"], 1),
        ({"limit": "2"}, ["alpha", "beta"], 5),
        ({"limit": "2", "offset": "2"}, ["delta", "epsilon"], 5),
        ({"limit": "0"}, [], 5),
        ({"offset": "9"}, [], 5),
        ({"status": "healthy", "kind": "perpetual"}, ["alpha", "delta"], 2),
    ],
)
async def test_api_health_filters_and_pages(
    config: Config,
    bus: FakeBus,
    client: httpx.AsyncClient,
    query: dict[str, str],
    names: list[str],
    total: int,
) -> None:
    await bus.commit(fleet())
    with web(config) as url:
        doc = (await client.get(url + "/api/health", params=query)).json()
    listed = sorted(s["name"] for items in doc["services"].values() for s in items)
    assert (listed, doc["total"]) == (names, total)
    assert sum(doc["counts"].values()) == total


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ({"status": "bad"}, "not a status"),
        ({"limit": "-1"}, "whole number"),
        ({"offset": "x"}, "whole number"),
        ({"limit": "9999999"}, "maximum"),
    ],
)
async def test_api_health_refuses_bad_parameters(
    config: Config, client: httpx.AsyncClient, query: dict[str, str], needle: str
) -> None:
    with web(config) as url:
        response = await client.get(url + "/api/health", params=query)
    assert response.status_code == 400
    assert needle in response.json()["error"]


async def test_api_health_before_any_data(config: Config, client: httpx.AsyncClient) -> None:
    with web(config) as url:
        doc = (await client.get(url + "/api/health")).json()
    assert (doc["status"], doc["seq"], doc["total"], doc["as_of"]) == ("unknown", 0, 0, None)
    assert doc["bus"]["stale"] is True and doc["bus"]["gen"] is None


async def test_health_and_ready(config: Config, bus: FakeBus, client: httpx.AsyncClient) -> None:
    with web(config) as url:
        assert (await client.get(url + "/health")).json() == {"status": "ok"}
        response = await client.get(url + "/ready")
        assert response.status_code == 503
        assert "no data yet" in response.json()["reason"]

        await bus.commit([view("a")])
        response = await client.get(url + "/ready")
        assert response.status_code == 200
        assert response.json()["status"] == "ready"

        await bus.touch(age_ms=60_000)  # the aggregator stopped refreshing a minute ago
        response = await client.get(url + "/ready")
        assert response.status_code == 503
        assert "stale" in response.json()["reason"] and "60." in response.json()["reason"]

        await bus.touch()
        assert (await client.get(url + "/ready")).status_code == 200


@pytest.mark.fault
async def test_health_is_503_while_redis_is_down(
    own_redis: RedisServer, namespace: str, client: httpx.AsyncClient
) -> None:
    config = Config(redis_url=own_redis.url, namespace=namespace)
    with web(config) as url:
        assert (await client.get(url + "/health")).status_code == 200
        own_redis.pause()  # frozen: connected but silent
        try:
            with anyio.fail_after(8):
                response = await client.get(url + "/health")
            assert response.status_code == 503
            assert "cannot reach Redis" in response.json()["reason"]
            assert (await client.get(url + "/ready")).status_code == 503
            assert (await client.get(url + "/api/health")).status_code == 200
        finally:
            own_redis.resume()

        async def healthy() -> bool:
            return (await client.get(url + "/health")).status_code == 200

        await wait_until(healthy)


async def test_snapshot_of_a_large_fleet_lists_only_the_unhealthy_unless_filtered(
    redis_server: RedisServer, namespace: str, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    config = Config(redis_url=redis_server.url, namespace=namespace, sse_snapshot_limit=3)
    await FakeBus(redis, config.keys).commit(fleet())
    with web(config) as url:
        async with open_stream(client, url) as sse:
            data = (await sse.next()).json()
            assert data["truncated"] is True and data["total"] == 5
            assert [s["name"] for s in data["services"]] == ["beta", "epsilon", "gamma"]
            assert data["counts"] == {"healthy": 2, "degraded": 1, "error": 2}
        async with open_stream(client, url, params={"kind": "perpetual"}) as sse:
            data = (await sse.next()).json()
            assert data["truncated"] is False
            assert [s["name"] for s in data["services"]] == ["alpha", "delta", "epsilon"]


SECRET = "password=hunter2 at db-1"


def secret_fleet() -> list[Any]:
    return [
        view(
            "db",
            "error",
            details={"conn": "db-1"},
            error=SECRET,
            reason=f"failed: {SECRET}",
            instances=[
                instance("host-a:1", "error", error=SECRET, reason=f"failed: {SECRET}"),
                instance("host-b:2"),
            ],
        )
    ]


@pytest.mark.parametrize(
    ("show", "token", "auth", "withheld"),
    [
        ("when-authorized", "s3cret", None, True),
        ("when-authorized", "s3cret", "Bearer wrong", True),
        ("when-authorized", "s3cret", "Bearer s3cret", False),
        ("when-authorized", None, None, False),
        ("always", "s3cret", None, False),
        ("never", "s3cret", "Bearer s3cret", True),
    ],
)
async def test_details_are_withheld_per_policy(
    redis_server: RedisServer,
    namespace: str,
    redis: aioredis.Redis,
    client: httpx.AsyncClient,
    show: Any,
    token: str | None,
    auth: str | None,
    withheld: bool,
) -> None:
    config = Config(redis_url=redis_server.url, namespace=namespace, token=token, show_details=show)
    bus = FakeBus(redis, config.keys)
    await bus.commit(secret_fleet())
    headers = {"Authorization": auth} if auth else {}
    with web(config) as url:
        doc = (await client.get(url + "/api/health", headers=headers)).json()
        async with open_stream(client, url, headers=headers) as sse:
            snap = (await sse.next()).json()
            flip = transition("db", "healthy", "error")
            flip = msgspec.structs.replace(flip, reason=f"failed: {SECRET}")
            await bus.commit(secret_fleet(), transitions=[flip])
            update, t = await sse.take(2)
    seen = [doc["services"]["perpetual"][0], snap["services"][0], update.json()["services"][0]]
    texts = [encode(doc), encode(snap), update.data.encode(), t.data.encode()]
    if withheld:
        assert not any(b"hunter2" in text or b"host-a" in text for text in texts)
        for service in seen:
            assert service["details"] is None and service["error"] is None
            assert [i["instance"] for i in service["instances"]] == ["#1", "#2"]
            assert service["reason"] == "failed: [redacted]"
        assert t.json()["reason"] == "failed: [redacted]"
        assert snap["meta"]["leader"] == "" and doc["bus"]["leader"] == ""
    else:
        for service in seen:
            assert service["error"] == SECRET and service["details"] == {"conn": "db-1"}
            assert service["instances"][0]["instance"] == "host-a:1"
        assert SECRET in t.json()["reason"]


async def test_dashboard_and_static_files(
    config: Config, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    with web(config, static_dir=tmp_path) as url:
        missing = await client.get(url + "/")
        assert missing.status_code == 404 and "/api/health" in missing.text
        (tmp_path / "index.html").write_text("<!doctype html><title>hb</title>")
        (tmp_path / "app.js").write_text("console.log(1)")
        page = await client.get(url + "/")
        assert page.status_code == 200 and "<title>hb</title>" in page.text
        assert page.headers["content-type"].startswith("text/html")
        script = await client.get(url + "/static/app.js")
        assert script.status_code == 200 and script.text == "console.log(1)"
        assert (await client.get(url + "/static/nope.js")).status_code == 404


async def test_the_packaged_dashboard_is_served(config: Config, client: httpx.AsyncClient) -> None:
    with web(config) as url:
        page = await client.get(url + "/")
        assert page.status_code == 200 and "<html" in page.text.lower()


def test_app_from_env_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, config: Config
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.setenv("HEALTHBUS_NAMESPACE", "from-env")
    assert app_from_env().routes
    monkeypatch.setenv(CONFIG_ENV, encode(config).decode())
    assert app_from_env().routes
    monkeypatch.setenv(CONFIG_ENV, '{"namespace": "bad name"}')
    with pytest.raises(ConfigError):
        app_from_env()


@pytest.mark.parametrize(
    ("host", "token", "ok"),
    [
        ("127.0.0.1", None, True),
        ("::1", None, True),
        ("localhost", None, True),
        ("0.0.0.0", None, False),
        ("example.org", None, False),
        ("0.0.0.0", "t", True),
    ],
)
@pytest.mark.fault
def test_a_non_loopback_bind_needs_a_token(host: str, token: str | None, ok: bool) -> None:
    config = Config(host=host, token=token)
    if ok:
        check_bind(config)
    else:
        with pytest.raises(ConfigError, match="HEALTHBUS_TOKEN"):
            check_bind(config)


@pytest.fixture
def workers(config: Config) -> Iterator[str]:
    """`uvicorn --factory healthbus.web.app:app_from_env --workers 2`, configured by the
    environment as in a deployment; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "HEALTHBUS_REDIS_URL": config.redis_url or "",
        "HEALTHBUS_NAMESPACE": config.namespace,
    }
    env.pop(CONFIG_ENV, None)
    args = [sys.executable, "-m", "uvicorn", "--factory", "healthbus.web.app:app_from_env"]
    args += ["--port", str(port), "--workers", "2", "--log-level", "warning"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
async def test_uvicorn_factory_with_several_workers(
    workers: str, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    first = await bus.commit([view("a")])

    async def up() -> bool:
        try:
            return (await client.get(workers + "/health")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_until(up, timeout=30)
    for _ in range(4):  # new connections land on either worker
        async with httpx.AsyncClient(timeout=10) as fresh, open_stream(fresh, workers) as sse:
            snap = await sse.next()
            assert snap.id == f"g1-{first}"
            second = await bus.commit([view("a", "error")])
            assert (await sse.next()).id == f"g1-{second}"
            first = second


async def test_end_to_end_a_heartbeat_reaches_the_stream(
    config: Config, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    aggregator = Aggregator(config)
    heartbeat = b'{"v":1,"service":"nightly_backup","interval_s":3600,"ok":true,"details":{"n":1}}'
    async with anyio.create_task_group() as tg:
        tg.start_soon(aggregator.run)
        with anyio.fail_after(10):
            await aggregator.is_leader.wait()
        with web(config) as url:
            async with open_stream(client, url) as sse:
                await redis.xadd(config.keys.heartbeats, {"m": heartbeat})
                event = await sse.next()
                while event.event == "snapshot" and not event.json()["services"]:
                    event = await sse.next()  # the aggregator's first commit: a new snapshot
                found = [s for s in event.json()["services"] if s["name"] == "nightly_backup"]
                assert found and found[0]["status"] == "healthy"
                assert found[0]["details"] == {"n": 1}
                if event.event == "update":
                    appeared = await sse.next()
                    assert appeared.event == "transition"
                    assert appeared.json()["event"] == "healthbus.service.appeared"
                    assert appeared.id is not None and appeared.id.startswith(aggregator.gen)

                bad = heartbeat.replace(b'"ok":true', b'"ok":false,"error":"disk"')
                await redis.xadd(config.keys.heartbeats, {"m": bad})
                update, flip = await sse.take(2)
                assert update.json()["services"][0]["status"] == "error"
                assert (flip.event, flip.json()["to"]) == ("transition", "error")
                # The id names the updates entry that carried it (a freshness commit may follow).
                assert flip.id is not None and flip.id.startswith(f"{aggregator.gen}-")
                entry = flip.id.removeprefix(f"{aggregator.gen}-")
                ((_, fields),) = await redis.xrange(config.keys.updates, min=entry, max=entry)
                assert b'"transitions":[{' in fields[b"m"] and b'"to":"error"' in fields[b"m"]
            doc = (await client.get(url + "/ready")).json()
            assert doc["status"] == "ready"
        tg.cancel_scope.cancel()
