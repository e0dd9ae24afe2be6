"""`ConsumerReporter` against a real Redis and aggregator: the consumer rules read its reports,
a stuck consumer goes stale, and a stop says goodbye."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator

import msgspec
import pytest
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.schema import Heartbeat, ServiceView, decode_heartbeat
from publishers import ConsumerReporter, Publisher
from tests.support import wait_until

pytestmark = pytest.mark.anyio

INTERVAL = 0.2


@pytest.fixture
def publisher(config: Config) -> Iterator[Publisher]:
    with Publisher.from_config(config, flush_interval_s=0.01) as p:
        yield p


def shows(
    redis: aioredis.Redis, config: Config, service: str, status: str, reason: str
) -> Callable[[], Awaitable[bool]]:
    """A poll for `service` having `status` for a reason that starts with `reason`."""

    async def check() -> bool:
        raw = await redis.hget(config.keys.snapshot, service)
        view = msgspec.json.decode(raw, type=ServiceView) if raw else None
        return view is not None and view.status == status and view.reason.startswith(reason)

    return check


async def test_failures_and_backlog_drive_the_consumer_rules_then_goodbye(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config, publisher: Publisher
) -> None:
    depth = [0]
    reporter = ConsumerReporter(
        "EventPersister",
        interval=INTERVAL,
        capacity=100,
        depth=lambda: depth[0],
        stall_after=60,
        publisher=publisher,
    )
    with reporter:
        with reporter.batch(10):
            pass
        await wait_until(shows(redis, config, "EventPersister", "healthy", "ok"))
        with pytest.raises(TimeoutError), reporter.batch(10):
            raise TimeoutError("postgres statement timeout")
        await wait_until(
            shows(redis, config, "EventPersister", "degraded", "1 consecutive failure(s)")
        )
        for _ in range(4):
            reporter.record(failed=3, duration=0.05, error="TimeoutError: again")
        await wait_until(shows(redis, config, "EventPersister", "error", "5 consecutive failures"))
        reporter.record(processed=5)
        depth[0] = 100
        await wait_until(shows(redis, config, "EventPersister", "error", "queue full (100 of 100)"))

    async def said_goodbye() -> list[Heartbeat]:
        beats = [decode_heartbeat(f[b"m"]) for _, f in await redis.xrange(config.keys.heartbeats)]
        return beats if beats[-1].goodbye else []

    beats = await wait_until(said_goodbye)
    assert beats[-1].kind == "consumer"
    last = beats[-2]
    assert last.details is not None and last.details["processed"] == 15
    assert (last.details["failed"], last.details["queue_capacity"]) == (22, 100)


async def test_a_stuck_consumer_goes_stale_and_recovers(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config, publisher: Publisher
) -> None:
    release = threading.Event()
    reporter = ConsumerReporter("Mailer", interval=INTERVAL, stall_after=0.3, publisher=publisher)

    def hung_batch() -> None:
        with reporter.batch():
            release.wait(30)

    with reporter:
        await wait_until(shows(redis, config, "Mailer", "healthy", "ok"))
        worker = threading.Thread(target=hung_batch)
        worker.start()
        try:
            await wait_until(shows(redis, config, "Mailer", "degraded", "no heartbeat for"))
        finally:
            release.set()
            worker.join(5)
        await wait_until(shows(redis, config, "Mailer", "healthy", "ok"))
