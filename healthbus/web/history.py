"""A service's history: SLA rollups when the aggregator writes them, else the transitions.

Rollups are the aggregator's to write (issue #5; it is the only writer of derived state).
This module only reads them, and expects:

    healthbus:{ns}:sla:day:<service>     `Keys.rollup("day", service)`: a hash
        field  "YYYY-MM-DD"              one UTC day
        value  a JSON object; every member optional (missing: 0 or null), others ignored:
               healthy_ms, degraded_ms, error_ms, unknown_ms
                                 time in each status that day, blind time not included
               blind_ms          time the aggregator could not see (left out of all figures)
               incidents         incidents opened that day
               p95_duration_ms   95th percentile of that day's heartbeat `duration_ms`, or null
               through_ms, status  (on the day the service was last accounted) accounted up
                                 to then, and in that status since: a reader adds the span
                                 from then to now to that status (the aggregator accounts
                                 each service at least every `sla_flush_s`)

`Keys.rollup("hour" | "minute", service)` hold the same values under "YYYY-MM-DDTHH" and
"YYYY-MM-DDTHH:MM". The writer keeps each hash bounded by age (HDEL of old fields, and an
EXPIRE on the key so a forgotten service's rollups go too). The web app reads `day` only.

A service with no `day` hash gets figures derived from the transitions stream instead
(`"source": "transitions"`): the time between its transitions, over the period the stream
still retains; no durations there, and blind time counts as the status it interrupted.
"""

from __future__ import annotations

from typing import Any, Final, Literal, cast

import msgspec

from healthbus.connection import AsyncClient
from healthbus.keys import Keys
from healthbus.schema import ServiceView, Status, Transition, iso_ms, parse_stream_id
from healthbus.web.transitions import Scan, oldest_ms
from healthbus.web.uptime import Day, Tally, date_ms, summarize, tally_transitions, window

__all__ = ["MAX_DAYS", "History", "read_history"]

MAX_DAYS: Final = 90
#: Entries one history may scan of the transitions stream (the default cap is 100 000).
SCAN_BUDGET: Final = 200_000


class History(msgspec.Struct, kw_only=True):
    service: str
    source: Literal["rollups", "transitions"]
    from_: str = msgspec.field(name="from")
    to: str
    #: Oldest first, one per UTC day of the window; days with nothing known have `known_s` 0.
    days: list[Day]
    note: str | None = None


class _Rollup(msgspec.Struct, kw_only=True):
    healthy_ms: float = 0
    degraded_ms: float = 0
    error_ms: float = 0
    unknown_ms: float = 0
    blind_ms: float = 0
    incidents: int = 0
    p95_duration_ms: float | None = None
    through_ms: int | None = None
    status: str | None = None


_rollup_decoder = msgspec.json.Decoder(_Rollup)


async def read_history(
    redis: AsyncClient,
    keys: Keys,
    name: str,
    *,
    days: int,
    now_ms: int,
    current: ServiceView | None,
) -> History:
    """The last `days` UTC days of `name` up to `now_ms` (Redis time); `current` is its
    view in the snapshot, if it has one."""
    starts = window(now_ms, days)
    rows: Any = await redis.hgetall(keys.rollup("day", name))
    note = None
    if rows:
        source: Literal["rollups", "transitions"] = "rollups"
        tallies = _from_rollups(rows, now_ms)
    else:
        source = "transitions"
        tallies, reach_ms = await _from_transitions(
            redis, keys.transitions, name, starts[0], now_ms, current
        )
        note = (
            "no SLA rollups yet: derived from the transitions stream, which reaches back to "
            f"{iso_ms(reach_ms)}; no durations, and blind time counts as the status it "
            "interrupted"
        )
    return History(
        service=name,
        source=source,
        from_=iso_ms(starts[0]),
        to=iso_ms(now_ms),
        days=[summarize(day, tallies.get(day)) for day in starts],
        note=note,
    )


def _from_rollups(rows: dict[bytes, bytes], now_ms: int) -> dict[int, Tally]:
    tallies: dict[int, Tally] = {}
    since: tuple[int, Status] | None = None
    for field, raw in rows.items():
        day = date_ms(field.decode(errors="replace"))
        try:
            r = _rollup_decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
        if day is None:
            continue
        times = {
            "healthy": r.healthy_ms,
            "degraded": r.degraded_ms,
            "error": r.error_ms,
            "unknown": r.unknown_ms,
        }
        tallies[day] = Tally(
            ms={status: int(ms) for status, ms in times.items() if ms > 0},
            incidents=r.incidents,
            p95_duration_ms=r.p95_duration_ms,
        )
        if (
            r.through_ms is not None
            and r.status in times
            and (not since or since[0] < r.through_ms)
        ):
            since = (r.through_ms, cast(Status, r.status))
    if since is not None:
        # Not accounted yet: from the last accounting to now, in the status it was in.
        for day, tally in tally_transitions([], since[1], since[0], now_ms).items():
            mine = tallies.setdefault(day, Tally())
            for status, ms in tally.ms.items():
                mine.add(status, ms)
    return tallies


async def _from_transitions(
    redis: AsyncClient,
    key: str,
    name: str,
    start_ms: int,
    now_ms: int,
    current: ServiceView | None,
) -> tuple[dict[int, Tally], int]:
    """The tallies, and the time from which they are known."""
    first_ms = await oldest_ms(redis, key)
    mine: list[Transition] = []
    scan = Scan(redis, key, budget=SCAN_BUDGET)
    reach_ms = start_ms
    async for stream_id, t in scan:
        if t.service == name:
            mine.append(t)
        if (parse_stream_id(stream_id) or (0, 0))[0] < start_ms:
            break
    else:
        if scan.at_start:
            reach_ms = max(start_ms, first_ms if first_ms is not None else now_ms)
        elif scan.last_id is not None:  # out of budget: known from where it stopped
            reach_ms = max(start_ms, (parse_stream_id(scan.last_id) or (now_ms, 0))[0])
    mine.sort(key=lambda t: t.at_ms)
    initial: Status = mine[0].from_ if mine else current.status if current else "unknown"
    return tally_transitions(mine, initial, reach_ms, now_ms), reach_ms
