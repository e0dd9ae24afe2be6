"""Reading the transitions stream back, newest first, within a budget of entries.

The stream (`Keys.transitions`, capped, written by the aggregator only) holds every
service's transitions in commit order with no index by service, so one service's history is
found by scanning back in chunks. A scan reads at most `budget` entries; `last_id` and
`at_start` say where it stopped, so a page can hand the caller a cursor to go on from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec

from healthbus.connection import AsyncClient
from healthbus.schema import Transition, parse_stream_id

__all__ = ["CHUNK", "PAGE_BUDGET", "Scan", "oldest_ms", "page_transitions"]

CHUNK: Final = 1000
#: Entries one page of `/api/transitions` may read to find `limit` of one service.
PAGE_BUDGET: Final = 20_000

_decoder = msgspec.json.Decoder(Transition)


class Scan:
    """`(stream id, transition)` pairs older than `before` (None: from the newest), newest
    first. Entries that are not valid transitions are skipped."""

    def __init__(
        self, redis: AsyncClient, key: str, *, before: str | None = None, budget: int
    ) -> None:
        self.redis = redis
        self.key = key
        self.before = before
        self.budget = budget
        #: The id of the last entry read, valid or not.
        self.last_id: str | None = None
        #: True once the scan reached the oldest entry the stream retains.
        self.at_start = False

    async def __aiter__(self) -> AsyncIterator[tuple[str, Transition]]:
        upper = f"({self.before}" if self.before else "+"
        read = 0
        while read < self.budget:
            count = min(CHUNK, self.budget - read)
            rows: Any = await self.redis.xrevrange(self.key, max=upper, min="-", count=count)
            read += len(rows)
            for raw_id, fields in rows:
                self.last_id = raw_id.decode()
                transition = _decode(fields.get(b"m"))
                if transition is not None:
                    yield self.last_id, transition
            if len(rows) < count:
                self.at_start = True
                return
            upper = f"({self.last_id}"


def _decode(raw: bytes | None) -> Transition | None:
    if raw is None:
        return None
    try:
        return _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


async def oldest_ms(redis: AsyncClient, key: str) -> int | None:
    """When the oldest retained transition was written: where the stream's memory begins."""
    rows: Any = await redis.xrange(key, min="-", max="+", count=1)
    if not rows:
        return None
    pair = parse_stream_id(rows[0][0].decode())
    return pair[0] if pair is not None else None


async def page_transitions(
    redis: AsyncClient, key: str, *, service: str | None, limit: int, before: str | None
) -> tuple[list[Transition], str | None]:
    """Up to `limit` transitions (of `service`, if given), newest first, and the cursor of
    the next page (None at the start of the stream). A page whose scan ran out of budget
    may hold fewer than `limit`; its cursor goes on from where the scan stopped."""
    scan = Scan(redis, key, before=before, budget=PAGE_BUDGET)
    found: list[Transition] = []
    async for stream_id, transition in scan:
        if service is None or transition.service == service:
            found.append(transition)
            if len(found) >= limit:
                return found, stream_id
    return found, None if scan.at_start else scan.last_id
