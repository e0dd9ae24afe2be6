"""Lean SSE clients for the latency and fan-out scenarios.

An HTTP/1.0 request gets the event stream unchunked, so an `asyncio.Protocol` only has to
split events at blank lines. For every event whose data carries a transition (`"at_ms"`, the
Redis time of the heartbeat that caused it) the client keeps the delay from then to receipt.
`python -m healthbus.bench.sseclient URL CLIENTS` runs many of them in their own process (so
the server under test does not share it): it prints `ready` once every client has its response
headers, and on stdin's end one JSON object with what they received.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from typing import Final
from urllib.parse import urlsplit

import msgspec

__all__ = ["Received", "SSEClient", "connect_many"]

_AT_MS: Final = re.compile(rb'"at_ms":\s*(\d+)')
CONNECT_BATCH: Final = 100


class Received(msgspec.Struct, kw_only=True):
    """What the clients of one process received: delays (ms) and transitions per client."""

    clients: int
    connected: int
    delays_ms: list[float]
    per_client: list[int]
    #: Heartbeat times (ms) of the transitions received, each once.
    stamps: list[int]


class SSEClient(asyncio.Protocol):
    """One connection; `delays` grows by one per transition event received."""

    def __init__(self, path: str, host: str) -> None:
        self.request = f"GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
        self.buffer = b""
        self.header_done = False
        self.delays: list[float] = []
        self.stamps: list[int] = []
        self.first = asyncio.get_running_loop().create_future()
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request.encode())

    def data_received(self, data: bytes) -> None:
        now_ms = time.time() * 1000
        buffer = self.buffer + data.replace(b"\r\n", b"\n")  # sse-starlette's default sep
        if not self.header_done:
            end = buffer.find(b"\n\n")
            if end < 0:
                self.buffer = buffer
                return
            buffer = buffer[end + 2 :]
            self.header_done = True
            if not self.first.done():
                self.first.set_result(None)
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


async def _main(url: str, count: int) -> None:
    clients = await connect_many(url, count)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    stamps = sorted({s for c in clients for s in c.stamps})
    received = Received(
        clients=count,
        connected=sum(not c.closed for c in clients),
        delays_ms=[d for c in clients for d in c.delays],
        per_client=[len(c.delays) for c in clients],
        stamps=stamps,
    )
    for c in clients:
        c.close()
    sys.stdout.buffer.write(msgspec.json.encode(received) + b"\n")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2])))
