"""The pure grading of probe numbers: thresholds, findings, details that always fit, and the
Redis and PostgreSQL judges (no I/O)."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from healthbus.schema import STATUS_ORDER, Heartbeat, decode_heartbeat, encode
from publishers.probes.postgres_probe import PgStats, PostgresProbe, TableCheck
from publishers.probes.postgres_probe import judge as judge_postgres
from publishers.probes.redis_probe import QueueCheck, RedisProbe, StreamCheck, StreamStats
from publishers.probes.redis_probe import judge as judge_redis
from publishers.probes.result import (
    Finding,
    conclude,
    fit_details,
    grade,
    human_count,
    latency_finding,
)

numbers = st.floats(min_value=0, max_value=1e9, allow_nan=False)
limits = st.none() | numbers


@given(numbers, numbers, limits, limits)
def test_grade_never_improves_as_the_value_grows(a: float, b: float, d: Any, e: Any) -> None:
    low, high = sorted((a, b))
    assert STATUS_ORDER[grade(low, d, e)] <= STATUS_ORDER[grade(high, d, e)]


def test_grade_follows_the_design_table_for_redis() -> None:
    assert [grade(ms, 50, 500) for ms in (49.9, 50, 499, 500)] == [
        "healthy",
        "degraded",
        "degraded",
        "error",
    ]
    assert grade(1e9, None, None) == "healthy"


def test_findings_say_the_value_and_the_threshold_it_passed() -> None:
    assert latency_finding(10, 50, 500) is None
    assert latency_finding(612.34, 50, 500) == Finding(
        "error", "latency 612.3 ms (error at 500 ms)"
    )


def test_conclude_takes_the_worst_and_lists_every_reason_worst_first() -> None:
    result = conclude(
        [Finding("degraded", "slow"), None, Finding("error", "full")],
        duration_ms=3.0,
        details={"a": 1},
        hint="h",
    )
    assert (result.status, result.ok, result.error) == ("error", False, "full; slow")
    healthy = conclude([None], duration_ms=1.0, details={})
    assert (healthy.status, healthy.ok, healthy.error) == ("healthy", True, None)


detail_values = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=300)


@given(st.dictionaries(st.text(max_size=100), detail_values, max_size=80))
def test_fitted_details_are_always_accepted_by_the_bus(details: dict[str, Any]) -> None:
    fitted = fit_details(details)
    hb = Heartbeat(v=1, service="p", interval_s=15, ok=True, kind="probe", details=fitted)
    decode_heartbeat(encode(hb))  # raises if the bus would reject it
    assert set(fitted) <= {key[:64] for key in details}


def test_fitting_keeps_the_first_entries() -> None:
    details = {f"k{i}": "x" * 10 for i in range(40)}
    assert list(fit_details(details)) == [f"k{i}" for i in range(32)]
    big = {f"k{i}": "x" * 600 for i in range(10)}
    assert list(fit_details(big)) == ["k0", "k1", "k2"]


def test_human_counts() -> None:
    assert [human_count(n) for n in (12, 1_000, 5_432_100, 2e9)] == ["12", "1k", "5.4M", "2G"]


def redis_probe(**keys: Any) -> RedisProbe:
    return msgspec.convert({"name": "cache", "url": "redis://cache", **keys}, RedisProbe)


INFO = {"used_memory": 900, "maxmemory": 1000, "connected_clients": 7, "evicted_keys": 3}


def test_redis_stream_past_its_threshold_is_degraded_with_the_numbers() -> None:
    probe = redis_probe(
        streams=[{"key": "tasks", "length_degraded": 100, "lag_error": 50}],
        queues=[{"key": "later", "length_error": 10}],
        memory_degraded=0.95,
    )
    result = judge_redis(probe, 1.0, 2.0, INFO, [StreamStats(150, 3, 2)], [4])
    assert result.status == "degraded"
    assert result.error == "stream tasks length 150 (degraded at 100)"
    assert result.details["stream.tasks.length"] == 150
    assert result.details["stream.tasks.pending"] == 3
    assert result.details["queue.later.length"] == 4
    assert result.details["memory_used_pct"] == 90.0
    assert result.details["evicted_keys"] == 3


def test_redis_errors_on_memory_lag_and_a_queue_it_cannot_read() -> None:
    probe = redis_probe(
        streams=[StreamCheck(key="tasks", lag_error=50)], queues=[QueueCheck(key="q")]
    )
    result = judge_redis(
        probe, 600.0, 2.0, {**INFO, "used_memory": 990}, [StreamStats(1, 0, 80)], [ValueError("x")]
    )
    assert result.status == "error" and not result.ok
    assert result.error is not None
    for part in (
        "latency 600 ms",
        "memory used 99 %",
        "stream tasks lag 80",
        "cannot read queue q",
    ):
        assert part in result.error


def test_redis_without_maxmemory_reports_no_memory_share() -> None:
    result = judge_redis(redis_probe(), 1.0, 2.0, {**INFO, "maxmemory": 0}, [], [])
    assert result.status == "healthy" and "memory_used_pct" not in result.details


def pg_probe(**keys: Any) -> PostgresProbe:
    return msgspec.convert({"name": "db", "url": "postgresql://db/app", **keys}, PostgresProbe)


def test_postgres_big_table_is_a_warning_and_a_hint_not_a_status() -> None:
    probe = pg_probe(tables=[{"name": "events", "rows_warning": 1_000_000}, {"name": "users"}])
    stats = PgStats(100, False, None, [("active", "api", 3), ("idle", "worker", 5)], [5.4e6, 10])
    result = judge_postgres(probe, 2.0, 3.0, stats)
    assert result.status == "healthy"
    assert result.hint == "events table has 5.4M rows — consider enabling retention cleanup"
    assert result.details["warning"] == "events has 5.4M rows (warning above 1M)"
    assert result.details["table.events.rows"] == 5_400_000
    assert result.details["table.users.rows"] == 10


def test_postgres_connections_by_state_and_application() -> None:
    probe = pg_probe(applications=["api", "cron"])
    rows = [
        ("active", "api", 40),
        ("idle in transaction", "api", 2),
        ("", "x", 1),
        ("idle", "", 42),
    ]
    result = judge_postgres(probe, 2.0, 3.0, PgStats(100, False, None, rows, []))
    assert result.status == "degraded"
    assert result.error == "connections in use 85 % (degraded at 80 %)"
    d = result.details
    assert (d["connections"], d["connections.active"], d["connections.idle"]) == (85, 40, 42)
    assert (d["connections.idle_in_transaction"], d["connections.other"]) == (2, 1)
    assert (d["app.api.connections"], d["app.cron.connections"]) == (42, 0)


def test_postgres_replica_lag_and_a_missing_table() -> None:
    probe = pg_probe(tables=[TableCheck(name="gone")], replication_lag_error_s=60)
    result = judge_postgres(probe, 2.0, 3.0, PgStats(100, True, 75.0, [], [None]))
    assert result.status == "error"
    assert result.error == "replication lag 75 s (error at 60 s); table gone does not exist"
    assert result.details["replica"] is True and result.details["replication_lag_s"] == 75.0


def test_postgres_never_analyzed_table_has_no_estimate() -> None:
    probe = pg_probe(tables=[TableCheck(name="fresh", rows_warning=0)])
    result = judge_postgres(probe, 2.0, 3.0, PgStats(100, False, None, [], [-1.0]))
    assert result.details["table.fresh.rows"] is None and result.hint is None
