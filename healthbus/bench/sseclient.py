"""Lean SSE clients for the latency and fan-out scenarios.

An HTTP/1.0 request gets the event stream unchunked, so a client only has to split events
at blank lines. For every event whose data carries a transition (`"at_ms"`, the Redis time
of the heartbeat that caused it) it keeps the delay from then to receipt. The latency
scenario runs one `SSEClient` (an `asyncio.Protocol`) in its own loop; `python -m
healthbus.bench.sseclient URL CLIENTS` runs many in a process of their own (so the server
under test does not share it), read from one epoll loop with no asyncio in between: at
thousands of clients asyncio's own work per delivery would be what is measured. It prints
`ready` once every client has its response headers, and on stdin's end one JSON object
with what they received.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import socket
import sys
import time
from typing import Final
from urllib.parse import urlsplit

import msgspec

__all__ = ["Received", "SSEClient", "Stream", "connect_many"]

_AT_MS: Final = re.compile(rb'"at_ms":\s*(\d+)')
CONNECT_BATCH: Final = 100
CONNECT_TIMEOUT_S: Final = 30.0


class Received(msgspec.Struct, kw_only=True):
    """What the clients of one process received: delays (ms) and transitions per client."""

    clients: int
    connected: int
    delays_ms: list[float]
    per_client: list[int]
    #: Heartbeat times (ms) of the transitions received, each once.
    stamps: list[int]


class Stream:
    """One event stream's bytes in, the delays of the transitions it carried out."""

    def __init__(self) -> None:
        self.buffer = b""
        self.header_done = False
        self.delays: list[float] = []
        self.stamps: list[int] = []
        self.closed = False

    def feed(self, data: bytes, now_ms: float) -> None:
        buffer = self.buffer + data.replace(b"\r\n", b"\n")  # sse-starlette's default sep
        if not self.header_done:
            end = buffer.find(b"\n\n")
            if end < 0:
                self.buffer = buffer
                return
            buffer = buffer[end + 2 :]
            self.header_done = True
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self.buffer = buffer
            return
        events, self.buffer = buffer[: cut + 2], buffer[cut + 2 :]
        for event in events.split(b"\n\n"):
            found = _AT_MS.search(event)
            if found is not None:
                at = int(found.group(1))
                self.stamps.append(at)
                self.delays.append(now_ms - at)


def _request(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()


class SSEClient(asyncio.Protocol, Stream):
    """One connection on an asyncio loop; `delays` grows by one per transition event."""

    def __init__(self, path: str, host: str) -> None:
        Stream.__init__(self)
        self.request = _request(path, host)
        self.first = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.feed(data, time.time() * 1000)
        if self.header_done and not self.first.done():
            self.first.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.first.done():
            self.first.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect_many(url: str, count: int) -> list[SSEClient]:
    """Open `count` clients, a batch at a time (a burst of SYNs overflows the backlog)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()
    clients: list[SSEClient] = []
    for start in range(0, count, CONNECT_BATCH):
        batch = [
            loop.create_connection(lambda: SSEClient(path, parts.netloc), host, port)
            for _ in range(min(CONNECT_BATCH, count - start))
        ]
        for _, protocol in await asyncio.gather(*batch):
            clients.append(protocol)
        await asyncio.gather(*(c.first for c in clients[start:]))
    return clients


class _Socket(Stream):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock


def _serve(url: str, count: int) -> Received:
    """Connect `count` clients (a batch at a time: a burst of SYNs overflows the backlog),
    say `ready`, and read them all until stdin ends."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    request = _request(parts.path + (f"?{parts.query}" if parts.query else ""), parts.netloc)
    poller = select.epoll()
    streams: dict[int, _Socket] = {}
    stdin = sys.stdin.fileno()

    def pump(timeout: float) -> bool:
        """Read what is there; False once stdin has ended."""
        for fd, _ in poller.poll(timeout):
            if fd == stdin:
                if not os.read(stdin, 1 << 16):
                    return False
                continue
            stream = streams[fd]
            try:
                data = stream.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                stream.closed = True
                continue
            stream.feed(data, time.time() * 1000)
        return True

    for start in range(0, count, CONNECT_BATCH):
        batch = []
        for _ in range(min(CONNECT_BATCH, count - start)):
            sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT_S)
            sock.sendall(request)
            sock.setblocking(False)
            stream = streams[sock.fileno()] = _Socket(sock)
            poller.register(sock.fileno(), select.EPOLLIN)
            batch.append(stream)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not all(s.header_done or s.closed for s in batch):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no response headers within {CONNECT_TIMEOUT_S:g} s")
            pump(0.05)
    print("ready", flush=True)
    poller.register(stdin, select.EPOLLIN)
    while pump(1.0):
        pass
    clients = list(streams.values())
    for c in clients:
        c.sock.close()
    return Received(
        clients=count,
        connected=sum(not c.closed for c in clients),
        delays_ms=[d for c in clients for d in c.delays],
        per_client=[len(c.delays) for c in clients],
        stamps=sorted({s for c in clients for s in c.stamps}),
    )


if __name__ == "__main__":
    received = _serve(sys.argv[1], int(sys.argv[2]))
    sys.stdout.buffer.write(msgspec.json.encode(received) + b"\n")
    sys.stdout.flush()
