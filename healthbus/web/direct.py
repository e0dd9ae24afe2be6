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

    __slots__ = ("_cycle", "_flow", "_framing", "transport")

    def __init__(self, cycle: Any, transport: asyncio.Transport) -> None:
        self._cycle = cycle
        self._flow = cycle.flow
        self.transport = transport
        #: True: chunked, False: as is; None until the response has started.
        self._framing: bool | None = None

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

    @property
    def framing(self) -> bool | None:
        """Chunked (True) or as is (False) once the response has started; None when the
        body cannot be written directly (not started, or a framing not known here)."""
        if self._framing is None and self._cycle.response_started:
            writer = type(getattr(self._cycle.conn, "_writer", None)).__name__
            if writer == _CHUNKED:
                self._framing = True
            elif writer == _CLOSE_DELIMITED:
                self._framing = False
        return self._framing

    def writable(self) -> bool:
        """True when a chunk written now goes out after everything sent so far: the
        response is open, the client is there and the transport takes more."""
        cycle = self._cycle
        return not (
            self._flow.write_paused
            or cycle.response_complete
            or cycle.disconnected
            or self.transport.is_closing()
        )
