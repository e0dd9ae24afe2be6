"""The dashboard in Debian's chromium against the real stack: Redis, aggregator and web app.

Heartbeats go in with XADD, as any publisher sends them; the page must follow without reload.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from aggregator.runner import Aggregator
from healthbus.config import Config
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


@pytest.fixture
def bus(config: Config) -> Iterator[redis.Redis]:
    assert config.redis_url
    client = redis.Redis.from_url(config.redis_url)
    yield client
    client.close()


@pytest.fixture
def site(config: Config) -> Iterator[str]:
    """The aggregator (leading) and the web app, as `healthbus serve` runs them."""
    aggregator = Aggregator(config)
    with AsyncThread(aggregator.run):
        wait_until_sync(aggregator.is_leader.is_set)
        with serve(create_app(config)) as url:
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
    expect(card).to_have_attribute("data-status", "error", timeout=LIVE_MS)
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
