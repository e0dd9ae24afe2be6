"""SSE `/api/health/stream` through a real uvicorn server and a real HTTP client."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from healthbus.config import Config
from healthbus.embedded import RedisServer, free_port
from healthbus.web.app import create_app
from tests.support import wait_until
from tests.webserver import FakeBus, RawEvent, open_stream, serve, transition, view

pytestmark = pytest.mark.anyio


@contextmanager
def web(config: Config, **hub_options: Any) -> Iterator[str]:
    with serve(create_app(config, hub_options=hub_options)) as url:
        yield url


async def applied(client: httpx.AsyncClient, url: str, entry_id: str) -> bool:
    """True once the server's copy reflects the updates entry `entry_id`."""
    doc = (await client.get(url + "/api/health", params={"limit": 0})).json()
    return bool(doc["bus"]["update_id"] == entry_id)


def names(event: RawEvent) -> list[str]:
    return [s["name"] for s in event.json()["services"]]


async def test_snapshot_on_connect_then_one_entry_is_update_and_transitions_with_one_id(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    first = await bus.commit([view("a"), view("b", "error", kind="consumer")])
    with web(config) as url:
        async with open_stream(client, url) as sse:
            snap = await sse.next()
            assert snap.event == "snapshot"
            assert snap.id == f"g1-{first}"
            data = snap.json()
            assert (data["gen"], data["seq"], data["status"]) == ("g1", 1, "error")
            assert data["meta"]["update_id"] == first
            assert data["counts"] == {"healthy": 1, "error": 1}
            assert (data["total"], data["truncated"], data["stale"]) == (2, False, False)
            assert names(snap) == ["a", "b"]

            second = await bus.commit(
                [view("a", "degraded"), view("b")],
                transitions=[
                    transition("a", "healthy", "degraded"),
                    transition("b", "error", "healthy"),
                ],
            )
            update, t1, t2 = await sse.take(3)
            assert [e.event for e in (update, t1, t2)] == ["update", "transition", "transition"]
            assert (update.id, t1.id, t2.id) == (None, None, f"g1-{second}")
            assert update.json()["seq"] == 2
            assert update.json()["status"] == "degraded"
            assert names(update) == ["a", "b"]
            assert (t1.json()["service"], t1.json()["to"]) == ("a", "degraded")
            assert t2.json()["from"] == "error"

            third = await bus.commit(fresh={"a": 1_700_000_060_000})
            only = await sse.next()
            assert (only.event, only.id) == ("update", f"g1-{third}")
            assert only.json() == {
                "seq": 3,
                "status": "degraded",
                "services": [],
                "removed": [],
                "fresh": {"a": 1_700_000_060_000},
            }
        doc = (await client.get(url + "/api/health", params={"name": "a"})).json()
        assert doc["services"]["perpetual"][0]["last_heartbeat_ms"] == 1_700_000_060_000


async def test_no_data_yet_then_the_first_commit_brings_a_snapshot(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    with web(config) as url:
        async with open_stream(client, url) as sse:
            empty = await sse.next()
            assert (empty.event, empty.id) == ("snapshot", None)
            data = empty.json()
            assert data["meta"] is None and data["gen"] is None
            assert data["services"] == [] and data["stale"] is True
            first = await bus.commit(
                [view("a")], transitions=[transition("a", "unknown", "healthy")]
            )
            snap = await sse.next()
            assert (snap.event, snap.id) == ("snapshot", f"g1-{first}")
            assert names(snap) == ["a"]
            second = await bus.commit([view("a", "error")])
            update = await sse.next()
            assert (update.event, update.id) == ("update", f"g1-{second}")


async def test_removed_services_leave_the_copy(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    await bus.commit([view("a"), view("b")])
    with web(config) as url:
        async with open_stream(client, url) as sse:
            await sse.next()
            gone = await bus.commit(
                removed=["b"], transitions=[transition("b", "healthy", "unknown")]
            )
            update, left = await sse.take(2)
            assert update.json()["removed"] == ["b"]
            assert left.id == f"g1-{gone}"
        async with open_stream(client, url) as sse:
            assert names(await sse.next()) == ["a"]


async def test_resume_from_the_ring_gets_exactly_the_missed_events(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    await bus.commit([view("a"), view("b")])
    with web(config) as url:
        async with open_stream(client, url) as sse:
            await sse.next()
            seen = await bus.commit([view("a", "degraded")])
            assert (await sse.next()).id == f"g1-{seen}"
        e2 = await bus.commit(fresh={"b": 1_700_000_001_000})
        e3 = await bus.commit(
            [view("b", "error")], transitions=[transition("b", "healthy", "error")]
        )
        e4 = await bus.commit([view("c")])
        await wait_until(lambda: applied(client, url, e4))
        headers = {"Last-Event-ID": f"g1-{seen}"}
        async with open_stream(client, url, headers=headers) as sse:
            got = await sse.take(4)
            assert [(e.event, e.id) for e in got] == [
                ("update", f"g1-{e2}"),
                ("update", None),
                ("transition", f"g1-{e3}"),
                ("update", f"g1-{e4}"),
            ]
            assert got[0].json()["fresh"] == {"b": 1_700_000_001_000}
            e5 = await bus.commit([view("d")])
            assert (await sse.next()).id == f"g1-{e5}"  # and nothing in between
        async with open_stream(client, url, headers={"Last-Event-ID": f"g1-{e5}"}) as sse:
            e6 = await bus.commit([view("e")])
            assert (await sse.next()).id == f"g1-{e6}"  # up to date: no snapshot


async def test_resume_older_than_the_ring_reads_back_from_redis(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    ids = [await bus.commit([view(f"s{i}")]) for i in range(3)]
    with web(config, ring_size=2) as url:
        ids += [await bus.commit([view(f"s{i}")]) for i in range(3, 7)]
        await wait_until(lambda: applied(client, url, ids[-1]))
        async with open_stream(client, url, headers={"Last-Event-ID": f"g1-{ids[1]}"}) as sse:
            got = await sse.take(5)
            assert [e.id for e in got] == [f"g1-{i}" for i in ids[2:]]
            assert [names(e) for e in got] == [[f"s{i}"] for i in range(2, 7)]
            last = await bus.commit([view("t")])
            assert (await sse.next()).id == f"g1-{last}"


@pytest.mark.parametrize(
    "last_event_id",
    ["garbage", "", "g2-{first}", "g1-1-0", "g1-{first}-x", "g1-99999999999999-0"],
    ids=["garbage", "empty", "other-gen", "unknown-id", "bad-id", "from-the-future"],
)
async def test_an_unusable_last_event_id_gets_a_fresh_snapshot(
    config: Config, bus: FakeBus, client: httpx.AsyncClient, last_event_id: str
) -> None:
    first = await bus.commit([view("a")])
    latest = await bus.commit([view("b")])
    with web(config) as url:
        headers = {"Last-Event-ID": last_event_id.format(first=first)}
        async with open_stream(client, url, headers=headers) as sse:
            snap = await sse.next()
            assert (snap.event, snap.id) == ("snapshot", f"g1-{latest}")
            assert names(snap) == ["a", "b"]


async def test_a_trimmed_last_event_id_gets_a_fresh_snapshot(
    config: Config, bus: FakeBus, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    first = await bus.commit([view("a")])
    await bus.commit([view("b")])
    latest = await bus.commit([view("c")])
    await redis.xtrim(config.keys.updates, minid=latest, approximate=False)
    assert await redis.xlen(config.keys.updates) == 1
    with web(config) as url:
        async with open_stream(client, url, headers={"Last-Event-ID": f"g1-{first}"}) as sse:
            snap = await sse.next()
            assert (snap.event, snap.id) == ("snapshot", f"g1-{latest}")
            assert names(snap) == ["a", "b", "c"]


async def test_filters_by_service_kind_and_status_changes(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    await bus.commit([view("a"), view("b", kind="consumer"), view("c", kind="probe")])
    with web(config) as url:
        queries: list[Any] = [
            [("service", "a"), ("service", "c")],
            {"kind": "consumer"},
            {"changes": "status"},
        ]
        async with (
            open_stream(client, url, params=queries[0]) as by_name,
            open_stream(client, url, params=queries[1]) as by_kind,
            open_stream(client, url, params=queries[2]) as by_change,
        ):
            assert names(await by_name.next()) == ["a", "c"]
            snap = await by_kind.next()
            assert names(snap) == ["b"] and snap.json()["counts"] == {"healthy": 1}
            assert names(await by_change.next()) == ["a", "b", "c"]

            ms = 1_700_000_001_000
            fresh = await bus.commit(fresh={"a": ms, "b": ms, "c": ms})
            detail = await bus.commit([view("a", details={"runs": 2})])
            b_err = await bus.commit(
                [view("b", "error", kind="consumer")],
                transitions=[transition("b", "healthy", "error")],
            )
            everyone = await bus.commit(
                [
                    view("a", "degraded"),
                    view("b", kind="consumer"),
                    view("c", "error", kind="probe"),
                ],
                transitions=[
                    transition("a", "healthy", "degraded"),
                    transition("b", "error", "healthy"),
                    transition("c", "healthy", "error"),
                ],
            )

            e = await by_name.next()
            assert (e.event, e.id, e.json()["fresh"]) == (
                "update",
                f"g1-{fresh}",
                {"a": ms, "c": ms},
            )
            e = await by_name.next()
            assert (e.id, names(e)) == (f"g1-{detail}", ["a"])
            # b's change is not theirs: the next is the last entry, a's and c's part of it
            e = await by_name.next()
            assert (e.event, names(e), e.id) == ("update", ["a", "c"], None)
            got = await by_name.take(2)
            assert [t.json()["service"] for t in got] == ["a", "c"]
            assert got[-1].id == f"g1-{everyone}"

            e = await by_kind.next()
            assert (e.id, e.json()["fresh"]) == (f"g1-{fresh}", {"b": ms})
            e, t = await by_kind.take(2)
            assert (names(e), t.json()["service"], t.id) == (["b"], "b", f"g1-{b_err}")
            e, t = await by_kind.take(2)
            assert (names(e), t.json()["to"], t.id) == (["b"], "healthy", f"g1-{everyone}")

            e, t = await by_change.take(2)  # no fresh-only, no detail-only update
            assert (names(e), e.json()["fresh"], t.id) == (["b"], {}, f"g1-{b_err}")
            got = await by_change.take(4)
            assert names(got[0]) == ["a", "b", "c"]
            assert got[-1].id == f"g1-{everyone}"
            assert [g.id for g in got[:-1]] == [None, None, None]


async def test_bad_filter_values_are_refused(config: Config, client: httpx.AsyncClient) -> None:
    with web(config) as url:
        response = await client.get(url + "/api/health/stream", params={"changes": "some"})
        assert response.status_code == 400
        assert "changes=status" in response.json()["error"]


INJECTION = "x\n\nevent: injected\ndata: {}\nid: 666\r\rretry: 1\r\n\r\n"


@pytest.mark.fault
async def test_data_cannot_break_the_sse_framing(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    evil = view(
        "evil\n\nevent: injected",
        "error",
        details={"note": INJECTION, "ok": True},
        error=INJECTION,
        hint=INJECTION,
        reason=INJECTION,
    )
    await bus.commit([evil])
    with web(config) as url:
        async with open_stream(client, url) as sse:
            snap = await sse.next()
            assert (snap.event, snap.others) == ("snapshot", [])
            service = snap.json()["services"][0]
            assert service["name"] == "evil\n\nevent: injected"
            assert service["details"]["note"] == INJECTION
            flip = transition("evil", "healthy", "error")
            flip = msgspec.structs.replace(flip, reason=INJECTION, service=evil.name)
            last = await bus.commit([evil], transitions=[flip])
            update, t = await sse.take(2)
            assert (update.event, update.others, t.event, t.others) == (
                "update",
                [],
                "transition",
                [],
            )
            assert t.id == f"g1-{last}"
            assert t.json()["reason"] == INJECTION
            mark = await bus.commit([view("plain")])
            after = await sse.next()
            assert (after.event, after.id) == ("update", f"g1-{mark}")  # nothing injected between


async def sse_clients(client: httpx.AsyncClient, url: str) -> int:
    doc = (await client.get(url + "/api/health", params={"limit": 0})).json()
    return int(doc["server"]["sse_clients"])


@pytest.mark.parametrize(
    ("queue_size", "send_timeout"),
    [(4, 30.0), (100_000, 0.5)],
    ids=["its-queue-fills", "its-send-times-out"],
)
@pytest.mark.fault
async def test_a_client_that_never_reads_is_dropped_without_delaying_others(
    redis_server: RedisServer,
    namespace: str,
    redis: aioredis.Redis,
    client: httpx.AsyncClient,
    queue_size: int,
    send_timeout: float,
) -> None:
    config = Config(
        redis_url=redis_server.url,
        namespace=namespace,
        sse_queue_size=queue_size,
        sse_send_timeout_s=send_timeout,
    )
    bus = FakeBus(redis, config.keys)
    await bus.commit([view("a")])
    blob = "x" * 2000
    with web(config) as url:
        port = int(url.rsplit(":", 1)[1])
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        slow.sendall(b"GET /api/health/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            await wait_until(lambda: sse_clients(client, url))
            async with open_stream(client, url) as fast:
                await fast.next()
                delays = []
                with anyio.fail_after(30):
                    for n in range(40):
                        batch = [view(f"s{i}", details={"blob": blob, "n": n}) for i in range(50)]
                        entry_id = await bus.commit(batch)
                        started = time.monotonic()
                        got = await fast.next()  # the fast one keeps up, entry after entry
                        delays.append(time.monotonic() - started)
                        assert got.id == f"g1-{entry_id}"
                assert max(delays) < 1.0  # it never waited on the slow one
                await wait_until(lambda: _is(sse_clients(client, url), 1))
            # Dropped: its response ended (the last chunk) or its connection was closed.
            slow.settimeout(20)
            received = b""
            while not received.endswith(b"\r\n0\r\n\r\n"):
                chunk = slow.recv(1 << 16)
                if not chunk:
                    break
                received += chunk
            assert 0 < len(received) < 40 * 50 * len(blob)
        finally:
            slow.close()


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


@pytest.mark.fault
async def test_redis_killed_and_restarted_empty_brings_a_new_snapshot(
    own_redis: RedisServer, namespace: str, client: httpx.AsyncClient
) -> None:
    config = Config(redis_url=own_redis.url, namespace=namespace)
    writer = aioredis.Redis.from_url(own_redis.url)
    try:
        first = await FakeBus(writer, config.keys, gen="g1").commit([view("a")])
        with web(config) as url:
            async with open_stream(client, url) as sse:
                assert (await sse.next()).id == f"g1-{first}"
                own_redis.kill()

                async def down() -> bool:
                    return (await client.get(url + "/health")).status_code == 503

                await wait_until(down)
                doc = (await client.get(url + "/api/health")).json()
                assert doc["total"] == 1  # the last copy is still served
                await wait_until(
                    lambda: _json(client, url + "/api/health", lambda d: d["bus"]["stale"])
                )
                if own_redis.process is not None and own_redis.process.stderr is not None:
                    own_redis.process.stderr.close()  # kill() leaves it open (ResourceWarning)
                own_redis.start()
                empty = await sse.next(timeout=20)
                assert (empty.event, empty.id, empty.json()["meta"]) == ("snapshot", None, None)
                await writer.aclose()
                writer = aioredis.Redis.from_url(own_redis.url)
                new = await FakeBus(writer, config.keys, gen="g2").commit([view("b")])
                snap = await sse.next(timeout=20)
                assert (snap.event, snap.id, names(snap)) == ("snapshot", f"g2-{new}", ["b"])
            assert (await client.get(url + "/health")).status_code == 200
    finally:
        await writer.aclose()


async def _json(client: httpx.AsyncClient, url: str, check: Any) -> bool:
    return bool(check((await client.get(url)).json()))


@pytest.mark.fault
async def test_the_stream_answers_200_without_redis(
    namespace: str, client: httpx.AsyncClient
) -> None:
    config = Config(redis_url=f"redis://127.0.0.1:{free_port()}/0", namespace=namespace)
    with web(config) as url:
        async with open_stream(client, url) as sse:
            snap = await sse.next()
            assert (snap.event, snap.id) == ("snapshot", None)
            assert snap.json()["meta"] is None and snap.json()["stale"] is True
        assert (await client.get(url + "/health")).status_code == 503
        assert (await client.get(url + "/ready")).status_code == 503
        doc = (await client.get(url + "/api/health")).json()
        assert doc["bus"]["stale"] is True and doc["total"] == 0


async def test_sse_pings_keep_idle_connections_alive(
    redis_server: RedisServer, namespace: str, client: httpx.AsyncClient
) -> None:
    config = Config(redis_url=redis_server.url, namespace=namespace, sse_ping_s=0.2)
    with web(config) as url:
        async with open_stream(client, url) as sse:
            await sse.next()
            assert await sse.nothing_within(0.7)
            assert sse.comments >= 2


async def test_httpx_sse_reads_the_feed(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    from httpx_sse import aconnect_sse

    first = await bus.commit([view("a")])
    with web(config) as url:
        async with aconnect_sse(client, "GET", url + "/api/health/stream") as source:
            events = source.aiter_sse()
            snap = await anext(events)
            assert (snap.event, snap.id, snap.json()["seq"]) == ("snapshot", f"g1-{first}", 1)
            second = await bus.commit([view("a", "error")])
            update = await anext(events)
            assert (update.event, update.id) == ("update", f"g1-{second}")
