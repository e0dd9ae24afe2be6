"""The publisher against real Redis servers: delivery, outages, goodbyes, async use."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import anyio
import pytest
import redis

from healthbus.config import Config
from healthbus.embedded import RedisServer, free_port
from healthbus.errors import BusUnavailable, InvalidMessage
from healthbus.keys import Keys
from healthbus.schema import Heartbeat, decode_heartbeat
from publishers import Publisher, publish_once
from tests.support import wait_until, wait_until_sync


def read_stream(url: str, namespace: str) -> list[tuple[str, Heartbeat]]:
    """Every heartbeat in the namespace's stream, decoded (each must be valid)."""
    client = redis.Redis.from_url(url)
    try:
        entries = client.xrange(Keys(namespace).heartbeats)
    finally:
        client.close()
    return [(entry_id.decode(), decode_heartbeat(fields[b"m"])) for entry_id, fields in entries]


def services_in(url: str, namespace: str, where: Callable[[Heartbeat], bool]) -> set[str]:
    return {hb.service for _, hb in read_stream(url, namespace) if where(hb)}


def restart_same_port(server: RedisServer) -> None:
    """`server.restart()`, closing the dead process's stderr pipe, which restart() leaves open
    (a ResourceWarning, an error under this suite's filterwarnings)."""
    server.kill()
    if server.process is not None and server.process.stderr is not None:
        server.process.stderr.close()
    server.start()


def test_heartbeats_arrive_as_valid_json(config: Config) -> None:
    assert config.redis_url
    with Publisher.from_config(config) as publisher:
        publisher.publish("alpha", interval_s=5, duration_ms=12.5, details={"runs": 3})
        publisher.publish(
            "beta",
            interval_s=2,
            ok=False,
            kind="probe",
            status="error",
            error="connect redis://app:hunter2@cache:6379 failed, password=hunter2",
            depends_on=["alpha"],
        )
        wait_until_sync(lambda: publisher.stats.sent == 2)
        entries = read_stream(config.redis_url, config.namespace)
        assert publisher.stats.connected and publisher.stats.last_error is None
    alpha, beta = entries[0][1], entries[1][1]
    assert (alpha.service, alpha.details, alpha.duration_ms) == ("alpha", {"runs": 3}, 12.5)
    assert alpha.instance == publisher.instance and alpha.boot == publisher.boot
    assert (alpha.n, beta.n) == (0, 1)
    assert beta.ok is False and beta.kind == "probe" and beta.depends_on == ["alpha"]
    assert beta.error and "hunter2" not in beta.error and "app:***@cache" in beta.error


def test_close_says_goodbye_for_every_service_and_instance(config: Config) -> None:
    assert config.redis_url
    publisher = Publisher(config.redis_url, config.namespace)
    publisher.publish("a", interval_s=5)
    publisher.publish("b", interval_s=7, kind="consumer")
    publisher.publish("a", interval_s=5, instance="replica-2")
    publisher.publish("a", interval_s=5)
    publisher.close()
    assert publisher.stats.queued == 0 and publisher.stats.sent == 7
    goodbyes = [hb for _, hb in read_stream(config.redis_url, config.namespace) if hb.goodbye]
    assert len(goodbyes) == 3
    assert {(hb.service, hb.instance, hb.interval_s, hb.kind) for hb in goodbyes} == {
        ("a", publisher.instance, 5, "perpetual"),
        ("a", "replica-2", 5, "perpetual"),
        ("b", publisher.instance, 7, "consumer"),
    }
    publisher.close()  # idempotent: no second round of goodbyes
    assert len(read_stream(config.redis_url, config.namespace)) == 7


def test_buffer_keeps_the_newest_when_it_overflows(config: Config) -> None:
    """The thread sleeps until close(): what reaches Redis is the newest ten (with goodbye)."""
    assert config.redis_url
    publisher = Publisher(
        config.redis_url, config.namespace, buffer_size=10, batch_size=1000, flush_interval_s=60
    )
    for i in range(25):
        publisher.publish("svc", interval_s=5, details={"i": i})
    publisher.close()
    beats = [hb for _, hb in read_stream(config.redis_url, config.namespace)]
    assert [hb.n for hb in beats] == [*range(16, 25), 25]
    assert beats[-1].goodbye and publisher.stats.dropped == 16


def test_explicit_heartbeat_and_goodbye(config: Config) -> None:
    assert config.redis_url
    with Publisher.from_config(config, instance="fixed-1") as publisher:
        publisher.publish_heartbeat(Heartbeat(v=1, service="job", interval_s=60, ok=True))
        publisher.publish_heartbeat(
            Heartbeat(v=1, service="job", interval_s=60, ok=True, goodbye=True)
        )
    beats = [hb for _, hb in read_stream(config.redis_url, config.namespace)]
    assert [(hb.instance, hb.goodbye, hb.n) for hb in beats] == [
        ("fixed-1", False, 0),
        ("fixed-1", True, 1),
    ]  # the explicit goodbye is not repeated at close


def test_invalid_heartbeats_are_counted_and_the_thread_survives(config: Config) -> None:
    assert config.redis_url
    with Publisher.from_config(config) as publisher:
        nested: dict[str, object] = {"nested": {"x": 1}}
        publisher.publish("nested", interval_s=5, details=nested)  # type: ignore[arg-type]
        publisher.publish("opaque", interval_s=5, details={"k": object()})  # type: ignore[dict-item]
        publisher.publish("fine", interval_s=5)
        wait_until_sync(lambda: publisher.stats.sent == 2)
        stats = publisher.stats
    assert stats.invalid == 2 and stats.last_error
    client = redis.Redis.from_url(config.redis_url)
    raw = [fields[b"m"] for _, fields in client.xrange(Keys(config.namespace).heartbeats)]
    client.close()
    # The malformed one still went out, so the aggregator can flag that publisher as broken.
    assert b'"nested"' in raw[0] and b'"fine"' in raw[1]
    assert all(b'"goodbye":true' in m for m in raw if b'"opaque"' in m)


@pytest.mark.fault
def test_publish_does_no_io_while_redis_is_frozen(own_redis: RedisServer, namespace: str) -> None:
    publisher = Publisher(own_redis.url, namespace, buffer_size=1000, batch_size=100)
    publisher.publish("warm", interval_s=1)
    wait_until_sync(lambda: publisher.stats.sent == 1)
    own_redis.pause()
    try:
        slowest = 0.0
        for i in range(10_000):
            start = time.perf_counter()
            publisher.publish("svc", interval_s=1, details={"i": i})
            slowest = max(slowest, time.perf_counter() - start)
        stats = publisher.stats
        print(f"slowest publish() of 10 000 with Redis frozen: {slowest * 1e6:.1f} µs")
        # Bounded: the buffer plus at most one batch in flight; the rest was dropped.
        assert stats.queued <= 1000 + 100
        assert stats.dropped >= 10_000 - 1000 - 100
        assert stats.sent == 1
    finally:
        own_redis.resume()
        publisher.close(timeout=5)


@pytest.mark.fault
def test_publishing_resumes_by_itself_after_redis_dies(
    own_redis: RedisServer, namespace: str
) -> None:
    publisher = Publisher(own_redis.url, namespace, buffer_size=50, batch_size=10)
    try:
        publisher.publish("before", interval_s=1)
        wait_until_sync(lambda: publisher.stats.sent == 1)
        own_redis.pause()
        for _ in range(200):
            publisher.publish("during", interval_s=1)
        # The frozen server times a batch out, then a dead one refuses connections.
        wait_until_sync(lambda: not publisher.stats.connected, timeout=10)
        own_redis.kill()
        publisher.publish("during", interval_s=1)
        restart_same_port(own_redis)
        publisher.publish("after", interval_s=1)

        def arrived() -> bool:
            publisher.publish("after", interval_s=1)
            return "after" in services_in(own_redis.url, namespace, lambda hb: True)

        wait_until_sync(arrived, timeout=10, interval=0.1)
        stats = publisher.stats
        assert stats.connected and stats.dropped >= 200 - 50 - 10
        assert stats.failed_batches >= 1
    finally:
        publisher.close()


@pytest.mark.fault
def test_close_on_a_frozen_redis_is_bounded(own_redis: RedisServer, namespace: str) -> None:
    publisher = Publisher(own_redis.url, namespace)
    publisher.publish("svc", interval_s=1)
    wait_until_sync(lambda: publisher.stats.sent == 1)
    own_redis.pause()
    try:
        start = time.monotonic()
        publisher.publish("svc", interval_s=1)
        publisher.close(timeout=0.5)
        # The deadline, plus at most one socket timeout the thread is inside of.
        assert time.monotonic() - start < 0.5 + 2.0 + 1.0
    finally:
        own_redis.resume()


@pytest.mark.anyio
async def test_async_with_publishes_and_closes_off_the_loop(
    own_redis: RedisServer, namespace: str
) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with Publisher(own_redis.url, namespace) as publisher:
        publisher.publish("async_svc", interval_s=1)

        async def sent() -> bool:
            return publisher.stats.sent == 1

        await wait_until(sent)
        own_redis.pause()  # close() now has to wait: the loop must keep running meanwhile
        publisher.publish("async_svc", interval_s=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            await publisher.aclose(timeout=0.5)
            tg.cancel_scope.cancel()
    own_redis.resume()
    assert publisher.closed and ticks >= 10


@pytest.mark.anyio
async def test_async_context_manager(config: Config) -> None:
    assert config.redis_url
    async with Publisher.from_config(config) as publisher:
        publisher.publish("async_svc", interval_s=1)
    beats = [hb for _, hb in read_stream(config.redis_url, config.namespace)]
    assert [(hb.service, hb.goodbye) for hb in beats] == [("async_svc", False), ("async_svc", True)]


def test_publish_once_returns_the_entry_id(config: Config) -> None:
    assert config.redis_url
    hb = Heartbeat(v=1, service="cron_job", interval_s=3600, ok=False, error="password=x failed")
    entry_id = publish_once(config.redis_url, config.namespace, hb)
    assert re.fullmatch(r"\d+-\d+", entry_id)
    [(found_id, found)] = read_stream(config.redis_url, config.namespace)
    assert found_id == entry_id and found.error == "password=*** failed"


def test_publish_once_raises_bus_unavailable_on_a_closed_port(namespace: str) -> None:
    hb = Heartbeat(v=1, service="cron_job", interval_s=60, ok=True)
    with pytest.raises(BusUnavailable, match="cannot reach Redis"):
        publish_once(f"redis://127.0.0.1:{free_port()}/0", namespace, hb, timeout=1)


def test_publish_once_rejects_what_the_bus_would(config: Config) -> None:
    assert config.redis_url
    bad = Heartbeat(v=1, service="x", interval_s=1, ok=True, details={"k": "v" * 5000})
    with pytest.raises(InvalidMessage, match="details"):
        publish_once(config.redis_url, config.namespace, bad)
    assert read_stream(config.redis_url, config.namespace) == []
