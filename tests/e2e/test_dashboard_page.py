"""The dashboard page against a scripted event feed: rendering, live changes, escaping.

The feed stands in for the web app's SSE endpoint only, so each behaviour of the page can be
driven exactly; test_dashboard.py runs the page against the real app and aggregator.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.apt import INSTALL_TIMEOUT_S
from tests.e2e.conftest import Page
from tests.webserver import serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * INSTALL_TIMEOUT_S + 60)]
expect = pytest.importorskip("playwright.sync_api").expect

STATIC = resources.files("healthbus") / "static"
XSS = "<img src=x onerror=alert(1)>"


def service(name: str, status: str = "healthy", kind: str = "perpetual", **fields: Any) -> Any:
    now = int(time.time() * 1000)
    return {
        "name": name,
        "kind": kind,
        "status": status,
        "reason": fields.pop("reason", "ok"),
        "since": "2026-01-01T00:00:00.000Z",
        "last_heartbeat": "2026-01-01T00:00:00.000Z",
        "last_heartbeat_ms": now - fields.pop("age_s", 1) * 1000,
        "expected_interval_seconds": 15,
        "instances": [],
        **fields,
    }


def snapshot(*services: Any, status: str = "healthy") -> dict[str, Any]:
    now = int(time.time() * 1000)
    meta = {"seq": 1, "status": status, "leader": "lead-1", "lag_ms": 3, "updated_at_ms": now}
    return {"gen": "g", "seq": 1, "status": status, "meta": meta, "services": list(services)}


def frame(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


class Feed:
    """A scripted /api/health/stream: the snapshot on each connect, then what the test sends."""

    def __init__(self, first: dict[str, Any]) -> None:
        self.snapshot = first
        self.events: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self.accepting = threading.Event()
        self.accepting.set()
        self.closing = False

    def send(self, event: str, data: Any) -> None:
        self.events.put((event, data))

    def drop(self) -> None:
        """End the stream; the browser's reconnect then waits until `resume()`."""
        self.accepting.clear()
        self.events.put(None)

    async def stream(self, request: Request) -> Response:
        if not await anyio.to_thread.run_sync(self.accepting.wait, 30, abandon_on_cancel=True):
            return Response("the test never resumed the feed", status_code=503)

        async def events() -> Any:
            yield "retry: 100\n\n" + frame("snapshot", self.snapshot)
            while not self.closing:
                try:
                    item = self.events.get_nowait()
                except queue.Empty:
                    await anyio.sleep(0.02)
                    continue
                if item is None:
                    return
                yield frame(*item)

        return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture
def feed() -> Feed:
    return Feed(snapshot())


@pytest.fixture
def site(feed: Feed) -> Iterator[str]:
    app = Starlette(
        routes=[
            Route("/", lambda request: FileResponse(str(STATIC / "index.html"))),
            Route("/api/health/stream", feed.stream),
            Mount("/static", StaticFiles(directory=str(STATIC))),
        ]
    )
    with serve(app) as url:
        yield url
        feed.closing = True  # ends open streams, so the server stops at once


def names(page: Page, kind: str) -> list[str]:
    cards = page.page.locator(f'section[data-kind="{kind}"] .svc')
    return list(cards.evaluate_all("cards => cards.map(c => c.dataset.name)"))


def test_snapshot_is_grouped_sorted_worst_first_and_escaped(
    page: Page, site: str, feed: Feed
) -> None:
    feed.snapshot = snapshot(
        service("b-ok"),
        service("a-ok"),
        service("slow", "degraded", reason="no heartbeat for 40 s (expected every 15 s)"),
        service(XSS, "error", reason=XSS, error="<script>alert(2)</script>", hint="<b>hint</b>"),
        service("queue", "healthy", "consumer", details={"<i>depth</i>": "<u>7</u>"}),
        service("db", "unknown", "probe"),
        service("cron", "healthy", "cron"),  # an unknown kind shows with the perpetual ones
        status="error",
    )
    p = page.page
    p.goto(site)
    expect(p.locator("#banner")).to_have_attribute("data-status", "error")
    expect(p.locator("#overall")).to_have_text("Error")
    expect(p.locator(".svc")).to_have_count(7)
    assert names(page, "perpetual") == [XSS, "slow", "a-ok", "b-ok", "cron"]
    assert names(page, "consumer") == ["queue"]
    assert names(page, "probe") == ["db"]

    card = p.locator(".svc").first
    expect(card.locator(".svc-name")).to_have_text(XSS)
    expect(card.locator(".reason")).to_contain_text(XSS)
    expect(card.locator(".error")).to_have_text("<script>alert(2)</script>")
    expect(card.locator(".hint")).to_have_text("Hint: <b>hint</b>")
    expect(p.locator(".kv dt")).to_have_text("<i>depth</i>")
    expect(p.locator(".kv dd")).to_have_text("<u>7</u>")
    expect(p.locator("#groups img, #groups script, #groups b, #groups i")).to_have_count(0)
    expect(p.locator("#bus-state")).to_have_text("running")
    expect(p.locator("#bus-leader")).to_have_text("lead-1")
    assert page.dialogs == []
    assert page.errors == []


def test_updates_and_transitions_apply_live_and_a_resume_replaces_the_state(
    page: Page, site: str, feed: Feed
) -> None:
    feed.snapshot = snapshot(service("alpha", age_s=30), service("beta"), service("gone"))
    p = page.page
    p.goto(site)
    alpha = p.locator('.svc[data-name="alpha"]')
    age = alpha.locator("time.tick")
    expect(age).to_have_text(re.compile(r"^3\d s ago$"))
    expect(age).not_to_have_text(age.text_content() or "")  # it ticks by itself

    now = int(time.time() * 1000)
    failed = service("alpha", "error", reason="the last iteration failed", error="boom")
    feed.send("update", {"seq": 2, "status": "error", "services": [failed], "removed": ["gone"]})
    feed.send("update", {"seq": 2, "status": "error", "fresh": {"beta": now - 5000}})
    transition = {
        "id": "alpha:error:1",
        "event": "healthbus.service.error",
        "service": "alpha",
        "from": "healthy",
        "to": "error",
        "at": "2026-01-01T00:00:00.000Z",
        "at_ms": now,
        "reason": "the last iteration failed",
        "root_cause": "postgres",
    }
    feed.send("transition", transition)
    feed.send("transition", transition)  # redelivered after a resume: shown once

    expect(alpha).to_have_attribute("data-status", "error")
    expect(alpha.locator(".badge")).to_have_text("Error")
    expect(alpha.locator(".error")).to_have_text("boom")
    expect(p.locator(".svc").first).to_have_attribute("data-name", "alpha")
    expect(p.locator('.svc[data-name="gone"]')).to_have_count(0)
    expect(p.locator('.svc[data-name="beta"] time.tick')).to_have_text(re.compile(r"^[5-7] s ago$"))
    expect(p.locator("#banner")).to_have_attribute("data-status", "error")
    expect(p.locator("#transitions li")).to_have_count(1)
    expect(p.locator("#transitions li")).to_contain_text("alpha")
    expect(p.locator("#transitions li")).to_contain_text("caused by postgres")

    feed.snapshot = snapshot(service("alpha"), service("delta"))
    feed.drop()
    expect(p.locator("#conn")).to_be_visible()
    expect(p.locator("#conn")).to_have_text("reconnecting…")
    feed.accepting.set()
    expect(p.locator("#conn")).to_be_hidden()
    expect(p.locator(".svc")).to_have_count(2)
    expect(alpha).to_have_attribute("data-status", "healthy")
    expect(p.locator("#transitions li")).to_have_count(1)  # the timeline outlives a resume
    assert page.errors == []


def test_filter_box_and_status_chips(page: Page, site: str, feed: Feed) -> None:
    feed.snapshot = snapshot(
        service("api-probe", "error", "probe"),
        service("api-worker", "degraded"),
        service("mailer"),
        status="error",
    )
    p = page.page
    p.goto(site)
    expect(p.locator(".svc")).to_have_count(3)
    p.get_by_label("Filter services by name").fill("API")
    expect(p.locator(".svc")).to_have_count(2)

    error_chip = p.get_by_role("button", name="Error 1")
    error_chip.click()
    expect(error_chip).to_have_attribute("aria-pressed", "true")
    expect(p.locator(".svc")).to_have_count(1)
    expect(p.locator(".svc")).to_have_attribute("data-name", "api-probe")

    p.get_by_label("Filter services by name").fill("mail")
    expect(p.locator(".empty")).to_have_text("No service matches the filter.")
    error_chip.click()
    expect(p.locator(".svc")).to_have_count(1)
    expect(p.locator(".svc")).to_have_attribute("data-name", "mailer")


def test_without_an_aggregator_the_bus_says_so(page: Page, site: str, feed: Feed) -> None:
    feed.snapshot = {"gen": None, "seq": 0, "status": "unknown", "meta": None, "services": []}
    p = page.page
    p.goto(site)
    expect(p.locator("#bus")).to_have_attribute("data-state", "down")
    expect(p.locator("#bus-state")).to_contain_text("not running")
    expect(p.locator("#banner")).to_have_attribute("data-status", "unknown")
    expect(p.locator(".empty")).to_have_text("No services have reported yet.")

    stale = snapshot(service("alpha"))
    stale["meta"]["updated_at_ms"] -= 60_000
    feed.snapshot = stale
    feed.drop()
    feed.accepting.set()
    expect(p.locator("#bus")).to_have_attribute("data-state", "stale")
    expect(p.locator("#bus-state")).to_contain_text("stale")
