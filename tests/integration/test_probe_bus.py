"""Probes running on their cadences, publishing through the buffered Publisher, judged by the
real aggregator: healthy with latencies, a stopped server turning `error` at its next check,
a stream past its threshold turning `degraded`, a big table's warning, and a hung target that
delays no other probe."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import ExitStack, asynccontextmanager

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.client import HealthBus
from healthbus.config import Config
from healthbus.schema import Heartbeat, ServiceView
from publishers.probes import ProbeSpec, parse_probes, serve_probes
from tests.probe_support import events_table, http_app, silent_port
from tests.support import wait_until
from tests.webserver import serve

pytestmark = pytest.mark.anyio


def probes(text: str) -> list[ProbeSpec]:
    return parse_probes(text, "probes.toml", {})


@asynccontextmanager
async def running(config: Config, specs: Sequence[ProbeSpec]) -> AsyncIterator[HealthBus]:
    """The probes checking and publishing in the background; a client to read the snapshot."""
    async with HealthBus.from_config(config) as bus, anyio.create_task_group() as tg:
        tg.start_soon(serve_probes, config, specs)
        yield bus
        tg.cancel_scope.cancel()


async def status_of(bus: HealthBus, name: str, status: str) -> ServiceView | None:
    view = await bus.service(name)
    return view if view is not None and view.status == status else None


async def published(redis: aioredis.Redis, config: Config, after: str = "-") -> list[Heartbeat]:
    entries = await redis.xrange(config.keys.heartbeats, min=after)
    return [msgspec.json.decode(fields[b"m"], type=Heartbeat) for _, fields in entries]


#: Generous latency limits, so a noisy machine's slow check cannot change the status asserted.
CALM = "interval = 0.5\ntimeout = 0.5\ndegraded_ms = 5000\nerror_ms = 5000\n"


async def test_probes_report_healthy_with_latencies(aggregator: Aggregator, config: Config) -> None:
    with serve(http_app) as base, silent_port() as port:
        specs = probes(f"""
[[probe]]
name = "web"
type = "http"
url = "{base}/ok"
depends_on = ["cache"]
{CALM}
[[probe]]
name = "cache"
type = "redis"
url = "{config.redis_url}"
{CALM}
[[probe]]
name = "smtp"
type = "tcp"
host = "127.0.0.1"
port = {port}
{CALM}
""")
        async with running(config, specs) as bus:
            views = [
                await wait_until(lambda name=spec.name: status_of(bus, name, "healthy"))
                for spec in specs
            ]
    for view, spec in zip(views, specs, strict=True):
        assert view.kind == "probe" and view.details is not None
        assert view.details["type"] == spec.type
        assert view.last_duration_ms is not None and view.last_duration_ms > 0
        assert view.expected_interval_seconds == spec.interval
    assert views[0].depends_on == ["cache"]


async def test_a_stopped_http_server_is_an_error_at_the_next_check(
    aggregator: Aggregator, config: Config, redis: aioredis.Redis
) -> None:
    with ExitStack() as server:
        base = server.enter_context(serve(http_app))
        spec = probes(f'[[probe]]\nname = "web"\ntype = "http"\nurl = "{base}/ok"\n{CALM}')
        async with running(config, spec) as bus:
            await wait_until(lambda: status_of(bus, "web", "healthy"))
            server.close()  # the server stops (this blocks the loop until it has)
            ((stopped, _),) = await redis.xrevrange(config.keys.heartbeats, count=1)
            view = await wait_until(lambda: status_of(bus, "web", "error"))
    after = [
        hb for hb in await published(redis, config, f"({stopped.decode()}") if hb.service == "web"
    ]
    # A check already under way when the server stopped may still pass; the next one fails.
    assert not all(hb.ok for hb in after[:2])
    assert "ConnectError" in view.reason


async def test_a_stream_past_its_threshold_turns_degraded(
    aggregator: Aggregator, config: Config, redis: aioredis.Redis, namespace: str
) -> None:
    key = f"{namespace}:tasks"
    await redis.xadd(key, {"n": 0})
    spec = probes(f"""[[probe]]
name = "queue"
type = "redis"
url = "{config.redis_url}"
{CALM}
[[probe.streams]]
key = "{key}"
length_degraded = 5
""")
    try:
        async with running(config, spec) as bus:
            await wait_until(lambda: status_of(bus, "queue", "healthy"))
            for n in range(5):
                await redis.xadd(key, {"n": n})
            view = await wait_until(lambda: status_of(bus, "queue", "degraded"))
    finally:
        await redis.delete(key)
    assert view.reason == f"reports degraded: stream {key} length 6 (degraded at 5)"
    assert view.details is not None and view.details[f"stream.{key}.length"] == 6


async def test_a_table_past_its_row_warning_shows_a_warning_and_a_hint(
    aggregator: Aggregator, config: Config
) -> None:
    with events_table(rows=3000) as (url, table):
        spec = probes(f"""[[probe]]
name = "db"
type = "postgres"
url = "{url}"
tables = [{{name = "{table}", rows_warning = 1000}}]
{CALM}""")
        async with running(config, spec) as bus:
            view = await wait_until(lambda: status_of(bus, "db", "healthy"))
    assert view.details is not None
    assert view.details["warning"] == f"{table} has 3k rows (warning above 1k)"
    assert view.hint == f"{table} table has 3k rows — consider enabling retention cleanup"


async def test_a_hung_target_delays_no_other_probe(config: Config, redis: aioredis.Redis) -> None:
    """Counted, not timed: while the hung probe waits out its 2 s timeout, the fast probe
    (every 0.1 s) keeps publishing."""
    with silent_port() as hung, silent_port() as port:
        specs = probes(f"""
[[probe]]
name = "hung"
type = "http"
url = "http://127.0.0.1:{hung}/"
interval = 2
timeout = 2
[[probe]]
name = "fast"
type = "tcp"
host = "127.0.0.1"
port = {port}
interval = 0.1
timeout = 0.1
""")

        async def hung_reported() -> bool:
            return any(hb.service == "hung" for hb in await published(redis, config))

        async with running(config, specs):
            await wait_until(hung_reported)
    beats = await published(redis, config)
    first = next(i for i, hb in enumerate(beats) if hb.service == "hung")
    assert beats[first].error == "no answer within 2 s (timeout)"
    assert sum(hb.service == "fast" for hb in beats[:first]) >= 5
