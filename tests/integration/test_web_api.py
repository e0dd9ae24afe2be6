"""The read API through a real uvicorn server: service detail, transitions and incidents
paged, history and SLA (from transitions and from rollups), badges and the OpenAPI document.

Transitions are written to the stream as the aggregator writes them (field `m`), with ids
chosen by the test so that pages and days are exact; one test runs the real aggregator."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from openapi_spec_validator import validate
from starlette.routing import Route

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.schema import Transition, encode, iso_ms
from healthbus.web.app import create_app
from healthbus.web.uptime import DAY_MS, day_start_ms
from tests.support import wait_until
from tests.webserver import FakeBus, serve, transition, view

pytestmark = pytest.mark.anyio

HOUR = 3_600_000
XSS = "<img src=x onerror=alert(1)>"


async def record(redis: aioredis.Redis, config: Config, *transitions: Transition) -> list[str]:
    """XADD each with the id `<at_ms>-<n>`, as the aggregator's commit would (in order)."""
    ids = []
    for n, t in enumerate(transitions):
        ids.append(
            (
                await redis.xadd(config.keys.transitions, {"m": encode(t)}, id=f"{t.at_ms}-{n}")
            ).decode()
        )
    return ids


async def test_service_detail_has_the_view_and_its_latest_transitions(
    config: Config, bus: FakeBus, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    await bus.commit([view("alpha", "error", error=XSS), view("beta")])
    await record(
        redis,
        config,
        transition("alpha", "unknown", "healthy", 1000),
        transition("beta", "unknown", "healthy", 2000),
        transition("alpha", "healthy", "error", 3000, "alpha:3000"),
    )
    with serve(create_app(config)) as url:
        detail = (await client.get(url + "/api/services/alpha")).json()
        missing = await client.get(url + "/api/services/nobody")
        bad = await client.get(url + "/api/services/%3Cimg%3E")
    assert (detail["service"]["name"], detail["service"]["error"]) == ("alpha", XSS)
    assert [t["at_ms"] for t in detail["transitions"]] == [3000, 1000]
    assert detail["next"] is None
    assert missing.status_code == 404 and "nobody" in missing.json()["error"]
    assert bad.status_code == 400 and "not a service name" in bad.json()["error"]


async def test_transitions_page_back_by_stream_id(
    config: Config, bus: FakeBus, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    await bus.commit([view("a"), view("b")])
    await record(
        redis,
        config,
        *[transition("a" if n % 2 else "b", "healthy", "degraded", n * 1000) for n in range(1, 6)],
    )
    with serve(create_app(config)) as url:
        pages: list[list[int]] = []
        before = None
        while True:
            params = {"limit": "2", **({"before": before} if before else {})}
            page = (await client.get(url + "/api/transitions", params=params)).json()
            pages.append([t["at_ms"] for t in page["transitions"]])
            before = page["next"]
            if before is None:
                break
        only_a = (await client.get(url + "/api/transitions", params={"service": "a"})).json()
        refused = [
            await client.get(url + "/api/transitions", params=p)
            for p in ({"before": "yesterday"}, {"limit": "0"}, {"limit": "x"}, {"service": "<b>"})
        ]
    assert pages == [[5000, 4000], [3000, 2000], [1000]]
    assert [t["at_ms"] for t in only_a["transitions"]] == [5000, 3000, 1000]
    assert [r.status_code for r in refused] == [400, 400, 400, 400]


async def test_incidents_group_transitions_newest_opened_first(
    config: Config, bus: FakeBus, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    await bus.commit([view("a", "error"), view("b")])
    await record(
        redis,
        config,
        transition("a", "unknown", "healthy", 1000),
        transition("a", "healthy", "degraded", 2000, "a:2000"),
        transition("b", "healthy", "error", 3000, "b:3000"),
        transition("a", "degraded", "error", 4000, "a:2000"),
        transition("a", "error", "healthy", 6000, "a:2000"),
        transition("b", "error", "healthy", 7000, "b:3000"),
        transition("a", "healthy", "error", 8000, "a:8000"),
    )
    with serve(create_app(config)) as url:
        everything = (await client.get(url + "/api/incidents")).json()
        first = (await client.get(url + "/api/incidents", params={"limit": "1"})).json()
        second = (
            await client.get(url + "/api/incidents", params={"limit": "1", "before": first["next"]})
        ).json()
        of_a = (await client.get(url + "/api/incidents", params={"service": "a"})).json()
    got = [
        (i["id"], i["status"], i["opened_ms"], i["resolved_ms"], i["worst"], len(i["transitions"]))
        for i in everything["incidents"]
    ]
    assert got == [
        ("a:8000", "open", 8000, None, "error", 1),
        ("b:3000", "resolved", 3000, 7000, "error", 2),
        ("a:2000", "resolved", 2000, 6000, "error", 3),
    ]
    resolved = everything["incidents"][2]
    assert (resolved["duration_s"], resolved["updated_ms"]) == (4.0, 6000)
    assert [t["to"] for t in resolved["transitions"]] == ["degraded", "error", "healthy"]
    assert everything["next"] is None
    assert [i["id"] for i in first["incidents"]] == ["a:8000"]
    assert [i["id"] for i in second["incidents"]] == ["b:3000"]
    assert [i["id"] for i in of_a["incidents"]] == ["a:8000", "a:2000"]


async def test_history_and_sla_from_transitions_match_a_hand_computation(
    config: Config, bus: FakeBus, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    seconds, _ = await redis.time()
    today = day_start_ms(int(seconds) * 1000)
    d2, d1 = today - 2 * DAY_MS, today - DAY_MS
    await bus.commit([view("svc")])
    await record(
        redis,
        config,
        transition("svc", "unknown", "healthy", d2),
        transition("svc", "healthy", "error", d2 + 6 * HOUR, "i1"),
        transition("svc", "error", "degraded", d2 + 9 * HOUR, "i1"),
        transition("svc", "degraded", "healthy", d2 + 12 * HOUR, "i1"),
        transition("svc", "healthy", "degraded", d1 + 18 * HOUR, "i2"),
        transition("svc", "degraded", "healthy", today, "i2"),
    )
    with serve(create_app(config)) as url:
        history = (await client.get(url + "/api/services/svc/history", params={"days": "4"})).json()
        sla = (await client.get(url + "/api/services/svc/sla", params={"days": "4"})).json()
        too_many = await client.get(url + "/api/services/svc/sla", params={"days": "91"})
    assert history["source"] == "transitions" and "transitions stream" in history["note"]
    none, day2, day1, now = history["days"]
    assert (none["known_s"], none["uptime_pct"]) == (0, None)
    h = 3600
    assert (day2["healthy_s"], day2["error_s"], day2["degraded_s"]) == (18 * h, 3 * h, 3 * h)
    assert (day2["uptime_pct"], day2["availability_pct"], day2["incidents"]) == (75.0, 87.5, 1)
    assert (day1["healthy_s"], day1["degraded_s"], day1["incidents"]) == (18 * h, 6 * h, 1)
    assert (day1["uptime_pct"], day1["availability_pct"]) == (75.0, 100.0)
    assert now["error_s"] == now["degraded_s"] == 0 and now["uptime_pct"] in (100.0, None)
    assert day2["p95_duration_ms"] is None
    assert (sla["error_s"], sla["degraded_s"], sla["incidents"]) == (3 * h, 9 * h, 2)
    assert sla["uptime_pct"] == round(100 * sla["healthy_s"] / sla["known_s"], 4)
    assert (sla["source"], sla["days"], sla["service"]) == ("transitions", 4, "svc")
    assert too_many.status_code == 400


async def test_history_reads_the_aggregators_rollups_when_they_exist(
    config: Config, bus: FakeBus, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    seconds, _ = await redis.time()
    yesterday = iso_ms(day_start_ms(int(seconds) * 1000) - DAY_MS)[:10]
    await bus.commit([view("svc")])
    rollup = {
        "healthy_ms": 20 * HOUR,
        "degraded_ms": 2 * HOUR,
        "error_ms": 1 * HOUR,
        "blind_ms": 1 * HOUR,
        "incidents": 2,
        "p95_duration_ms": 140.5,
        "a_newer_field": "ignored",
    }
    await redis.hset(
        config.keys.rollup("day", "svc"),
        mapping={yesterday: json.dumps(rollup), "not-a-day": "{}", "2020-01-01": "not json"},
    )
    with serve(create_app(config)) as url:
        history = (await client.get(url + "/api/services/svc/history", params={"days": "2"})).json()
        sla = (await client.get(url + "/api/services/svc/sla", params={"days": "2"})).json()
    assert (history["source"], history["note"]) == ("rollups", None)
    day = history["days"][0]
    assert day["date"] == yesterday
    assert (day["known_s"], day["p95_duration_ms"], day["incidents"]) == (23 * 3600, 140.5, 2)
    assert day["uptime_pct"] == round(100 * 20 / 23, 4)
    assert day["availability_pct"] == round(100 * 22 / 23, 4)
    assert (sla["uptime_pct"], sla["known_s"], sla["source"]) == (
        day["uptime_pct"],
        23 * 3600,
        "rollups",
    )


async def test_badges_show_the_status_and_never_404(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    await bus.commit([view("db", "error"), view("api")])
    with serve(create_app(config)) as url:
        red = await client.get(url + "/badge/db.svg")
        green = await client.get(url + "/badge/api.svg")
        nobody = await client.get(url + "/badge/%3Cscript%3Ex%26y.svg")
    assert red.status_code == green.status_code == nobody.status_code == 200
    assert red.headers["content-type"].startswith("image/svg+xml")
    assert "max-age=30" in red.headers["cache-control"]
    assert ">error</text>" in red.text and "#cf222e" in red.text
    assert ">healthy</text>" in green.text and 'aria-label="api: healthy"' in green.text
    assert ">unknown</text>" in nobody.text and "#9f9f9f" in nobody.text
    assert "<script>" not in nobody.text and "&lt;script&gt;x&amp;y" in nobody.text


async def test_openapi_is_valid_and_matches_the_routes(
    config: Config, client: httpx.AsyncClient
) -> None:
    app = create_app(config)
    routes = {
        (r.path, method.lower())
        for r in app.routes
        if isinstance(r, Route)
        for method in (r.methods or ()) - {"HEAD"}
    }
    with serve(app) as url:
        doc = (await client.get(url + "/openapi.json")).json()
    validate(doc)
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == routes


async def test_incidents_and_detail_from_the_real_aggregator(
    config: Config, redis: aioredis.Redis, client: httpx.AsyncClient, aggregator: Aggregator
) -> None:
    def beat(**fields: Any) -> dict[str, bytes]:
        heartbeat = {"v": 1, "service": "nightly", "interval_s": 3600, "ok": True, **fields}
        return {"m": json.dumps(heartbeat).encode()}

    with serve(create_app(config)) as url:
        for fields in ({}, {"ok": False, "error": "disk full"}, {}):
            await redis.xadd(config.keys.heartbeats, beat(**fields))

        async def resolved() -> Any:
            page = (await client.get(url + "/api/incidents")).json()
            return page["incidents"] and page["incidents"][0]["status"] == "resolved" and page

        page = await wait_until(resolved)

        async def caught_up() -> Any:
            response = await client.get(url + "/api/services/nightly")
            detail = response.json() if response.status_code == 200 else {}
            return len(detail.get("transitions", ())) == 3 and detail

        detail = await wait_until(caught_up)
    (incident,) = page["incidents"]
    assert [t["to"] for t in incident["transitions"]] == ["error", "healthy"]
    assert incident["transitions"][0]["reason"].endswith("disk full")
    assert [t["to"] for t in detail["transitions"]] == ["healthy", "error", "healthy"]
    assert detail["service"]["status"] == "healthy"
