"""SLA rollups from the pure fold: a scripted hour, time compressed through the injected
clock, against a hand computation; and the same figures whatever the flush points."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.fold import Folder
from aggregator.persist import load_state
from aggregator.rules import Rules
from aggregator.sla import (
    BASE,
    DAY_MS,
    HOUR_MS,
    MAX_BUCKET,
    RESOLUTIONS,
    Ledger,
    Retention,
    account,
    bucket_field,
    p95,
    record_duration,
)
from aggregator.state import Clock, FoldState, Service
from healthbus.config import Config
from healthbus.schema import Heartbeat, encode

#: 2026-01-01T10:00:00Z
T0 = 1_767_261_600_000
MIN = 60_000
RULES = Rules.from_config(Config())
Rows = dict[tuple[str, str], dict[str, dict[str, Any]]]


def beat(ok: bool = True, **fields: Any) -> Heartbeat:
    return Heartbeat(v=1, service="api", interval_s=60.0, ok=ok, **fields)


def merge(rows: Rows, folder: Folder) -> None:
    """Drain the ledger as a commit would, merging as the Lua script does."""
    now = folder.state.clock.to_wall(folder.state.clock.now_v)
    ledger = folder.state.ledger
    for service in ledger.services():
        for w in ledger.take(service, now):
            row = rows.setdefault((w.resolution, service), {}).setdefault(w.field, {})
            for member, value in json.loads(w.delta).items():
                row[member] = row.get(member, 0) + value
            row.update(json.loads(w.absolute))


def scripted_hour(flush_at: set[int] = frozenset(range(0, 61, 7))) -> Rows:  # type: ignore[assignment]
    """10:00-11:00 for `api` (60 s cadence); `flush_at`: minutes at which the runner's tick
    accounts every service and commits."""
    folder = Folder(FoldState(), RULES)
    rows: Rows = {}
    script: list[tuple[int, Any]] = []
    script += [(m * MIN, beat(duration_ms=100.0)) for m in range(16)]  # 10:00-10:15 healthy
    script += [(16 * MIN, beat(ok=False, error="db down", duration_ms=100.0))]
    script += [(m * MIN, beat(ok=False, duration_ms=100.0)) for m in range(17, 20)]
    script += [(20 * MIN, beat(status="degraded", duration_ms=2000.0))]  # degraded 10:20-10:30
    script += [(m * MIN, beat(status="degraded", duration_ms=100.0)) for m in range(21, 30)]
    script += [(30 * MIN, beat(duration_ms=2000.0))]
    script += [(m * MIN, beat(duration_ms=100.0)) for m in range(31, 41)]  # healthy to 10:40
    script += [(58 * MIN, beat(duration_ms=2000.0)), (59 * MIN, beat(duration_ms=100.0))]
    events = dict(script)
    for minute in range(61):
        at = T0 + minute * MIN
        if minute == 50:  # Redis unreachable 10:50-10:55: blind, not downtime
            folder.expire(at)
            folder.grant(at, at + 5 * MIN)
            continue
        if 50 < minute < 55:
            continue
        if minute * MIN in events:
            folder.apply(events[minute * MIN], at)
        folder.expire(at)
        if minute in flush_at or minute == 60:
            folder.account(10)
            merge(rows, folder)
    return rows


def test_a_scripted_hour_matches_the_hand_computation() -> None:
    rows = scripted_hour()
    hour = rows[("hour", "api")]["2026-01-01T10"]
    # healthy 10:00-10:16, 10:30-10:42:00.001 (two intervals of silence, then degraded),
    # 10:58-11:00; error 10:16-10:20, 10:45:00.001-10:58 less the blind 10:50-10:55;
    # degraded 10:20-10:30 and 10:42:00.001-10:45:00.001.
    expected = {
        "healthy_ms": 16 * MIN + 12 * MIN + 1 + 2 * MIN,
        "error_ms": 4 * MIN + (5 * MIN - 1) + 3 * MIN,
        "degraded_ms": 10 * MIN + 3 * MIN,
        "blind_ms": 5 * MIN,
        "incidents": 2,
    }
    assert {k: hour[k] for k in expected} == expected
    assert sum(hour[k] for k in ("healthy_ms", "error_ms", "degraded_ms", "blind_ms")) == 60 * MIN
    day = rows[("day", "api")]["2026-01-01"]
    assert {k: day[k] for k in expected} == expected
    # 43 heartbeats with a duration, 3 of them 2 s: the 41st (95 %) is 2 s (within 2.5 %).
    assert day["p95_duration_ms"] == pytest.approx(2000, rel=0.025)
    minutes = rows[("minute", "api")]
    assert minutes["2026-01-01T10:16"] == {"error_ms": MIN, "incidents": 1}
    assert minutes["2026-01-01T10:42"] == {"healthy_ms": 1, "degraded_ms": MIN - 1, "incidents": 1}
    assert minutes["2026-01-01T10:52"] == {"blind_ms": MIN}
    uptime = hour["healthy_ms"] / (hour["healthy_ms"] + hour["degraded_ms"] + hour["error_ms"])
    assert round(100 * uptime, 2) == 54.55


@settings(max_examples=25, derandomize=True, deadline=None, database=None)
@given(st.sets(st.integers(0, 60), max_size=12))
def test_the_figures_do_not_depend_on_when_the_runner_flushes(flush_at: set[int]) -> None:
    assert scripted_hour(flush_at) == scripted_hour()


def test_fields_and_p95() -> None:
    assert bucket_field("day", T0) == "2026-01-01"
    assert bucket_field("hour", T0 + 59 * MIN) == "2026-01-01T10"
    assert bucket_field("minute", T0 + 59 * MIN) == "2026-01-01T10:59"
    assert p95(0, []) is None
    svc = Service(name="x", kind="perpetual", since_ms=T0)
    ledger = Ledger()
    for ms in range(1, 101):
        record_duration(svc, T0, float(ms), ledger)
    assert svc.sla_counts is not None
    assert p95(svc.sla_lo, svc.sla_counts) == pytest.approx(95, rel=0.025)


def sparse_p95(histogram: dict[int, int]) -> float | None:
    """The p95 over a bucket -> count map, as rows kept it before the dense histogram."""
    total = sum(histogram.values())
    rank, seen = math.ceil(0.95 * total), 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return round(float(BASE ** (bucket + 0.5)) - 1, 1)
    return None


@given(st.lists(st.floats(0, 1e12, allow_nan=False), min_size=1, max_size=60))
def test_the_dense_histogram_counts_every_duration_in_its_bucket(durations: list[float]) -> None:
    """Widened down or up as durations come, it holds exactly the buckets counted, and
    its p95 is the one a bucket -> count map gives."""
    svc = Service(name="x", kind="perpetual", since_ms=T0)
    for ms in durations:
        record_duration(svc, T0, ms, Ledger())
    expected = Counter(int(math.log(ms + 1) / math.log(BASE)) for ms in durations)
    assert svc.sla_counts is not None
    assert 0 <= svc.sla_lo and svc.sla_lo + len(svc.sla_counts) - 1 <= MAX_BUCKET
    counted = {svc.sla_lo + i: n for i, n in enumerate(svc.sla_counts) if n}
    assert counted == expected
    assert svc.sla_counts[0] and svc.sla_counts[-1]  # no wider than its buckets
    assert p95(svc.sla_lo, svc.sla_counts) == sparse_p95(expected)


def test_a_row_with_the_sparse_histogram_loads_into_the_dense_one() -> None:
    """Rows written before the dense histogram keep their day's durations on upgrade."""
    svc = Service(name="x", kind="perpetual", since_ms=T0, sla_day=T0 - T0 % DAY_MS)
    row = encode(svc)[:-1] + b',"sla_hist":{"53":3,"55":1,"-4":7,"99999":2}}'
    loaded = load_state({b"x": row}).services["x"]
    assert (loaded.sla_lo, loaded.sla_counts) == (53, [3, 0, 1])  # out of range: dropped
    assert loaded.sla_day == svc.sla_day
    assert b"sla_hist" not in encode(loaded)


@given(st.sampled_from(sorted(RESOLUTIONS)), st.integers(0, 4_102_444_800_000))
def test_a_bucket_is_named_by_its_start(resolution: str, ms: int) -> None:
    """The cutoff of a rollup is named by its bucket's start (cached), as by any time in it."""
    size = RESOLUTIONS[resolution]
    assert bucket_field(resolution, ms - ms % size) == bucket_field.__wrapped__(resolution, ms)


def test_bare_rules_write_no_rollups() -> None:
    folder = Folder(FoldState())
    folder.apply(beat(), T0)
    folder.apply(beat(ok=False), T0 + MIN)
    folder.account(10)
    assert not folder.state.ledger.services()


def test_the_web_adds_the_span_not_accounted_yet_to_the_status_it_is_in() -> None:
    from healthbus.web.history import _from_rollups

    row = {"healthy_ms": 1_000, "through_ms": T0 + 1_000, "status": "error"}
    tallies = _from_rollups({b"2026-01-01": json.dumps(row).encode()}, T0 + 61_000)
    [tally] = tallies.values()
    assert tally.ms == {"healthy": 1_000, "error": 60_000}


def test_a_grant_inside_a_span_is_blind_even_with_no_blind_time_owed() -> None:
    """The short path (nothing blind since the service's mark) is taken only when no grant
    ends after the span's start: grants are kept in time order."""
    ledger = Ledger()
    ledger.retention = Retention(minute=HOUR_MS, hour=0, day=0)
    clock = Clock(grants=[(T0 - 5 * MIN, T0 - 4 * MIN), (T0 + MIN, T0 + 2 * MIN)])
    svc = Service(name="api", kind="perpetual", since_ms=T0, status="healthy", sla_ms=T0)
    assert account(svc, T0 + 3 * MIN, clock, ledger)
    minutes = {w.field: json.loads(w.delta) for w in ledger.take("api", T0 + 3 * MIN)}
    assert minutes == {
        "2026-01-01T10:00": {"healthy_ms": MIN},
        "2026-01-01T10:01": {"blind_ms": MIN},
        "2026-01-01T10:02": {"healthy_ms": MIN},
    }


def test_each_commit_time_gets_its_own_ttl_and_cutoff() -> None:
    ledger = Ledger()
    ledger.retention = Retention(minute=10 * MIN, hour=0, day=0)
    cutoffs = []
    for now in (T0 + 30 * MIN, T0 + 30 * MIN, T0 + 45 * MIN):
        ledger.add("api", "healthy_ms", now - MIN, now)
        (write,) = [
            w for w in ledger.take("api", now) if w.field == bucket_field("minute", now - MIN)
        ]
        cutoffs.append((write.cutoff, write.ttl_ms))
    assert cutoffs == [
        ("2026-01-01T10:20", 11 * MIN),
        ("2026-01-01T10:20", 11 * MIN),
        ("2026-01-01T10:35", 11 * MIN),
    ]
