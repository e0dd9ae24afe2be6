"""Notifications through real Redis, a real aggregator and a real HTTP receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.client import HealthBus
from healthbus.config import Config, NotifyRoute
from healthbus.notify.notifier import Notifier
from healthbus.notify.plan import Plan
from healthbus.notify.runner import route_group
from healthbus.notify.store import NotifyStore
from healthbus.schema import encode
from tests.receiver import Receiver
from tests.support import wait_until
from tests.webserver import transition

pytestmark = pytest.mark.anyio

FAST = {"notify_group_wait_s": 0.3, "notify_retry_max_s": 0.2, "notify_claim_idle_s": 1.0}


@asynccontextmanager
async def running(
    config: Config, *urls: str, name: str | None = None, **changes: Any
) -> AsyncIterator[Notifier]:
    routes = tuple(NotifyRoute(url=url) for url in urls)
    notifier = Notifier(config.replace(notify=routes, **{**FAST, **changes}), name=name)
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        await wait_until(lambda: _true(all(r.ready.is_set() for r in notifier.runners)))
        yield notifier
        tg.cancel_scope.cancel()


async def _true(value: bool) -> bool:
    return value


async def beat(redis: aioredis.Redis, config: Config, service: str, **fields: Any) -> None:
    message = {"v": 1, "service": service, "interval_s": 3600, "ok": True, **fields}
    await redis.xadd(config.keys.heartbeats, {"m": encode(message)})


async def received(receiver: Receiver, n: int) -> list[dict[str, Any]]:
    messages = receiver.messages()
    assert len(messages) <= n, messages
    return messages if len(messages) == n else []


async def settled(redis: aioredis.Redis, config: Config) -> bool:
    """Every notify group has read the whole transitions stream and acked all of it."""
    last = await redis.xrevrange(config.keys.transitions, count=1)
    last_id = last[0][0] if last else b"0-0"
    groups = await redis.xinfo_groups(config.keys.transitions)
    ours = [g for g in groups if g["name"].startswith(b"notify.")]
    return bool(ours) and all(g["pending"] == 0 and g["last-delivered-id"] == last_id for g in ours)


async def assert_every_key_expires(redis: aioredis.Redis, config: Config) -> None:
    """The notifier's keys: the capped dead-letter stream, the rest with a TTL."""
    keys = [k async for k in redis.scan_iter(match=config.keys.prefix + "notify:*")]
    assert keys
    for key in keys:
        if key != config.keys.notify_deadletters.encode():
            assert await redis.pttl(key) > 0, key


async def test_one_message_when_failing_one_when_recovered(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    with Receiver() as receiver:
        async with running(config, receiver.url, dashboard_url="https://health.example/"):
            await beat(redis, config, "db", ok=False, error="connection refused")
            (alert,) = await wait_until(lambda: received(receiver, 1))
            await beat(redis, config, "db")
            _, resolve = await wait_until(lambda: received(receiver, 2))
            await wait_until(lambda: settled(redis, config))
        await assert_every_key_expires(redis, config)
    assert len(receiver.messages()) == 2
    assert (alert["title"], alert["type"]) == ("db is in error", "failure")
    assert "Why: failed: connection refused" in alert["message"]
    assert "Dashboard: https://health.example/" in alert["message"]
    assert resolve["title"].startswith("db recovered after") and resolve["type"] == "success"
    assert "ref: db:recovered:" in resolve["message"]


async def test_a_cascade_is_one_message_naming_the_root_cause(
    redis: aioredis.Redis, config: Config
) -> None:
    at = 1_700_000_000_000
    cascade = [transition("postgres", "healthy", "error", at)] + [
        msgspec.structs.replace(
            transition(name, "healthy", "error", at + 200 * i),
            root_cause="postgres",
            suppressed=True,
        )
        for i, name in enumerate(("api", "worker", "scheduler"), start=1)
    ]
    with Receiver() as receiver:
        async with running(config, receiver.url):
            for t in cascade:
                await redis.xadd(config.keys.transitions, {"m": encode(t)})
            (message,) = await wait_until(lambda: received(receiver, 1))
            await wait_until(lambda: settled(redis, config))
    assert message["title"] == "postgres is in error: 3 dependants affected"
    assert "Affected because postgres is failing: api, worker, scheduler" in message["message"]


async def test_messages_wait_out_a_receiver_outage(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    receiver = Receiver()  # down: nothing listens yet
    async with running(config, receiver.url) as notifier:
        await beat(redis, config, "db", ok=False, error="disk full")
        await wait_until(lambda: _true(notifier.runners[0].failing_since is not None))
        await beat(redis, config, "db")
        await wait_until(lambda: _transitions(redis, config, 2))
        with receiver:
            alert, resolve = await wait_until(lambda: received(receiver, 2), timeout=20)
            await wait_until(lambda: settled(redis, config))
    assert alert["title"] == "db is in error" and resolve["title"].startswith("db recovered")
    assert await redis.xlen(config.keys.notify_deadletters) == 0


async def _transitions(redis: aioredis.Redis, config: Config, n: int) -> bool:
    return int(await redis.xlen(config.keys.transitions)) >= n


async def test_a_destination_failing_too_long_is_dead_lettered_with_the_reason(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    with Receiver() as receiver:
        receiver.status = 500
        async with running(config, receiver.url, notify_give_up_s=0.5):
            await beat(redis, config, "db", ok=False, error="disk full")
            await wait_until(lambda: settled(redis, config))
            ((_, letter),) = await redis.xrange(config.keys.notify_deadletters)
    assert receiver.refused >= 2 and not receiver.messages()
    assert b"500" in letter[b"reason"] and letter[b"title"] == b"db is in error"
    assert letter[b"keys"].startswith(b"db:error:")
    assert b"127.0.0.1" in letter[b"destination"]


async def test_two_notifiers_send_each_message_once(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    services = [f"svc{i}" for i in range(6)]
    with Receiver() as receiver:
        async with running(config, receiver.url, name="a", notify_group_wait_s=0):
            async with running(config, receiver.url, name="b", notify_group_wait_s=0):
                for name in services:
                    await beat(redis, config, name, ok=False, error="boom")
                    await wait_until(lambda: settled(redis, config))
                for name in services:
                    await beat(redis, config, name)
                await wait_until(lambda: settled(redis, config))
    refs = [m["message"].rsplit("ref: ", 1)[1] for m in receiver.messages()]
    keys = [key for ref in refs for key in ref.split(", ")]
    assert len(keys) == len(set(keys)) == 2 * len(services)


@pytest.mark.parametrize("marked", [False, True], ids=["died-before-send", "died-before-ack"])
async def test_a_dead_notifiers_pending_work_is_taken_over_once(
    redis: aioredis.Redis, config: Config, marked: bool
) -> None:
    """A notifier died holding a transition: before sending it, or after sending and
    marking it but before the ack. The next one sends it exactly when it was not sent."""
    t = transition("db", "healthy", "error")
    with Receiver() as receiver:
        group = route_group(config.notify_group, receiver.url)
        async with HealthBus.from_config(config) as bus:
            await bus.ensure_group(group)
            await redis.xadd(config.keys.transitions, {"m": encode(t)})
            ((_, got),) = await bus.read_transitions(group, "dead", block_ms=1000)
            assert got == t
            if marked:
                store = NotifyStore(bus, group, token="x", lock_ms=1000, deadletters_maxlen=10)
                await store.commit(Plan(), [t.id])
        async with running(config, receiver.url):
            await wait_until(lambda: settled(redis, config))
            if not marked:
                await wait_until(lambda: received(receiver, 1))
            async with HealthBus.from_config(config) as bus:
                assert "dead" in await bus.forget_consumers(group, idle_ms=0)
    assert len(receiver.messages()) == (0 if marked else 1)


async def test_reminders_repeat_until_the_resolve(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    with Receiver() as receiver:
        async with running(config, receiver.url, notify_repeat_s=1.0):
            await beat(redis, config, "db", ok=False, error="disk full")
            first, reminder = await wait_until(lambda: received(receiver, 2))
            await beat(redis, config, "db")
            messages = await wait_until(
                lambda: _true(any("recovered" in m["title"] for m in receiver.messages()))
            )
    assert messages and first["title"] == "db is in error"
    assert reminder["title"].startswith("db still in error")
    assert "repeat:1" in reminder["message"]
