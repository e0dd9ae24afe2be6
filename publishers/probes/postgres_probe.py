"""`type = "postgres"`: `SELECT 1` latency, connections in use against `max_connections` (by
state, optionally by application name), replication lag on a replica, and row estimates of
named tables (`pg_class.reltuples`, free to read) with a warning and a hint past a threshold:
the "events table has 5.4M rows" signal.

The driver is psycopg 3: fully typed, async, and it speaks libpq, so URLs, `sslmode` and the
`PG*` environment variables (PGPASSWORD, PGSSLROOTCERT, ...) work exactly as in `psql`.
`check()` gathers the numbers; `judge()` grades them without I/O.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, ClassVar, NamedTuple

import msgspec

from publishers.probes.base import (
    Millis,
    Seconds,
    UrlProbeSpec,
    closing,
    elapsed_ms,
)
from publishers.probes.result import (
    DetailValue,
    Finding,
    ProbeResult,
    conclude,
    human_count,
    latency_finding,
    threshold_finding,
)

__all__ = ["PgStats", "PostgresProbe", "TableCheck", "judge"]

Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]
#: pg_stat_activity states, as detail keys; any other state counts as `other`.
STATES = {
    "active": "active",
    "idle": "idle",
    "idle in transaction": "idle_in_transaction",
    "idle in transaction (aborted)": "idle_in_transaction",
}
SERVER_SQL = """
SELECT current_setting('max_connections')::int,
       pg_is_in_recovery(),
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
       END
"""
CONNECTIONS_SQL = """
SELECT coalesce(state, ''), coalesce(application_name, ''), count(*)::int
FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1, 2
"""
TABLES_SQL = """
SELECT c.reltuples::float8
FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, i)
LEFT JOIN pg_class c ON c.oid = to_regclass(t.name)
ORDER BY t.i
"""


class TableCheck(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A table whose estimated row count is watched (`schema.table` or a name on the path)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    rows_warning: Annotated[int, msgspec.Meta(ge=0)] | None = None
    #: Advice shown past rows_warning; by default "consider enabling retention cleanup".
    hint: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class PgStats(NamedTuple):
    max_connections: int
    replica: bool
    #: Seconds behind the primary (replicas only).
    lag_s: float | None
    #: (state, application_name, count) of client backends.
    connections: Sequence[tuple[str, str, int]]
    #: `reltuples` per watched table, in order; None: no such table; -1: never analyzed.
    rows: Sequence[float | None]


class PostgresProbe(UrlProbeSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """design.md: a database, 200/1000 ms, 5 s timeout, checked every 15 s (critical path)."""

    type: ClassVar[str] = "postgres"
    requires: ClassVar[tuple[str, ...]] = ("psycopg",)
    ordered: ClassVar[tuple[tuple[str, str], ...]] = (
        ("degraded_ms", "error_ms"),
        ("connections_degraded", "connections_error"),
        ("replication_lag_degraded_s", "replication_lag_error_s"),
    )
    url: Annotated[str, msgspec.Meta(pattern=r"^postgres(ql)?://")]
    #: Fractions of max_connections in use.
    connections_degraded: Fraction = 0.8
    connections_error: Fraction = 0.95
    #: application_name values whose connections are counted apart.
    applications: Annotated[list[str], msgspec.Meta(max_length=8)] = msgspec.field(
        default_factory=list
    )
    replication_lag_degraded_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    replication_lag_error_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    tables: Annotated[list[TableCheck], msgspec.Meta(max_length=8)] = msgspec.field(
        default_factory=list
    )
    interval: Seconds = 15.0
    timeout: Seconds = 5.0
    degraded_ms: Millis | None = 200.0
    error_ms: Millis | None = 1000.0

    async def check(self) -> ProbeResult:
        import psycopg  # the `probes` extra; the loader checks it is installed

        started = time.perf_counter()
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name="healthbus-probe"
        )
        async with closing(conn.close):
            connect_ms = elapsed_ms(started)
            started = time.perf_counter()
            await conn.execute("SELECT 1")
            select_ms = elapsed_ms(started)
            server = await (await conn.execute(SERVER_SQL)).fetchone()
            assert server is not None
            connections = await (await conn.execute(CONNECTIONS_SQL)).fetchall()
            rows: list[float | None] = []
            if self.tables:
                names = [table.name for table in self.tables]
                rows = [r[0] for r in await (await conn.execute(TABLES_SQL, [names])).fetchall()]
        stats = PgStats(server[0], server[1], server[2], connections, rows)
        return judge(self, select_ms, connect_ms, stats)


def judge(spec: PostgresProbe, select_ms: float, connect_ms: float, stats: PgStats) -> ProbeResult:
    """Grade one check's numbers against the probe's thresholds (pure)."""
    in_use = sum(n for _, _, n in stats.connections)
    by_state = dict.fromkeys(("active", "idle", "idle_in_transaction", "other"), 0)
    by_app = dict.fromkeys(spec.applications, 0)
    for state, app, n in stats.connections:
        by_state[STATES.get(state, "other")] += n
        if app in by_app:
            by_app[app] += n
    percent = round(100 * in_use / stats.max_connections, 1) if stats.max_connections else 0.0
    details: dict[str, DetailValue] = {
        "connect_ms": connect_ms,
        "connections": in_use,
        "max_connections": stats.max_connections,
        "connections_used_pct": percent,
        **{f"connections.{state}": n for state, n in by_state.items()},
        **{f"app.{app}.connections": n for app, n in by_app.items()},
        "replica": stats.replica,
    }
    findings: list[Finding | None] = [
        latency_finding(select_ms, spec.degraded_ms, spec.error_ms),
        threshold_finding(
            "connections in use",
            percent,
            100 * spec.connections_degraded,
            100 * spec.connections_error,
            " %",
        ),
    ]
    if stats.replica and stats.lag_s is not None:
        details["replication_lag_s"] = round(stats.lag_s, 3)
        findings.append(
            threshold_finding(
                "replication lag",
                round(stats.lag_s, 1),
                spec.replication_lag_degraded_s,
                spec.replication_lag_error_s,
                " s",
            )
        )
    warnings: list[str] = []
    hints: list[str] = []
    for table, rows in zip(spec.tables, stats.rows, strict=True):
        if rows is None:
            details[f"table.{table.name}.rows"] = None
            findings.append(Finding("degraded", f"table {table.name} does not exist"))
            continue
        estimate = int(rows) if rows >= 0 else None  # -1: never vacuumed or analyzed
        details[f"table.{table.name}.rows"] = estimate
        if estimate is not None and table.rows_warning is not None:
            if estimate > table.rows_warning:
                count, limit = human_count(estimate), human_count(table.rows_warning)
                warnings.append(f"{table.name} has {count} rows (warning above {limit})")
                advice = table.hint or "consider enabling retention cleanup"
                hints.append(f"{table.name} table has {count} rows — {advice}")
    if warnings:
        details["warning"] = "; ".join(warnings)
    return conclude(findings, duration_ms=select_ms, details=details, hint="; ".join(hints) or None)
