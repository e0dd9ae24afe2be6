"""One check of each probe type against real targets: Redis, PostgreSQL, an HTTP server, open
and closed ports, a target that never answers, and custom functions."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from healthbus.embedded import RedisServer, free_port
from healthbus.schema import encode
from publishers.probes import ProbeResult, ProbeSpec, check_all, check_once, parse_probes
from tests.probe_support import events_table, http_app, silent_port
from tests.webserver import serve

pytestmark = pytest.mark.anyio
HERE = __name__


def probe(body: str, environ: dict[str, str] | None = None) -> ProbeSpec:
    return parse_probes(f'[[probe]]\nname = "t"\n{body}\n', "test.toml", environ or {})[0]


async def test_redis_latency_memory_and_the_depth_of_streams_and_queues(
    redis_server: RedisServer, redis: aioredis.Redis, namespace: str
) -> None:
    tasks, later, wrong = f"{namespace}:tasks", f"{namespace}:later", f"{namespace}:wrong"
    for n in range(5):
        await redis.xadd(tasks, {"n": n})
    await redis.xgroup_create(tasks, "workers", id="0")
    await redis.xreadgroup("workers", "w1", {tasks: ">"}, count=2)  # 2 pending, 3 behind
    await redis.zadd(later, {"a": 1, "b": 2, "c": 3})
    await redis.set(wrong, "not a queue")
    body = f"""type = "redis"
url = "{redis_server.url}"
streams = [{{key = "{tasks}", length_degraded = 10, pending_error = 5}}]
queues = [{{key = "{later}", length_degraded = 10}}]"""
    try:
        result = await check_once(probe(body))
        assert (result.status, result.error) == ("healthy", None)
        assert result.duration_ms is not None and result.duration_ms > 0
        d = result.details
        assert d["type"] == "redis" and isinstance(d["used_memory"], int)
        assert (d[f"stream.{tasks}.length"], d[f"stream.{tasks}.pending"]) == (5, 2)
        assert (d[f"stream.{tasks}.lag"], d[f"queue.{later}.length"]) == (3, 3)

        for n in range(10):
            await redis.xadd(tasks, {"n": n})
        grown = await check_once(probe(body))
        assert grown.status == "degraded" and grown.ok
        assert grown.error == f"stream {tasks} length 15 (degraded at 10)"

        broken = await check_once(probe(body.replace(later, wrong)))
        assert broken.status == "error" and f"cannot read queue {wrong}" in (broken.error or "")
    finally:
        await redis.delete(tasks, later, wrong)


async def test_postgres_latency_connections_and_a_table_past_its_row_warning() -> None:
    with events_table(rows=5000) as (url, table):
        body = f"""type = "postgres"
url = "{url}"
applications = ["healthbus-probe"]
tables = [{{name = "{table}", rows_warning = 1000}}]"""
        result = await check_once(probe(body))
    assert (result.status, result.error) == ("healthy", None)
    assert result.duration_ms is not None and result.duration_ms > 0
    d = result.details
    assert d["type"] == "postgres" and d["replica"] is False
    assert isinstance(d["max_connections"], int) and d["max_connections"] > 0
    assert isinstance(d["connections"], int) and d["connections"] >= 1
    assert isinstance(d["app.healthbus-probe.connections"], int)
    assert d["app.healthbus-probe.connections"] >= 1  # itself
    assert d[f"table.{table}.rows"] == 5000
    assert d["warning"] == f"{table} has 5k rows (warning above 1k)"
    assert result.hint == f"{table} table has 5k rows — consider enabling retention cleanup"


async def test_http_status_and_body() -> None:
    with serve(http_app) as base:
        ok, wrong_body, failing, accepted = await check_all(
            [
                probe(f'type = "http"\nurl = "{base}/ok"\nbody_contains = "all ok"'),
                probe(f'type = "http"\nurl = "{base}/ok"\nbody_contains = "nope"'),
                probe(f'type = "http"\nurl = "{base}/fail"'),
                probe(f'type = "http"\nurl = "{base}/fail"\nexpect_status = [200, 503]'),
            ]
        )
    assert (ok.status, ok.details["status_code"], ok.details["type"]) == ("healthy", 200, "http")
    assert ok.duration_ms is not None and ok.duration_ms > 0
    assert (wrong_body.status, wrong_body.ok) == ("error", False)
    assert wrong_body.error == "the response body does not contain 'nope'"
    assert failing.error == "HTTP 503, expected 200"
    assert accepted.status == "healthy"


async def test_tcp_open_and_closed_ports() -> None:
    with silent_port() as port:
        opened, closed = await check_all(
            [
                probe(f'type = "tcp"\nhost = "127.0.0.1"\nport = {port}'),
                probe(f'type = "tcp"\nhost = "127.0.0.1"\nport = {free_port()}'),
            ]
        )
    assert opened.status == "healthy" and opened.details["target"] == f"127.0.0.1:{port}"
    assert (closed.status, closed.ok) == ("error", False)
    assert "ConnectionRefusedError" in (closed.error or "")


async def test_targets_that_accept_and_never_answer_time_out() -> None:
    with silent_port() as port:
        results = await check_all(
            [
                probe(f'type = "http"\nurl = "http://127.0.0.1:{port}/"\ntimeout = 0.3'),
                probe(f'type = "redis"\nurl = "redis://127.0.0.1:{port}/0"\ntimeout = 0.3'),
                probe(
                    f'type = "postgres"\nurl = "postgresql://u@127.0.0.1:{port}/db"\ntimeout = 0.3'
                ),
            ]
        )
    for result in results:
        assert (result.status, result.ok) == ("error", False)
        assert result.error == "no answer within 0.3 s (timeout)"


async def test_secrets_never_reach_a_result() -> None:
    port = free_port()
    env = {"PW": "s3cret-pw"}
    urls = [
        ("redis", f"redis://:${{PW}}@127.0.0.1:{port}/0"),
        ("postgres", f"postgresql://app:${{PW}}@127.0.0.1:{port}/db"),
        ("http", f"http://app:${{PW}}@127.0.0.1:{port}/health?token=${{PW}}"),
    ]
    probes = [probe(f'type = "{kind}"\nurl = "{url}"', env) for kind, url in urls]
    assert all("s3cret-pw" in getattr(p, "url", "") for p in probes)  # expanded from $PW
    for result in await check_all(probes):
        assert result.status == "error"
        assert "s3cret-pw" not in encode(result).decode()


async def healthy_check(**options: Any) -> ProbeResult:
    return ProbeResult(details={"workers": options["workers"]}, hint="all good")


async def failing_check() -> None:
    raise RuntimeError("broker refused login password=hunter2")


async def odd_check() -> int:
    return 5


async def test_custom_functions() -> None:
    healthy, failing, odd, slow = await check_all(
        [
            probe(f'type = "custom"\nfunction = "{HERE}:healthy_check"\noptions = {{workers = 3}}'),
            probe(f'type = "custom"\nfunction = "{HERE}:failing_check"'),
            probe(f'type = "custom"\nfunction = "{HERE}:odd_check"'),
            probe(f'type = "custom"\nfunction = "{HERE}:healthy_check"\noptions = {{workers = 1}}\n'
                  "degraded_ms = 0"),
        ]
    )  # fmt: skip
    assert (healthy.status, healthy.hint) == ("healthy", "all good")
    assert healthy.details == {"type": "custom", "target": f"{HERE}:healthy_check", "workers": 3}
    assert healthy.duration_ms is not None
    assert (failing.status, failing.ok) == ("error", False)
    assert failing.error == "RuntimeError: broker refused login password=***"
    assert odd.error == f"{HERE}:odd_check returned int, expected a ProbeResult or None"
    assert slow.status == "degraded" and (slow.error or "").startswith("latency")
