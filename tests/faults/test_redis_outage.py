"""Redis stopped (SIGSTOP) for 10 s, then killed and restarted empty, while 1 000 heartbeats a
second flow from a `Publisher` in this process to a `healthbus aggregator`, a `healthbus web`
with an SSE client, and a consumer-group reader (`healthbus tail --group`).

The outage must cost nothing but heartbeats: publish() never blocks nor raises and its buffer
stays within its cap; the aggregator writes the state back by itself; no service is reported
down for the bus's own outage; the SSE client gets a fresh `snapshot`, not an error or an end;
the group reader gets its group back (NOGROUP) and goes on.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from healthbus.config import Config
from healthbus.embedded import RedisServer
from healthbus.schema import Meta, Transition, encode
from publishers import Publisher
from tests.faults.conftest import Figures, Processes, theirs
from tests.support import wait_until
from tests.webserver import RawEvent, open_stream

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.fault]

RATE = 1000  # heartbeats a second
SERVICES = 50  # each heartbeats 20 times a second, promising once a second
INTERVAL_S = 1.0
WARM_S = 3.0
FROZEN_S = 10.0
AFTER_S = 3.0
BUFFER = 10_000
BATCH = 500
STEADY_INTERVAL_S = 1
STEADY = {"v": 1, "service": "steady", "interval_s": STEADY_INTERVAL_S, "ok": True}


@pytest.fixture
def config(own_redis: RedisServer, namespace: str) -> Config:
    return Config(redis_url=own_redis.url, namespace=namespace)


@pytest.fixture
async def redis(config: Config) -> AsyncIterator[aioredis.Redis]:
    assert config.redis_url
    client = aioredis.Redis.from_url(config.redis_url, socket_timeout=1, socket_connect_timeout=1)
    yield client
    await client.aclose()


@dataclass
class Load:
    """A bounded publishing loop on a thread of its own: RATE calls a second until `stop`
    or `limit` calls, each call timed."""

    publisher: Publisher
    limit: int
    stop: threading.Event = field(default_factory=threading.Event)
    times: list[float] = field(default_factory=list)
    error: BaseException | None = None
    max_queued: int = 0

    def run(self) -> None:
        start = time.perf_counter()
        try:
            for i in range(self.limit):
                if self.stop.is_set():
                    return
                t = time.perf_counter()
                self.publisher.publish(f"svc{i % SERVICES}", interval_s=INTERVAL_S)
                self.times.append(time.perf_counter() - t)
                if i % 20 == 19:
                    self.max_queued = max(self.max_queued, self.publisher.stats.queued)
                    time.sleep(max(0.0, start + (i + 1) / RATE - time.perf_counter()))
        except BaseException as exc:  # recorded: the assertion is that there is none
            self.error = exc


async def meta(redis: aioredis.Redis, config: Config) -> Meta | None:
    try:
        raw = await redis.hget(config.keys.snapshot, "_meta")
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
        return None
    return msgspec.json.decode(raw, type=Meta) if raw else None


async def test_frozen_then_emptied_redis_under_load(
    own_redis: RedisServer,
    config: Config,
    redis: aioredis.Redis,
    processes: Processes,
    figures: Figures,
) -> None:
    processes.start("aggregator", "aggregator", "--name", "agg")
    url, _ = processes.web(env={"HEALTHBUS_SSE_PING_S": "1"})
    processes.start("tail", "tail", "--group", "faults", "--json")
    publisher = Publisher(
        own_redis.url, config.namespace, instance="load", buffer_size=BUFFER, batch_size=BATCH
    )
    seconds = WARM_S + FROZEN_S + 30 + AFTER_S
    load = Load(publisher, limit=int(RATE * seconds))
    thread = threading.Thread(target=load.run, name="load", daemon=True)
    events: list[tuple[float, RawEvent]] = []

    async def read(client: httpx.AsyncClient) -> None:
        async with open_stream(client, url) as reader:
            while True:
                event = await reader.next(timeout=30)
                events.append((time.monotonic(), event))

    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, client)
                thread.start()
                first = await wait_until(
                    lambda: _with_services(redis, config, SERVICES), timeout=20
                )
                await anyio.sleep(WARM_S)
                sent_before = publisher.stats.sent

                own_redis.pause()
                await anyio.sleep(FROZEN_S)
                frozen_stats = publisher.stats
                own_redis.restart()
                restarted_at = time.monotonic()

                async def new_gen() -> Meta | None:
                    m = await _with_services(redis, config, SERVICES)
                    return m if m is not None and m.gen != first.gen else None

                second = await wait_until(new_gen, timeout=30)
                recovered_s = time.monotonic() - restarted_at
                publisher.publish("after-restart", interval_s=60)
                resync = await wait_until(
                    lambda: _snapshot_of(events, second.gen, restarted_at), timeout=15
                )
                await wait_until(
                    lambda: _logged(processes, "tail", '"service":"after-restart"'), timeout=15
                )
                await anyio.sleep(AFTER_S)
                load.stop.set()
                await anyio.to_thread.run_sync(thread.join, 10)
                tg.cancel_scope.cancel()
    finally:
        load.stop.set()
        publisher.close(timeout=2)

    # The publisher: never raised, never blocked, memory within its cap.
    assert load.error is None, repr(load.error)
    times = sorted(load.times)
    p99_us = times[int(len(times) * 0.99)] * 1e6
    max_us = times[-1] * 1e6
    assert load.max_queued <= BUFFER + BATCH
    assert publisher.stats.sent > sent_before
    # No service reported down for the bus's own outage, by any reader. (The bus's own
    # service, `healthbus.aggregator`, may say that the bus had trouble: that is its job.)
    transitions = [t for _, e in events if e.event == "transition" if theirs(t := e.json())]
    assert {t["event"] for t in transitions} <= {"healthbus.service.appeared"}, transitions
    views = [
        v for _, e in events if e.event in ("snapshot", "update") for v in e.json()["services"]
    ]
    assert {v["status"] for v in views if theirs(v)} <= {"healthy"}
    final = await redis.hgetall(config.keys.snapshot)
    statuses = [json.loads(v)["status"] for k, v in final.items() if theirs({"name": k.decode()})]
    assert statuses == ["healthy"] * (SERVICES + 1)  # "after-restart" too
    tail = [t for line in _lines(processes, "tail") if theirs(t := json.loads(line))]
    assert {t["event"] for t in tail} <= {"healthbus.service.appeared"}, tail
    # The aggregator lived through it, and said what it saw.
    assert all(p.poll() is None for p in processes.started)
    assert "Redis unavailable" in processes.log("aggregator") or "did not answer" in (
        processes.log("aggregator")
    )
    figures.update(
        rate_per_s=RATE,
        services=SERVICES,
        frozen_s=FROZEN_S,
        publish_calls=len(times),
        publish_p50_us=round(times[len(times) // 2] * 1e6, 1),
        publish_p99_us=round(p99_us, 1),
        publish_max_us=round(max_us, 1),
        publisher_max_queued=load.max_queued,
        publisher_cap=BUFFER + BATCH,
        dropped_while_frozen=frozen_stats.dropped,
        dropped_total=publisher.stats.dropped,
        sent_total=publisher.stats.sent,
        aggregator_recovered_s=round(recovered_s, 2),
        sse_resync_after_restart_s=round(resync - restarted_at, 2),
        sse_events=len(events),
        blind_ms_after=second.blind_ms,
    )


async def _with_services(redis: aioredis.Redis, config: Config, n: int) -> Meta | None:
    m = await meta(redis, config)
    return m if m is not None and m.services >= n else None


async def _snapshot_of(
    events: list[tuple[float, RawEvent]], gen: str, after: float
) -> float | None:
    """When the SSE client got a `snapshot` of generation `gen` (after `after`)."""
    for at, event in events:
        if at > after and event.event == "snapshot" and (event.id or "").startswith(gen + "-"):
            return at
    return None


def _lines(processes: Processes, name: str) -> list[str]:
    return [line for line in processes.log(name).splitlines() if line.startswith("{")]


async def _logged(processes: Processes, name: str, needle: str) -> bool:
    return needle in processes.log(name)


async def test_redis_emptied_while_the_aggregator_was_stopped(
    config: Config, redis: aioredis.Redis, processes: Processes
) -> None:
    """The aggregator is stopped (SIGSTOP) while its read waits; a failing service's first
    heartbeat answers that read, then a steady service heartbeats for three intervals, then
    Redis is flushed. Resumed, the aggregator folds the failing heartbeat, its commit is
    refused (the lease went with the data), and it writes what it knows again as a new
    generation. Nothing may be lost or made up on the way: the `error` transition it could
    not commit is in the new generation, and the steady service, whose heartbeats were
    flushed unread (blind time), was never reported silent."""
    aggregator = processes.start("aggregator", "aggregator", "--name", "agg")
    steady = _Steady(redis, config.keys.heartbeats)
    async with anyio.create_task_group() as tg:
        tg.start_soon(steady.run)
        first = await wait_until(lambda: _with_services(redis, config, 1), timeout=20)
        steady.held = True
        flaky = {"v": 1, "service": "flaky", "interval_s": 60, "ok": False, "error": "boom"}
        for _ in range(20):  # stopped while Redis holds its read open: the entry answers it
            await wait_until(lambda: _reading(redis))
            aggregator.send_signal(signal.SIGSTOP)
            if await _reading(redis):
                await redis.xadd(config.keys.heartbeats, {"m": encode(flaky)})
                break
            aggregator.send_signal(signal.SIGCONT)
        else:
            raise AssertionError("never stopped the aggregator while its read was open")
        steady.held = False
        await anyio.sleep(3 * STEADY_INTERVAL_S)  # heartbeats it cannot read before the flush
        await redis.flushall()
        aggregator.send_signal(signal.SIGCONT)

        async def rewritten() -> Meta | None:
            m = await _with_services(redis, config, 2)
            return m if m is not None and m.gen != first.gen and m.seq > 1 else None

        second = await wait_until(rewritten, timeout=20)
        tg.cancel_scope.cancel()

    rows = await redis.xrange(config.keys.transitions)
    transitions = [msgspec.json.decode(f[b"m"], type=Transition) for _, f in rows]
    mine = [(t.service, t.event) for t in transitions if theirs(t.service)]
    assert ("flaky", "healthbus.service.error") in mine, mine
    assert {e for s, e in mine if s == "steady"} <= {"healthbus.service.appeared"}, mine
    snapshot = await redis.hgetall(config.keys.snapshot)
    assert json.loads(snapshot[b"flaky"])["status"] == "error"
    assert json.loads(snapshot[b"steady"])["status"] == "healthy"
    assert second.blind_ms >= 2 * STEADY_INTERVAL_S * 1000, second


@dataclass
class _Steady:
    """A service heartbeating every 0.2 s (interval 1 s), unless `held`, for at most a
    minute (the test cancels it long before)."""

    redis: aioredis.Redis
    key: str
    held: bool = False

    async def run(self) -> None:
        for _ in range(300):
            if not self.held:
                with contextlib.suppress(aioredis.ConnectionError, aioredis.TimeoutError):
                    await self.redis.xadd(self.key, {"m": encode(STEADY)})
            await anyio.sleep(0.2)


async def _reading(redis: aioredis.Redis) -> bool:
    """Whether Redis holds the aggregator's read open (blocked in XREAD)."""
    clients = await redis.client_list()
    return any(
        c["name"] == "healthbus-aggregator" and c["cmd"] == "xread" and "b" in c["flags"]
        for c in clients
    )
