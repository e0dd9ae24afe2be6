"""The notifier: every configured destination, each with its own loop and consumer group."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import anyio

from healthbus.client import HealthBus, default_consumer
from healthbus.config import LOCAL_REDIS_URL, Config, NotifyRoute
from healthbus.connection import CONNECTION_ERRORS, Backoff
from healthbus.errors import BusUnavailable, ConfigError
from healthbus.notify.runner import RouteRunner
from healthbus.notify.send import AppriseSender, Sender

__all__ = ["Notifier"]

log = logging.getLogger("healthbus.notify")

_REDIS_DOWN: tuple[type[BaseException], ...] = (BusUnavailable, *CONNECTION_ERRORS)
#: A loop that ran this long before Redis failed was a recovery: back off from the start.
STEADY_S = 30.0


class Notifier:
    """Sends notifications for the transitions of one namespace to `config.notify`.

    Every URL is checked when the notifier is made, so a typo fails at start, not at 3 a.m.
    """

    def __init__(
        self,
        config: Config,
        *,
        name: str | None = None,
        sender: Callable[[NotifyRoute], Sender] = lambda route: AppriseSender(route.url),
    ) -> None:
        if not config.notify:
            raise ConfigError(
                "no notification destination: give --url URL (an Apprise URL) "
                "or [[healthbus.notify]] tables in the config file"
            )
        self.config = config
        self.consumer = name or default_consumer()
        self.senders = [sender(route) for route in config.notify]
        self.bus = HealthBus(config.redis_url or LOCAL_REDIS_URL, config.namespace)
        self.runners: Sequence[RouteRunner] = [
            RouteRunner(self.bus, config, route, s, self.consumer)
            for route, s in zip(config.notify, self.senders, strict=True)
        ]

    async def run(self) -> None:
        """Until cancelled; a Redis outage is waited out with backoff, never fatal."""
        try:
            async with anyio.create_task_group() as tg:
                for runner in self.runners:
                    log.info(
                        "notify: %s through consumer group %s",
                        runner.sender.destination,
                        runner.group,
                    )
                    tg.start_soon(self._keep_running, runner)
        finally:
            with anyio.move_on_after(5, shield=True):  # bounded: Redis may not answer
                await self.bus.aclose()

    async def wait_ready(self) -> None:
        """Until every destination's group exists and its pending entries were handled."""
        for runner in self.runners:
            await runner.ready.wait()

    async def _keep_running(self, runner: RouteRunner) -> None:
        backoff = Backoff(cap=5.0)
        while True:
            started = time.monotonic()
            try:
                await runner.run()
            except _REDIS_DOWN as exc:
                if time.monotonic() - started > STEADY_S:
                    backoff.reset()
                log.warning("notify %s: Redis unavailable (%s); retrying", runner.group, exc)
                await anyio.sleep(backoff.next_delay())
