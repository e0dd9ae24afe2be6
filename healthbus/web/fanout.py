"""One applied entry to every subscriber: rendered once per selection, framed once per group.

Subscribers are grouped by selection (filters and redaction), so the per-client work of a
delivery is a few attribute checks and, for an idle client, one `transport.write` of bytes
shared by its whole group (direct.py). A client that is busy, has entries queued, sits
behind a paused transport or on a connection the hub cannot write to gets the entry in its
queue as before: its task sends it, under the send timeout that reaps a stuck client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Final

from healthbus.web.direct import chunked
from healthbus.web.events import Entry, KindOf
from healthbus.web.selection import Selection
from healthbus.web.subscriber import Subscriber

__all__ = ["PING_EVENT", "Fanout"]

#: The keep-alive comment (design.md: "comment lines every 15 s keep idle connections alive").
PING_EVENT: Final = b": ping\n\n"
_PING_CHUNK: Final = chunked(PING_EVENT)


class Fanout:
    """The subscribers of one hub, by selection."""

    __slots__ = ("_count", "_groups", "direct", "queued")

    def __init__(self) -> None:
        self._groups: dict[Selection, set[Subscriber]] = {}
        self._count = 0
        #: Deliveries written by the hub itself, and those left to a client's task.
        self.direct = 0
        self.queued = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Subscriber]:
        """A copy: the caller may remove subscribers while iterating."""
        return iter([sub for group in self._groups.values() for sub in group])

    def add(self, sub: Subscriber) -> None:
        group = self._groups.setdefault(sub.selection, set())
        if sub not in group:
            group.add(sub)
            self._count += 1

    def discard(self, sub: Subscriber) -> None:
        group = self._groups.get(sub.selection)
        if group is not None and sub in group:
            group.remove(sub)
            self._count -= 1
            if not group:
                del self._groups[sub.selection]

    def deliver(self, entries: list[Entry], kind_of: KindOf) -> list[Subscriber]:
        """Send or queue `entries` (consecutive, newest last) for everyone; returns the
        subscribers dropped (closed, or too far behind), already removed."""
        dropped: list[Subscriber] = []
        direct = queued = 0
        now = time.monotonic()
        first, last = entries[0].pos, entries[-1].pos
        for sel, group in self._groups.items():
            data: bytes | None = None
            framed: bytes | None = None
            for sub in group:
                conn = sub.writer()
                if conn is None or first <= sub.pos:
                    queued += 1
                    if not all(sub.push(entry) for entry in entries):
                        dropped.append(sub)
                    continue
                sub.pos = last
                direct += 1
                if data is None:
                    data = b"".join([entry.render(sel, kind_of) for entry in entries])
                if not data:
                    continue  # nothing this selection sees
                sub.sent_at = now
                if conn.chunked:
                    if framed is None:
                        framed = chunked(data)
                    conn.transport.write(framed)
                else:
                    conn.transport.write(data)
        for sub in dropped:
            self.discard(sub)
        self.direct += direct * len(entries)
        self.queued += queued * len(entries)
        return dropped

    def ping(self, idle_s: float) -> int:
        """A keep-alive comment to every client sent nothing for `idle_s`: written here when
        its connection takes it, else queued for its task (under the send timeout, which
        reaps a client that stopped reading). Returns how many were due."""
        now = time.monotonic()
        due = 0
        for sub in self:
            if now - sub.sent_at < idle_s:
                continue
            due += 1
            sub.sent_at = now
            conn = sub.writer()
            if conn is None:
                sub.ping()
            else:
                conn.transport.write(_PING_CHUNK if conn.chunked else PING_EVENT)
        return due
