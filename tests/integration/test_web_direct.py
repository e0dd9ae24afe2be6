"""The hub writing events straight to idle SSE connections (healthbus/web/direct.py), through
a real uvicorn server and real clients: the same events as the task path, in order, once
each, over HTTP/1.1 (chunked) and HTTP/1.0; a client that stops reading falls back to its
queue and task, never delays the others, and is either reaped or, when it reads again,
gets everything it missed; a `send` wrapped by middleware keeps the task path."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthbus.config import Config
from healthbus.embedded import RedisServer
from healthbus.web.app import create_app
from healthbus.web.direct import Connection, chunked
from tests.support import wait_until
from tests.webserver import FakeBus, deliveries, open_stream, serve, transition, view

pytestmark = pytest.mark.anyio


@contextmanager
def web(config: Config, wrap: bool = False) -> Iterator[str]:
    app: ASGIApp = create_app(config)
    with serve(_Wrapped(app) if wrap else app) as url:
        yield url


class _Wrapped:
    """Middleware that wraps `send`, as a server other than uvicorn's h11 would look."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def wrapped(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, wrapped)


async def sse_clients(client: httpx.AsyncClient, url: str) -> int:
    doc = (await client.get(url + "/api/health", params={"limit": 0})).json()
    return int(doc["server"]["sse_clients"])


class RawClient:
    """An HTTP/1.0 SSE client on a plain socket (the body is not chunked), with a small
    receive buffer so that it fills quickly when it stops reading."""

    def __init__(self, port: int, path: str = "/api/health/stream") -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        self.sock.settimeout(10)
        self.buffer = b""

    async def ids(self, until: str) -> list[str]:
        """The `id:` lines of the events read until one carries `until` (in a thread: the
        socket blocks)."""
        return await anyio.to_thread.run_sync(self._ids, until)

    def _ids(self, until: str) -> list[str]:
        found: list[str] = []
        while True:
            while b"\n\n" not in self.buffer:
                chunk = self.sock.recv(1 << 16)
                assert chunk, f"closed before {until}; got {found}"
                self.buffer += chunk.replace(b"\r\n", b"\n")
            event, self.buffer = self.buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"id: "):
                    found.append(line[4:].decode())
            if found and found[-1] == until:
                return found

    def close(self) -> None:
        self.sock.close()


async def test_idle_clients_get_the_same_events_written_by_the_hub(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    first = await bus.commit([view("a"), view("b", kind="consumer")])
    with web(config) as url:
        port = int(url.rsplit(":", 1)[1])
        raw = RawClient(port)
        try:
            async with (
                open_stream(client, url) as every,
                open_stream(client, url, params={"service": "b"}) as only_b,
            ):
                assert (await every.next()).id == f"g1-{first}"
                assert (await only_b.next()).id == f"g1-{first}"
                assert await raw.ids(f"g1-{first}") == [f"g1-{first}"]
                ids = []
                for n in range(5):
                    changed = view("a", "error" if n % 2 else "healthy", details={"n": n})
                    ids.append("g1-" + await bus.commit([changed]))
                    update = await every.next()
                    assert (update.event, update.id) == ("update", ids[-1])
                    assert update.json()["services"][0]["details"] == {"n": n}
                last = await bus.commit(
                    [view("b", "error")], transitions=[transition("b", "healthy", "error")]
                )
                ids.append(f"g1-{last}")
                update, moved = await every.take(2)
                assert (update.id, moved.event, moved.id) == (None, "transition", ids[-1])
                # The filtered client saw nothing of `a`, then b's update and transition.
                update, moved = await only_b.take(2)
                assert [s["name"] for s in update.json()["services"]] == ["b"]
                assert (moved.json()["service"], moved.id) == ("b", ids[-1])
                assert await raw.ids(ids[-1]) == ids  # HTTP/1.0: every id once, in order
                counts = await deliveries(client, url)
        finally:
            raw.close()
    assert counts["direct"] == 3 * len(ids)
    assert counts["queued"] == 0


async def test_a_send_wrapped_by_middleware_keeps_the_task_path(
    config: Config, bus: FakeBus, client: httpx.AsyncClient
) -> None:
    await bus.commit([view("a")])
    with web(config, wrap=True) as url:
        async with open_stream(client, url) as sse:
            await sse.next()
            entry_id = await bus.commit([view("a", "error")])
            assert (await sse.next()).id == f"g1-{entry_id}"
            assert await deliveries(client, url) == {"direct": 0, "queued": 1}


@pytest.mark.parametrize("send_timeout", [30.0, 0.5], ids=["reads-again", "is-reaped"])
@pytest.mark.fault
async def test_a_client_that_stops_reading_falls_back_to_its_task(
    redis_server: RedisServer,
    namespace: str,
    redis: aioredis.Redis,
    client: httpx.AsyncClient,
    send_timeout: float,
) -> None:
    config = Config(
        redis_url=redis_server.url,
        namespace=namespace,
        sse_queue_size=100_000,
        sse_send_timeout_s=send_timeout,
    )
    bus = FakeBus(redis, config.keys)
    first = await bus.commit([view("a")])
    blob = "x" * 2000
    with web(config) as url:
        slow = RawClient(int(url.rsplit(":", 1)[1]))
        try:
            assert await slow.ids(f"g1-{first}") == [f"g1-{first}"]
            async with open_stream(client, url) as fast:
                await fast.next()
                ids: list[str] = []
                # Until the slow client's transport is paused and the hub queues for it
                # (bounded: 400 entries of ~100 KB are far beyond any socket's buffers).
                for n in range(400):
                    batch = [view(f"s{i}", details={"blob": blob, "n": n}) for i in range(50)]
                    ids.append("g1-" + await bus.commit(batch))
                    assert (await fast.next()).id == ids[-1]  # never held up by the slow one
                    if (await deliveries(client, url))["queued"] > 0:
                        break
                assert (await deliveries(client, url))["queued"] > 0
                for _ in range(3):  # and entries keep flowing to the fast one meanwhile
                    ids.append("g1-" + await bus.commit([view("a", details={"n": len(ids)})]))
                    assert (await fast.next()).id == ids[-1]
                if send_timeout < 1:
                    await wait_until(lambda: _equals(sse_clients(client, url), 1))
                else:
                    assert await slow.ids(ids[-1]) == ids  # everything, once, in order
                    ids.append("g1-" + await bus.commit([view("a", "error")]))
                    assert await slow.ids(ids[-1]) == ids[-1:]
        finally:
            slow.close()


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


def test_only_uvicorns_own_send_is_written_to_directly() -> None:
    async def send(message: Message) -> None:
        pass

    assert Connection.of(send) is None
    assert Connection.of(None) is None
    assert chunked(b"event: x\n\n") == b"a\r\nevent: x\n\n\r\n"
