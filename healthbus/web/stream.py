"""`GET /api/health/stream`: the SSE feed of one client, served from the worker's hub.

On connect: a `snapshot` event (or, with a `Last-Event-ID` this worker can continue from, the
events missed since). Then the `update` and `transition` events of each updates entry, the
last of them carrying `id: <gen>-<stream id>`. Always 200 `text/event-stream`: with no Redis
or no aggregator the snapshot says so (`meta: null`, `stale: true`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Final

import anyio
from sse_starlette.sse import EventSourceResponse, SendTimeoutError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from healthbus.config import Config
from healthbus.schema import parse_stream_id
from healthbus.web.direct import Connection
from healthbus.web.events import Entry
from healthbus.web.fanout import PING_EVENT
from healthbus.web.hub import Hub
from healthbus.web.selection import BadQuery, Selection, withholds_details
from healthbus.web.subscriber import PING, parse_event_id

__all__ = ["SERVER_SEND", "TRANSPORT", "EventStream", "events", "health_stream"]

log = logging.getLogger("healthbus.web")

#: How long a client that saw a newer entry (from a worker ahead of this one) may wait here.
AHEAD_WAIT_S: Final = 2.0
#: Where `app.py` keeps the request's connection (its asyncio transport) in the scope state.
TRANSPORT: Final = "healthbus.transport"
#: Where `app.py` keeps the server's own `send` (before any middleware) in the scope state.
SERVER_SEND: Final = "healthbus.send"
#: The longest wait for a stream's last chunk when there is no send timeout.
SHUTDOWN_SEND_S: Final = 1.0


class EventStream(EventSourceResponse):
    """An SSE response that ends quietly when the client stops reading (`send_timeout`)."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        """sse-starlette's per-message timeout, with asyncio's own timer: an anyio cancel
        scope per message was a third of the CPU of a worker fanning out to 5 000 clients."""
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            raise SendTimeoutError() from None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info("dropped an SSE client that stopped reading")
            _abort(scope)
            await asyncio.sleep(0)  # uvicorn hears of the lost connection before we return
            return
        # Ended by the server's shutdown, the stream's last chunk was never sent: send it,
        # so the client sees a clean end (and uvicorn no error). After a complete response
        # or a disconnect this raises or does nothing.
        try:
            async with asyncio.timeout(self.send_timeout or SHUTDOWN_SEND_S):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            _abort(scope)
        except RuntimeError:
            pass  # the response was already complete


def _abort(scope: Scope) -> None:
    """Close a stuck client's connection at once. asyncio's close() would wait, forever, to
    flush what it holds for a client that does not read: a socket, and up to the kernel's
    send buffer (4 MiB here), kept per stuck client for as long as it lives."""
    transport = scope.get("state", {}).get(TRANSPORT)
    if transport is not None:
        transport.abort()


async def health_stream(request: Request) -> Response:
    hub: Hub = request.state.hub
    config: Config = request.state.config
    try:
        sel = Selection.from_query(
            request.query_params, redact=withholds_details(config, request.headers)
        )
    except BadQuery as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    conn = Connection.of(request.scope.get("state", {}).get(SERVER_SEND))
    return EventStream(
        events(hub, sel, request.headers.get("last-event-id"), conn),
        ping=0,  # the hub sends keep-alives to idle clients (Hub.keep_alive)
        send_timeout=config.sse_send_timeout_s,
        sep="\n",
    )


async def events(
    hub: Hub, sel: Selection, last_event_id: str | None, conn: Connection | None = None
) -> AsyncIterator[bytes]:
    """The encoded events of one client, until it leaves or falls too far behind. With
    `conn`, the hub writes live entries to it itself while this generator waits for more."""
    parsed = parse_event_id(last_event_id)
    if parsed is not None and parsed[0] == hub.replica.gen:
        cursor = parse_stream_id(hub.replica.cursor)
        if cursor is not None and parsed[2] > cursor:
            with anyio.move_on_after(AHEAD_WAIT_S):
                await hub.wait_for(parsed[0], parsed[2])
    sub, plan = hub.subscribe(sel, last_event_id, conn)
    try:
        if plan.snapshot:
            yield hub.snapshot(sel)
        elif plan.entries:
            yield b"".join([e.render(sel, hub.kind_of) for e in plan.entries])
        elif plan.fetch is not None:
            missed = await hub.fetch(*plan.fetch)
            if missed is None:
                sub.pos = hub.pos
                yield hub.snapshot(sel)
            elif missed:
                yield b"".join([e.render(sel, hub.kind_of) for e in missed])
        while True:
            items = await sub.take()
            if items is None:
                return
            chunks: list[bytes] = []
            for item in items:
                if item is PING:
                    chunks.append(PING_EVENT)
                elif not isinstance(item, Entry):  # RESYNC: start over from the current state
                    sub.pos = hub.pos
                    chunks.append(hub.snapshot(sel))
                elif item.pos > sub.pos:
                    sub.pos = item.pos
                    chunks.append(item.render(sel, hub.kind_of))
            chunk = b"".join(chunks)
            if chunk:
                sub.sent_at = time.monotonic()
                yield chunk
    finally:
        hub.unsubscribe(sub)
