"""The dashboard in Debian's chromium against the real stack: Redis, aggregator and web app.

Heartbeats go in with XADD, as any publisher sends them; the page must follow without reload.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from aggregator.runner import Aggregator
from healthbus.config import Config
from healthbus.embedded import free_port
from healthbus.web.app import create_app
from tests.apt import INSTALL_TIMEOUT_S
from tests.e2e.conftest import AsyncThread, Page
from tests.support import wait_until_sync
from tests.webserver import serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * INSTALL_TIMEOUT_S + 60)]
expect = pytest.importorskip("playwright.sync_api").expect

XSS = "<img src=x onerror=alert(1)>"
#: What the page must show within, for a change it was pushed (ms).
LIVE_MS = 5000
#: The acceptance: a failing service turns red within 2 s, without reload.
RED_MS = 2000
#: Reconnecting after the web server restarts: the browser's retry, then a resync.
RECONNECT_MS = 20_000


@pytest.fixture
def bus(config: Config) -> Iterator[redis.Redis]:
    assert config.redis_url
    client = redis.Redis.from_url(config.redis_url)
    yield client
    client.close()


@contextmanager
def leading(config: Config) -> Iterator[None]:
    """The aggregator, leading, in a thread of its own."""
    aggregator = Aggregator(config)
    with AsyncThread(aggregator.run):
        wait_until_sync(aggregator.is_leader.is_set)
        yield


@pytest.fixture
def site(config: Config) -> Iterator[str]:
    """The aggregator (leading) and the web app, as `healthbus serve` runs them."""
    with leading(config), serve(create_app(config)) as url:
        yield url


def beat(bus: redis.Redis, config: Config, service: str, **fields: Any) -> None:
    heartbeat = {"v": 1, "service": service, "interval_s": 60, "ok": True, **fields}
    bus.xadd(config.keys.heartbeats, {"m": json.dumps(heartbeat)})


def test_a_failing_service_turns_red_without_reload(
    page: Page, site: str, bus: redis.Redis, config: Config, artifacts: Any
) -> None:
    beat(bus, config, "schedule_deployments", duration_ms=142.0, details={"runs_scheduled": 42})
    beat(bus, config, "monitor_late_runs", duration_ms=88.0)
    beat(
        bus,
        config,
        "EventPersister",
        kind="consumer",
        interval_s=5,
        duration_ms=4.0,
        details={"queue_depth": 15, "queue_capacity": 50000, "consecutive_failures": 0},
    )
    beat(bus, config, "postgres", kind="probe", interval_s=15, duration_ms=2.3)
    p = page.page
    p.goto(site)
    expect(p.locator(".svc")).to_have_count(4)
    expect(p.locator('section[data-kind="consumer"] .svc-name')).to_have_text("EventPersister")
    expect(p.locator('section[data-kind="probe"] .svc-name')).to_have_text("postgres")
    expect(p.locator("#banner")).to_have_attribute("data-status", "healthy")
    expect(p.locator("#bus-state")).to_have_text("running")
    card = p.locator('.svc[data-name="monitor_late_runs"]')
    expect(card).to_have_attribute("data-status", "healthy")

    # Anything a publisher sends is text on the page, never markup.
    beat(
        bus,
        config,
        "monitor_late_runs",
        ok=False,
        duration_ms=31.0,
        error=f"{XSS} refused",
        hint=f"<b>{XSS}</b>",
        details={"<i>k</i>": XSS},
    )
    expect(card).to_have_attribute("data-status", "error", timeout=RED_MS)
    expect(card).to_have_css("border-left-color", "rgb(207, 34, 46)")  # the light theme's red
    expect(card.locator(".badge")).to_have_text("Error")
    expect(card.locator(".error")).to_have_text(f"{XSS} refused")
    expect(card.locator(".hint")).to_have_text(f"Hint: <b>{XSS}</b>")
    expect(card.locator(".kv")).to_have_text(f"<i>k</i>{XSS}")
    expect(p.locator(".svc").first).to_be_visible()
    expect(p.locator(".svc").first).to_have_attribute("data-name", "monitor_late_runs")
    expect(p.locator("#banner")).to_have_attribute("data-status", "error")
    expect(p.locator("#overall")).to_have_text("Error")
    expect(p.locator("#transitions li").first).to_contain_text("monitor_late_runs")
    expect(p.locator("#groups img, #groups b, #groups i")).to_have_count(0)
    p.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)

    beat(bus, config, "monitor_late_runs", duration_ms=12.0)
    expect(card).to_have_attribute("data-status", "healthy", timeout=LIVE_MS)
    expect(card.locator(".spark")).to_be_visible()  # durations seen during this page's life
    assert page.dialogs == []
    assert page.errors == []


def test_without_the_stream_the_page_reads_api_health(
    page: Page, site: str, bus: redis.Redis, config: Config
) -> None:
    p = page.page
    p.route("**/api/health/stream", lambda route: route.abort())
    beat(bus, config, "nightly_backup", ok=False, error="disk full")
    p.goto(site)
    expect(p.locator("#conn")).to_be_visible()
    card = p.locator('.svc[data-name="nightly_backup"]')
    expect(card).to_have_attribute("data-status", "error", timeout=LIVE_MS * 2)
    expect(card.locator(".error")).to_have_text("disk full")
    expect(p.locator("#bus-state")).to_have_text("running")
    assert page.errors == []


def test_after_the_web_server_restarts_the_page_is_current_again(
    page: Page, config: Config, bus: redis.Redis, artifacts: Any
) -> None:
    port = free_port()
    beat(bus, config, "api", duration_ms=12.0)
    beat(bus, config, "worker", duration_ms=30.0)
    p = page.page
    with leading(config):
        with serve(create_app(config), port) as url:
            p.goto(url)
            expect(p.locator(".svc")).to_have_count(2)
            expect(p.locator("#conn")).to_be_hidden()
        expect(p.locator("#conn")).to_be_visible(timeout=LIVE_MS)
        beat(bus, config, "worker", ok=False, error="lost the database")  # while it is down
        card = p.locator('.svc[data-name="worker"]')
        expect(card).to_have_attribute("data-status", "healthy")
        with serve(create_app(config), port):
            expect(card).to_have_attribute("data-status", "error", timeout=RECONNECT_MS)
            expect(p.locator("#conn")).to_be_hidden()
            expect(card.locator(".error")).to_have_text("lost the database")
            expect(p.locator("#transitions li").first).to_contain_text("worker")
            expect(p.locator("#incidents li")).to_have_count(1)
            expect(p.locator("#incidents li")).to_contain_text("ongoing")
            p.screenshot(path=str(artifacts / "dashboard-reconnected.png"), full_page=True)

            p.reload()  # the history comes from the API, not from this page's life
            expect(p.locator("#transitions li")).to_have_count(3)
            expect(p.locator("#incidents li")).to_have_count(1)
    assert page.errors == []


def test_a_service_page_shows_uptime_durations_and_transitions_as_text(
    page: Page, site: str, bus: redis.Redis, config: Config, artifacts: Any
) -> None:
    beat(bus, config, "billing", duration_ms=40.0, details={"queue_depth": 3})
    p = page.page
    p.goto(site)
    p.locator('.svc[data-name="billing"] a.svc-name').click()
    expect(p).to_have_url(f"{site}/#/service/billing")
    expect(p.locator("#svc-title")).to_have_text("billing")
    expect(p.locator("#home")).to_be_hidden()
    beat(bus, config, "billing", ok=False, error=XSS, hint=XSS, details={"why": XSS})
    live = p.locator('#svc-card .svc[data-name="billing"]')
    expect(live).to_have_attribute("data-status", "error", timeout=RED_MS)
    expect(live.locator(".error")).to_have_text(XSS)
    expect(p.locator("#svc-transitions li")).to_have_count(2)
    expect(p.locator("#svc-transitions li").first).to_contain_text(XSS)  # the reason quotes it
    expect(p.locator("#uptime .day")).to_have_count(90)
    expect(p.locator("#uptime .day").last).to_have_attribute("data-state", "error", timeout=LIVE_MS)
    expect(p.locator("#uptime .day").first).to_have_attribute("data-state", "none")
    expect(p.locator("#history-note")).to_have_text("")  # from the SLA rollups: no caveat
    expect(p.locator("#sla")).to_contain_text("1 incident")
    expect(p.locator("#service-page img, #service-page b")).to_have_count(0)
    p.screenshot(path=str(artifacts / "service.png"), full_page=True)
    p.locator("a.back").click()
    expect(p.locator("#home")).to_be_visible()
    expect(p.locator("#incidents li").first).to_contain_text("billing")
    assert page.dialogs == []
    assert page.errors == []


def test_with_a_token_the_page_signs_in_for_details(
    page: Page, config: Config, bus: redis.Redis
) -> None:
    config = config.replace(token="s3cret")
    beat(bus, config, "db", ok=False, error="password authentication failed")
    with leading(config), serve(create_app(config)) as url:
        p = page.page
        p.goto(url)
        card = p.locator('.svc[data-name="db"]')
        expect(card).to_have_attribute("data-status", "error")
        expect(card.locator(".error")).to_have_count(0)  # withheld
        expect(p.locator("#no-incidents")).to_have_text("Sign in to see the history.")
        p.locator("#signin").click()
        p.locator("#token").fill("wrong")
        p.locator("#login button[type=submit]").click()
        expect(p.locator("#login-error")).to_have_text("Wrong token.")
        p.locator("#token").fill("s3cret")
        p.locator("#login button[type=submit]").click()
        expect(card.locator(".error")).to_have_text("password authentication failed")
        expect(p.locator("#incidents li")).to_have_count(1)
        expect(p.locator("#signout")).to_be_visible()
        p.locator("#signout").click()
        expect(p.locator("#signin")).to_be_visible()
        expect(card.locator(".error")).to_have_count(0)
    assert page.errors == []
