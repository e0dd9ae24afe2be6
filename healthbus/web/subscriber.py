"""One SSE client's side of the hub: its bounded queue, and what it is sent first."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from healthbus.schema import parse_stream_id
from healthbus.web.direct import Connection
from healthbus.web.events import Entry
from healthbus.web.selection import Selection

__all__ = ["PING", "RESYNC", "Item", "Plan", "Subscriber", "parse_event_id"]

log = logging.getLogger("healthbus.web")


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Queued instead of entries when the subscriber must start over from a fresh snapshot.
RESYNC: Final = _Marker("RESYNC")
#: Queued when an idle client is due a keep-alive comment the hub cannot write itself.
PING: Final = _Marker("PING")
Item = Entry | _Marker


class Subscriber:
    """One client's bounded queue of entries still to send, and its connection when the hub
    may write to it directly (direct.py) while its task is idle."""

    __slots__ = (
        "_limit",
        "_queue",
        "_wake",
        "closed",
        "conn",
        "idle",
        "pos",
        "selection",
        "sent_at",
    )

    def __init__(
        self, selection: Selection, limit: int, pos: int, conn: Connection | None = None
    ) -> None:
        self.selection = selection
        #: The hub position this client's state is at: queued entries at or below it are old.
        self.pos = pos
        self.closed = False
        self.conn = conn
        #: True while its task waits in `take()`: whatever it took before is written out.
        self.idle = False
        #: When something was last sent to it (monotonic): keep-alives go to the idle only.
        self.sent_at = time.monotonic()
        self._limit = max(1, limit)
        self._queue: deque[Item] = deque()
        # Cleared and reused: an anyio.Event per wake-up asks sniffio for the running
        # library each time, a sixth of the CPU of a worker fanning out to 5 000 clients.
        self._wake = asyncio.Event()

    def writer(self) -> Connection | None:
        """The connection when the hub may write the next entry itself: the task is idle
        with nothing queued (so the write keeps the order), the stream is not ending and the
        connection takes it now."""
        conn = self.conn
        if conn is None or not self.idle or self._queue or self.closed or not conn.writable():
            return None
        return conn

    def push(self, entry: Entry) -> bool:
        """Queue `entry`; False when this subscriber is closed (now or before)."""
        if self.closed:
            return False
        if len(self._queue) >= self._limit:
            log.info("dropping an SSE client %d entries behind", len(self._queue))
            self.close()
            return False
        self._queue.append(entry)
        self._wake.set()
        return True

    def ping(self) -> None:
        """Queue a keep-alive for its task to send, unless it has something to send anyway
        (or is stuck sending: its send timeout, not a ping, deals with that)."""
        if not self.closed and not self._queue:
            self._queue.append(PING)
            self._wake.set()

    def resync(self) -> None:
        if not self.closed:
            self._queue.clear()
            self._queue.append(RESYNC)
            self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._wake.set()

    async def take(self) -> list[Item] | None:
        """Everything queued, waiting for at least one item; None once closed."""
        while not self._queue:
            if self.closed:
                return None
            self.idle = True
            try:
                await self._wake.wait()
            finally:
                self.idle = False
            self._wake.clear()
        items = list(self._queue)
        self._queue.clear()
        return items


@dataclass(slots=True)
class Plan:
    """What a new subscriber is sent before live entries."""

    snapshot: bool = False
    entries: list[Entry] = field(default_factory=list)
    #: Read `(after, upto]` back from Redis: the client's id is older than the ring.
    fetch: tuple[str, str] | None = None


def parse_event_id(value: str | None) -> tuple[str, str, tuple[int, int]] | None:
    """`"<gen>-<ms>-<seq>"` as (gen, stream id, its comparable pair), or None."""
    if not value or len(value) > 200:
        return None
    parts = value.strip().rsplit("-", 2)
    if len(parts) != 3 or not parts[0]:
        return None
    stream_id = f"{parts[1]}-{parts[2]}"
    pair = parse_stream_id(stream_id)
    return (parts[0], stream_id, pair) if pair is not None else None
