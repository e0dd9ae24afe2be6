"""The hub's fan-out (healthbus/web/fanout.py) with connections it may write to: which
subscriber is written to directly, which gets the entries queued, and the bytes written (a
whole read in one write, framed as h11 frames it), without a server."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import h11
import pytest

from healthbus.schema import encode
from healthbus.web.direct import Connection, chunked
from healthbus.web.events import Entry
from healthbus.web.fanout import PING_EVENT
from healthbus.web.selection import Selection
from healthbus.web.subscriber import PING, Subscriber
from tests.unit.test_web_replica import hub_with, update
from tests.webserver import view

pytestmark = pytest.mark.anyio


class Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing


def connection(http_version: str = "1.1") -> tuple[Connection, Any, Recorder]:
    """A connection over a real h11 state machine whose response has started."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(f"GET / HTTP/{http_version}\r\nHost: x\r\n\r\n".encode())
    conn.next_event()
    conn.send(h11.Response(status_code=200, headers=[]))
    cycle = SimpleNamespace(
        conn=conn,
        flow=SimpleNamespace(write_paused=False),
        response_started=True,
        response_complete=False,
        disconnected=False,
    )
    transport = Recorder()
    return Connection(cycle, transport), cycle, transport


def idle(sub: Subscriber) -> None:
    """As when its stream's task waits in take() (test_take_marks_the_subscriber_idle)."""
    sub.idle = True


def apply_all(hub: Any, first: int, n: int) -> list[Entry]:
    rows = [
        (f"{20 + seq}-0".encode(), {b"m": encode(update(seq, view(f"s{seq}")))})
        for seq in range(first, first + n)
    ]
    hub._apply_all(rows)
    return list(hub.ring)[-n:]


async def test_a_read_goes_to_idle_clients_in_one_write_and_to_the_others_queued() -> None:
    hub = hub_with(view("a"))
    c11, _, t11 = connection("1.1")
    c10, _, t10 = connection("1.0")
    paused, paused_cycle, t_paused = connection()
    subs = {
        "chunked": hub.subscribe(Selection(), None, c11)[0],
        "as-is": hub.subscribe(Selection(), None, c10)[0],
        "paused": hub.subscribe(Selection(), None, paused)[0],
        "busy": hub.subscribe(Selection(), None, connection()[0])[0],  # its task is sending
        "no-conn": hub.subscribe(Selection())[0],
    }
    for name in ("chunked", "as-is", "paused", "no-conn"):
        idle(subs[name])
    paused_cycle.flow.write_paused = True

    entries = apply_all(hub, 2, 2)
    body = b"".join(e.render(Selection(), hub.kind_of) for e in entries)
    assert t11.written == [chunked(body)]
    assert t10.written == [body]
    assert t_paused.written == []
    for name in ("paused", "busy", "no-conn"):
        assert await subs[name].take() == entries
    assert hub.deliveries == (4, 6)

    # The paused one resumes, but its task has not run yet: the next entry must follow the
    # queued ones, so it is queued too.
    paused_cycle.flow.write_paused = False
    subs["paused"].push(entries[-1])
    subs["paused"].idle = True
    (later,) = apply_all(hub, 4, 1)
    assert t_paused.written == []
    assert [e.pos for e in await subs["paused"].take() or [] if isinstance(e, Entry)] == [
        entries[-1].pos,
        later.pos,
    ]


async def test_nothing_is_written_once_the_response_ended_or_the_client_left() -> None:
    hub = hub_with(view("a"))
    ended, ended_cycle, t_ended = connection()
    gone, gone_cycle, t_gone = connection()
    closing, _, t_closing = connection()
    subs = [hub.subscribe(Selection(), None, c)[0] for c in (ended, gone, closing)]
    for sub in subs:
        idle(sub)
    ended_cycle.response_complete = True
    gone_cycle.disconnected = True
    t_closing.closing = True
    apply_all(hub, 2, 1)
    assert t_ended.written == t_gone.written == t_closing.written == []
    assert hub.deliveries == (0, 3)


async def test_a_selection_that_sees_nothing_gets_no_write() -> None:
    hub = hub_with(view("a"))
    conn, _, transport = connection()
    sub = hub.subscribe(Selection(names=frozenset({"zzz"})), None, conn)[0]
    idle(sub)
    apply_all(hub, 2, 1)
    assert transport.written == []
    assert hub.deliveries == (1, 0)


async def test_take_marks_the_subscriber_idle_while_it_waits() -> None:
    sub = Subscriber(Selection(), 4, 0)
    waiting = asyncio.get_running_loop().create_task(sub.take())
    await asyncio.sleep(0)
    assert sub.idle
    entry = Entry(1, "1-0", update(1))
    sub.push(entry)
    assert sub.idle  # until its task runs: the queue, not the flag, stops direct writes
    assert await waiting == [entry]
    assert not sub.idle


async def test_keep_alives_go_to_the_idle_only_written_or_queued() -> None:
    hub = hub_with(view("a"))
    direct, _, t_direct = connection()
    as_is, _, t_as_is = connection("1.0")
    paused, paused_cycle, t_paused = connection()
    busy, _, t_busy = connection()
    subs = {
        "direct": hub.subscribe(Selection(), None, direct)[0],
        "as-is": hub.subscribe(Selection(), None, as_is)[0],
        "paused": hub.subscribe(Selection(), None, paused)[0],
        "no-conn": hub.subscribe(Selection())[0],
        "recent": hub.subscribe(Selection(), None, busy)[0],
    }
    for sub in subs.values():
        idle(sub)
        sub.sent_at -= 60
    paused_cycle.flow.write_paused = True
    subs["recent"].sent_at += 60

    assert hub._subscribers.ping(15) == 4
    assert t_direct.written == [chunked(PING_EVENT)]
    assert t_as_is.written == [PING_EVENT]
    assert t_paused.written == t_busy.written == []
    assert await subs["paused"].take() == [PING]
    assert await subs["no-conn"].take() == [PING]
    assert hub._subscribers.ping(15) == 0  # pinged just now

    # An entry written to a client counts as a keep-alive; one it does not see does not.
    only_b, _, t_only_b = connection()
    filtered = hub.subscribe(Selection(names=frozenset({"b"})), None, only_b)[0]
    idle(filtered)
    before = time.monotonic()
    apply_all(hub, 2, 1)
    assert subs["direct"].sent_at >= before
    assert filtered.sent_at < before and t_only_b.written == []
