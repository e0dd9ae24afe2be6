"""The `serve --demo` services: briefly, at high speed, against the session Redis."""

from __future__ import annotations

import anyio
import pytest
import redis

from healthbus.config import Config
from healthbus.keys import Keys
from healthbus.schema import Heartbeat, decode_heartbeat
from publishers.demo import SERVICES, phase_at, run_demo
from tests.support import wait_until


def read(config: Config) -> list[Heartbeat]:
    assert config.redis_url
    client = redis.Redis.from_url(config.redis_url)
    try:
        entries = client.xrange(Keys(config.namespace).heartbeats)
    finally:
        client.close()
    return [decode_heartbeat(fields[b"m"]) for _, fields in entries]


def test_every_script_visits_health_and_trouble() -> None:
    names = [s.name for s in SERVICES]
    assert len(names) == len(set(names)) >= 8
    assert {s.kind for s in SERVICES} == {"perpetual", "consumer", "probe"}
    for service in SERVICES:
        cycle = sum(seconds for _, seconds in service.script)
        phases = {phase_at(service, t)[0] for t in range(int(cycle))}
        assert "healthy" in phases and len(phases) >= 2, service.name


async def start_demo(tg: anyio.abc.TaskGroup, config: Config, stop: anyio.Event) -> anyio.Event:
    """Run the demo at speed 100 (a demo minute in 0.6 s); the event is set once it returned."""
    done = anyio.Event()

    async def demo() -> None:
        await run_demo(config.redis_url or "", config.namespace, stop=stop, speed=100)
        done.set()

    tg.start_soon(demo)
    return done


@pytest.mark.anyio
async def test_demo_publishes_every_kind_and_state_then_stops(config: Config) -> None:
    stop = anyio.Event()

    async def seen_enough() -> bool:
        beats = read(config)
        return (
            len({hb.service for hb in beats}) >= 6
            and {hb.kind for hb in beats} == {"perpetual", "consumer", "probe"}
            and any(not hb.ok for hb in beats)
            and any(hb.status == "degraded" for hb in beats)
            and any(hb.service == "postgres" and not hb.ok for hb in beats)  # at demo t=150 s
        )

    async with anyio.create_task_group() as tg:
        done = await start_demo(tg, config, stop)
        await wait_until(seen_enough, timeout=20, interval=0.1)
        stop.set()
        with anyio.fail_after(10):  # it stops cleanly and promptly once asked
            await done.wait()
    beats = read(config)
    consumer = next(hb for hb in beats if hb.kind == "consumer" and hb.details)
    assert consumer.details
    assert {"queue_depth", "queue_capacity", "consecutive_failures"} <= set(consumer.details)
    probe = next(hb for hb in beats if hb.kind == "probe" and not hb.goodbye)
    assert probe.duration_ms is not None and probe.status is not None
    assert any(hb.depends_on == ["postgres"] for hb in beats)
    assert {hb.service for hb in beats if hb.goodbye} == {hb.service for hb in beats}
    pg_error = next(hb.error for hb in beats if hb.service == "postgres" and hb.error)
    assert "prefect:***@db" in pg_error and "s3cret" not in pg_error  # scrubbed by the publisher
    # Its dependants fail with it, so the dashboard can point at the root cause.
    assert any("postgres is failing" in (hb.error or "") for hb in beats)


@pytest.mark.anyio
async def test_cancelled_demo_still_says_goodbye(config: Config) -> None:
    async def some_beats() -> bool:
        return len(read(config)) >= 3

    async with anyio.create_task_group() as tg:
        await start_demo(tg, config, anyio.Event())
        await wait_until(some_beats)
        tg.cancel_scope.cancel()  # as `healthbus serve` stops it
    services = {hb.service for hb in read(config)}
    assert {hb.service for hb in read(config) if hb.goodbye} == services
