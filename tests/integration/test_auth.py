"""The token through a real server: which routes answer 401 without it, bearer and cookie
sign-in (the cookie is what the dashboard's EventSource sends), and sign-out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from healthbus.config import Config
from healthbus.embedded import RedisServer
from healthbus.web.app import create_app
from healthbus.web.cookie import COOKIE_NAME, SESSION_TTL_S, session_valid, session_value
from tests.webserver import FakeBus, open_stream, serve, view

pytestmark = [pytest.mark.anyio, pytest.mark.fault]

TOKEN = "s3cret-token"
DETAILED = [
    "/api/services/db",
    "/api/services/db/history",
    "/api/services/db/sla",
    "/api/transitions",
    "/api/incidents",
    "/metrics",
]
OPEN = ["/health", "/", "/static/app.js", "/badge/db.svg", "/openapi.json", "/api/session"]


@pytest.fixture
def config(redis_server: RedisServer, namespace: str) -> Config:
    return Config(redis_url=redis_server.url, namespace=namespace, token=TOKEN)


@pytest.fixture
async def url(config: Config, redis: aioredis.Redis) -> AsyncIterator[str]:
    await FakeBus(redis, config.keys).commit([view("db", "error", error="password rejected")])
    with serve(create_app(config)) as base:
        yield base


async def test_without_the_token_detailed_routes_answer_401_and_health_still_answers(
    url: str,
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for path in DETAILED:
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Bearer")
            tried = await client.get(path, params={"token": TOKEN})  # never in a query string
            assert tried.status_code == 401, path
        for path in OPEN:
            assert (await client.get(path)).status_code == 200, path
        doc = (await client.get("/api/health")).json()
        assert doc["services"]["perpetual"][0]["error"] is None
        session = (await client.get("/api/session")).json()
        assert session == {
            "token_required": True,
            "authorized": False,
            "show_details": "when-authorized",
        }
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for path in DETAILED:
            assert (await client.get(path, headers=bearer)).status_code == 200, path


async def test_the_dashboard_signs_in_with_a_cookie_that_is_not_the_token(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        wrong = await client.post("/api/session", json={"token": "guess"})
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        assert (await client.post("/api/session", content=b"{not json")).status_code == 400
        signed = await client.post("/api/session", json={"token": TOKEN})
        assert signed.status_code == 200 and signed.json()["authorized"] is True
        cookie = signed.headers["set-cookie"]
        assert TOKEN not in cookie
        attributes = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/", f"max-age={SESSION_TTL_S}"} <= attributes
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/api/session")).json()["authorized"] is True
        doc = (await client.get("/api/health")).json()
        assert doc["services"]["perpetual"][0]["error"] == "password rejected"
        async with open_stream(client, url) as sse:
            snapshot = (await sse.next()).json()
        assert snapshot["services"][0]["error"] == "password rejected"

        out = await client.delete("/api/session")
        assert out.status_code == 200 and f"{COOKIE_NAME}=" in out.headers["set-cookie"]
        assert (await client.get("/metrics")).status_code == 401

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        forged = {"Cookie": f"{COOKIE_NAME}={session_value('another-token', time.time())}"}
        assert (await client.get("/metrics", headers=forged)).status_code == 401
        header = await client.post("/api/session", headers={"Authorization": f"Bearer {TOKEN}"})
        assert header.status_code == 200 and COOKIE_NAME in header.headers["set-cookie"]


def test_a_session_expires_and_dies_with_its_token() -> None:
    value = session_value(TOKEN, 1000)
    assert session_valid(TOKEN, value, 1000)
    assert not session_valid(TOKEN, value, 1000 + SESSION_TTL_S)
    assert not session_valid("rotated", value, 1000)
    assert not session_valid(TOKEN, "x." + value.split(".")[1], 1000)


async def test_with_no_token_everything_is_open(
    redis_server: RedisServer, namespace: str, redis: aioredis.Redis
) -> None:
    config = Config(redis_url=redis_server.url, namespace=namespace)
    await FakeBus(redis, config.keys).commit([view("db")])
    with serve(create_app(config)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for path in DETAILED:
                assert (await client.get(path)).status_code == 200, path
            session = (await client.post("/api/session", json={"token": "anything"})).json()
    assert session["token_required"] is False and session["authorized"] is True
