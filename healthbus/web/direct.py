"""An SSE client's connection, written to straight from the hub's fan-out loop.

Waking one task per client per event and passing each chunk through sse-starlette's and
uvicorn's `send` cost ~45 µs per client per event: 5 000 clients made one event ~220 ms of
a core. For a client that is idle (its task waits for the next entry, nothing queued), the
hub instead writes the chunk its task would have sent, framed as the server frames it, to
the transport. This reaches past ASGI, so it is limited to what is known exactly: uvicorn's
h11 protocol (chunked for HTTP/1.1, close-delimited for HTTP/1.0), a `send` that is the
request cycle's own method (no middleware in between), a started and unfinished response,
and a transport that is not paused. Everything else keeps the task path.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

__all__ = ["Connection", "chunked"]

_CHUNKED: Final = "ChunkedWriter"
_CLOSE_DELIMITED: Final = "Http10Writer"


def chunked(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk, as h11 writes a body part."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class Connection:
    """The transport of one streaming response and how its body is framed."""

    __slots__ = ("_cycle", "_flow", "_framing_known", "chunked", "transport")

    def __init__(self, cycle: Any, transport: asyncio.Transport) -> None:
        self._cycle = cycle
        self._flow = cycle.flow
        self.transport = transport
        #: How h11 frames this response's body: chunked (HTTP/1.1) or as is (HTTP/1.0).
        self.chunked = False
        self._framing_known = False

    @classmethod
    def of(cls, send: object) -> Connection | None:
        """The connection behind an ASGI `send`, when it is uvicorn's h11 request cycle."""
        cycle = getattr(send, "__self__", None)
        if cycle is None or type(cycle).__module__ != "uvicorn.protocols.http.h11_impl":
            return None
        transport = getattr(cycle, "transport", None)
        if not isinstance(transport, asyncio.Transport) or not hasattr(cycle, "flow"):
            return None
        if cycle.scope.get("method") != "GET":
            return None
        return cls(cycle, transport)

    def writable(self) -> bool:
        """True when a chunk written now goes out after everything sent so far, framed as
        h11 frames it: the response has started and is open, the client is there and the
        transport takes more."""
        cycle = self._cycle
        if not self._framing_known and not self._learn_framing():
            return False
        return not (
            self._flow.write_paused
            or cycle.response_complete
            or cycle.disconnected
            or self.transport.is_closing()
        )

    def _learn_framing(self) -> bool:
        """Once the response has started, h11's body writer says how it frames the body;
        False until then, and whenever it is neither framing known here."""
        if not self._cycle.response_started:
            return False
        writer = type(getattr(self._cycle.conn, "_writer", None)).__name__
        if writer not in (_CHUNKED, _CLOSE_DELIMITED):
            return False
        self.chunked = writer == _CHUNKED
        self._framing_known = True
        return True
