"""The bus's own heartbeat: its figures, its self-assessment, and the fold's verdict on it."""

from __future__ import annotations

import msgspec

from aggregator.bus import BUS_SERVICE, STREAM_CAP, BusMeter, BusStats, bus_heartbeat
from aggregator.fold import Folder
from aggregator.state import FoldState
from healthbus.schema import decode_heartbeat

T0 = 1_767_225_600_000


def stats(**changes: object) -> BusStats:
    base = BusStats(
        leader="agg-1",
        stream_length=1_000,
        lag_ms=0,
        fold_ms=3.0,
        invalid=0,
        invalid_new=0,
        gaps=0,
        gaps_new=0,
        blind_ms=0,
        buffer_s=60.0,
    )
    return msgspec.structs.replace(base, **changes)


def test_a_healthy_bus_reports_its_figures() -> None:
    hb = decode_heartbeat(bus_heartbeat(stats(), 10.0))
    assert (hb.service, hb.kind, hb.status, hb.error) == (BUS_SERVICE, "bus", "healthy", None)
    assert hb.details is not None and hb.details["stream_cap"] == STREAM_CAP
    assert hb.details["leader"] == "agg-1"


def test_falling_behind_is_degraded_then_error() -> None:
    cases = {
        "degraded": [
            stats(lag_ms=11_000),
            stats(stream_length=STREAM_CAP // 2),
            stats(gaps=3, gaps_new=1),
            stats(fold_ms=1_500),
        ],
        "error": [stats(lag_ms=61_000), stats(stream_length=STREAM_CAP)],
    }
    for status, all_stats in cases.items():
        for s in all_stats:
            hb = decode_heartbeat(bus_heartbeat(s, 10.0))
            assert hb.status == status and hb.error, s


def test_the_meter_reports_a_minute_after_leading_and_counts_news() -> None:
    meter = BusMeter(10.0)
    assert not meter.due(100.0) and not meter.due(159.9)
    assert meter.due(160.0) and not meter.due(165.0) and meter.due(170.0)
    meter.folded(0.002)
    first = decode_heartbeat(meter.report(**REPORT, invalid=2, gaps=1))
    second = decode_heartbeat(meter.report(**REPORT, invalid=2, gaps=1))
    assert (first.status, first.hint) == (
        "degraded",
        "2 invalid entries dead-lettered since the last report",
    )
    assert (second.status, second.hint) == ("healthy", None)
    assert not BusMeter(0).due(1e9)


REPORT = {"leader": "a", "lag_ms": 0, "blind_ms": 0, "buffer_s": 1.0}


def test_the_fold_judges_the_bus_like_any_service() -> None:
    folder = Folder(FoldState())
    folder.apply(decode_heartbeat(bus_heartbeat(stats(), 10.0)), T0)
    [t] = folder.apply(decode_heartbeat(bus_heartbeat(stats(lag_ms=20_000), 10.0)), T0 + 10_000)
    assert (t.service, t.to) == (BUS_SERVICE, "degraded") and "behind" in t.reason
    # No aggregator for a while: the next leader's fold says so, stamped when it happened.
    late = folder.expire(T0 + 70_000)
    assert [x.to for x in late] == ["error"] and late[0].at_ms == T0 + 10_000 + 50_001
