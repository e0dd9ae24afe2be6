"""Browser fixtures: Debian's chromium driven by Playwright; a coroutine in a thread.

No browser is ever downloaded. When /usr/bin/chromium is missing, a root user with apt gets it
installed once per session (bounded in time); anyone else gets a skip that says what to do.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.apt import install
from tests.support import wait_until_sync

CHROMIUM = Path(os.environ.get("HEALTHBUS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a chromium binary, installed if missing and possible, else a skip."""
    why = install("chromium", CHROMIUM)
    if why is not None:
        pytest.skip(
            f"browser tests need Debian's chromium at {CHROMIUM} (or HEALTHBUS_CHROMIUM): "
            f"{why}; run `apt-get install -y chromium`"
        )
    return str(CHROMIUM)


@pytest.fixture
def browser(chromium: str) -> Iterator[Any]:
    """Per test: Playwright's sync API keeps an event loop running in this thread while it is
    open, which would stop any later anyio test from running its own."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="browser tests need `pip install playwright` (no browser)"
    )
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A fresh page that records dialogs and uncaught errors, so a test can assert on both."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield Page(context.new_page())
    context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class AsyncThread:
    """Runs one coroutine in an event loop of its own thread; cancels it on exit.

    Cancelled through an anyio cancel scope, as `healthbus serve`'s task group cancels it:
    the scope cancels again at every await until the coroutine is done. A bare
    `Task.cancel()` is delivered once, and Python 3.11's `asyncio.wait_for` (redis-py
    sends every command through it) drops it when the send completes in the same loop
    turn: the aggregator then ran on (about one cancel in a hundred, measured)."""

    def __init__(self, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.main = main
        self.loop = asyncio.new_event_loop()
        self.scope: anyio.CancelScope | None = None
        self.thread = threading.Thread(target=self._run, name="async", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._scoped())
        finally:
            self.loop.close()

    async def _scoped(self) -> None:
        with anyio.CancelScope() as self.scope:
            await self.main()

    def __enter__(self) -> AsyncThread:
        self.thread.start()
        wait_until_sync(lambda: self.scope is not None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive() and self.scope is not None:
            self.loop.call_soon_threadsafe(self.scope.cancel)
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the coroutine did not stop when cancelled"
