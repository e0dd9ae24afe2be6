"""Helpers of the web tests: a real uvicorn server in a thread, a raw SSE reader that keeps
every field as sent (httpx-sse carries the last id over to events that had none), and a
writer of the snapshot hash and updates stream shaped the way the aggregator writes them."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import msgspec
import redis.asyncio as aioredis
import uvicorn
from starlette.types import ASGIApp

from healthbus.embedded import free_port
from healthbus.keys import Keys
from healthbus.schema import (
    STATUS_ORDER,
    InstanceView,
    Meta,
    ServiceView,
    Status,
    Transition,
    Update,
    encode,
    iso_ms,
)
from tests.support import wait_until_sync

# -- the server --------------------------------------------------------------------------


@contextmanager
def serve(app: ASGIApp, port: int | None = None) -> Iterator[str]:
    """Run `app` under uvicorn on `port` (default: a free loopback port); yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    wait_until_sync(lambda: server.started or not thread.is_alive(), timeout=20)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive(), "uvicorn did not stop"


# -- reading SSE -------------------------------------------------------------------------


@dataclass
class RawEvent:
    event: str = "message"
    data: str = ""
    #: None when the event had no `id:` line (the spec's last-event-id is not carried over).
    id: str | None = None
    others: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class SSEReader:
    """Parses a response body into events per the SSE spec (any of CRLF, LF, CR end a line)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.aiter_bytes()
        self._buffer = b""
        self.comments = 0

    async def _line(self) -> str | None:
        while True:
            cut = _line_end(self._buffer)
            if cut is not None:
                end, width = cut
                line, self._buffer = self._buffer[:end], self._buffer[end + width :]
                return line.decode()
            try:
                self._buffer += await self._chunks.__anext__()
            except StopAsyncIteration:
                return None

    async def next(self, timeout: float = 10.0) -> RawEvent:
        """The next event (comments and pings skipped); fails on timeout or end of stream."""
        with anyio.fail_after(timeout):
            event = RawEvent()
            seen = False
            while True:
                line = await self._line()
                if line is None:
                    raise EOFError("the stream ended")
                if line == "":
                    if seen:
                        return event
                    continue
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                seen = True
                if name == "event":
                    event.event = value
                elif name == "data":
                    event.data = value if not event.data else event.data + "\n" + value
                elif name == "id":
                    event.id = value
                else:
                    event.others.append(line)

    async def take(self, n: int, timeout: float = 10.0) -> list[RawEvent]:
        return [await self.next(timeout) for _ in range(n)]

    async def nothing_within(self, seconds: float) -> bool:
        """True when no event arrives within `seconds` (pings do not count)."""
        try:
            await self.next(seconds)
        except TimeoutError:
            return True
        return False


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return None
    if cr == -1 or (lf != -1 and lf < cr):
        return lf, 1
    if cr == len(buffer) - 1:
        return None  # a CR at the end may be the first half of CRLF
    return cr, 2 if buffer[cr + 1 : cr + 2] == b"\n" else 1


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    url: str,
    params: Any = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[SSEReader]:
    async with client.stream(
        "GET", url + "/api/health/stream", params=params, headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SSEReader(response)


_DELIVERIES = re.compile(rb'healthbus_sse_deliveries_total\{path="(\w+)"\} (\d+)')


async def deliveries(client: httpx.AsyncClient, url: str) -> dict[str, int]:
    """The worker's SSE deliveries by path (`direct`, `queued`), from its /metrics."""
    body = (await client.get(url + "/metrics")).content
    return {path.decode(): int(n) for path, n in _DELIVERIES.findall(body)}


# -- writing the bus like the aggregator --------------------------------------------------

_COMMIT = """
local id = '0-0'
if ARGV[1] ~= '' then
  id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[1])
end
local meta = string.gsub(ARGV[2], '__UPDATE_ID__', id)
redis.call('HSET', KEYS[1], '_meta', meta)
local n = tonumber(ARGV[3])
for i = 1, n do
  redis.call('HSET', KEYS[1], ARGV[2 + 2 * i], ARGV[3 + 2 * i])
end
local r = 4 + 2 * n
for i = 1, tonumber(ARGV[r]) do
  redis.call('HDEL', KEYS[1], ARGV[r + i])
end
return id
"""


def view(
    name: str,
    status: Status = "healthy",
    *,
    kind: str = "perpetual",
    at_ms: int = 1_700_000_000_000,
    **fields: Any,
) -> ServiceView:
    values: dict[str, Any] = {
        "reason": "ok" if status == "healthy" else f"is {status}",
        "since": iso_ms(at_ms),
        "last_heartbeat": iso_ms(at_ms),
        "last_heartbeat_ms": at_ms,
        "expected_interval_seconds": 60.0,
    }
    values.update(fields)
    return ServiceView(name=name, kind=kind, status=status, **values)


def instance(name: str, status: Status = "healthy", **fields: Any) -> InstanceView:
    at_ms = 1_700_000_000_000
    return InstanceView(
        instance=name,
        status=status,
        last_heartbeat=iso_ms(at_ms),
        last_heartbeat_ms=at_ms,
        **fields,
    )


def transition(
    service: str,
    from_: Status,
    to: Status,
    at_ms: int = 1_700_000_000_000,
    incident: str | None = None,
) -> Transition:
    event = {"healthy": "recovered", "unknown": "left"}.get(to, to)
    return Transition(
        id=f"{service}:{event}:{at_ms}",
        event=f"healthbus.service.{event}",
        service=service,
        from_=from_,
        to=to,
        at=iso_ms(at_ms),
        at_ms=at_ms,
        reason=f"{from_} -> {to}",
        incident=incident,
    )


class FakeBus:
    """Writes what one aggregator commit writes: the views, one updates entry and `_meta`
    (whose `update_id` is that entry's id), atomically in one script."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, gen: str = "g1") -> None:
        self.redis = redis
        self.keys = keys
        self.gen = gen
        self.seq = 0
        self.update_id = "0-0"
        self.views: dict[str, ServiceView] = {}
        self.updated_age_ms = 0

    @property
    def status(self) -> Status:
        worst: Status = "unknown"
        for v in self.views.values():
            if STATUS_ORDER[v.status] > STATUS_ORDER[worst]:
                worst = v.status
        return worst

    async def _meta(self, update_id: str) -> bytes:
        seconds, micros = await self.redis.time()
        now = int(seconds) * 1000 + int(micros) // 1000 - self.updated_age_ms
        counts: dict[str, int] = {}
        for v in self.views.values():
            counts[v.status] = counts.get(v.status, 0) + 1
        meta = Meta(
            seq=self.seq,
            status=self.status,
            as_of="0-0",
            update_id=update_id,
            gen=self.gen,
            leader="test-leader",
            epoch=1,
            updated_at=iso_ms(now),
            updated_at_ms=now,
            started_at=iso_ms(now),
            version="test",
            services=len(self.views),
            counts=counts,
        )
        return encode(meta)

    async def commit(
        self,
        services: Iterable[ServiceView] = (),
        *,
        removed: Iterable[str] = (),
        transitions: Iterable[Transition] = (),
        fresh: dict[str, int] | None = None,
    ) -> str:
        """One commit with an updates entry; returns the entry's id."""
        services, removed = list(services), list(removed)
        for name, ms in (fresh or {}).items():
            self.views[name] = view_with(self.views[name], ms)
        for v in services:
            self.views[v.name] = v
        for name in removed:
            self.views.pop(name, None)
        self.seq += 1
        update = Update(
            seq=self.seq,
            gen=self.gen,
            status=self.status,
            services=services,
            removed=removed,
            transitions=list(transitions),
            fresh=fresh or {},
        )
        changed = services + [self.views[n] for n in (fresh or {})]
        return await self._write(encode(update), changed, removed)

    async def touch(self, age_ms: int = 0) -> None:
        """The 1-second `_meta` refresh (no updates entry); `age_ms` back-dates it."""
        self.updated_age_ms = age_ms
        await self._write(b"", [], [])

    async def _write(self, update: bytes, changed: list[ServiceView], removed: list[str]) -> str:
        meta = await self._meta("__UPDATE_ID__")
        if not update:
            meta = meta.replace(b"__UPDATE_ID__", self.update_id.encode())
        args: list[bytes | str | int] = [update, meta, len(changed)]
        for v in changed:
            args += [v.name, encode(v)]
        args += [len(removed), *removed]
        reply = await self.redis.eval(_COMMIT, 2, self.keys.snapshot, self.keys.updates, *args)
        entry_id: str = reply.decode()
        if update:
            self.update_id = entry_id
        return entry_id


def view_with(v: ServiceView, ms: int) -> ServiceView:
    return msgspec.structs.replace(v, last_heartbeat=iso_ms(ms), last_heartbeat_ms=ms)
