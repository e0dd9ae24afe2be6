"""alternatives: the designs healthbus replaces, fed the same heartbeats.

From the design discussion: a `service_health` table upserted per heartbeat (one connection,
and a pool of four), its best batched form (the faster of one `INSERT … SELECT FROM
unnest(…) ON CONFLICT` per batch and a batch COPYed into a staging table then upserted from
it in one transaction, at several batch sizes), and an events table with one insert per
heartbeat. PostgreSQL runs with its defaults (each autocommit waits for its WAL flush, as in
production). Everything lives in a schema of this run's own, dropped at the end. Ratios:
healthbus's fold at the same number of services over each.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from healthbus.bench.context import Bench
from healthbus.bench.fold import fold_name
from healthbus.bench.payload import heartbeat, service_name
from healthbus.bench.report import Figure

__all__ = ["run"]

SERVICES = 10_000
POOL = 4
BATCHES = (1_000, 5_000, 10_000)
TARGET_VS_UPSERT = 15.0
TARGET_VS_BATCHED = 2.0

_TABLES = """
CREATE SCHEMA {s};
CREATE TABLE {s}.service_health (
    service text PRIMARY KEY, last_heartbeat timestamptz NOT NULL, ok boolean NOT NULL,
    duration_ms double precision, payload jsonb NOT NULL);
CREATE TABLE {s}.events (
    id bigserial PRIMARY KEY, service text NOT NULL, at timestamptz NOT NULL DEFAULT now(),
    payload jsonb NOT NULL);
CREATE INDEX ON {s}.events (service, at);
"""
_UPSERT = """
INSERT INTO {s}.service_health (service, last_heartbeat, ok, duration_ms, payload)
VALUES (%s, now(), %s, %s, %s)
ON CONFLICT (service) DO UPDATE SET last_heartbeat = excluded.last_heartbeat,
    ok = excluded.ok, duration_ms = excluded.duration_ms, payload = excluded.payload
"""
_BATCH = """
INSERT INTO {s}.service_health (service, last_heartbeat, ok, duration_ms, payload)
SELECT service, now(), ok, duration_ms, payload
FROM unnest(%s::text[], %s::boolean[], %s::float8[], %s::jsonb[])
    AS t(service, ok, duration_ms, payload)
ON CONFLICT (service) DO UPDATE SET last_heartbeat = excluded.last_heartbeat,
    ok = excluded.ok, duration_ms = excluded.duration_ms, payload = excluded.payload
"""
_STAGE = (
    "CREATE TEMP TABLE stage (service text, ok boolean, duration_ms float8, payload jsonb) "
    "ON COMMIT DELETE ROWS"
)
_FROM_STAGE = """
INSERT INTO {s}.service_health (service, last_heartbeat, ok, duration_ms, payload)
SELECT service, now(), ok, duration_ms, payload FROM stage
ON CONFLICT (service) DO UPDATE SET last_heartbeat = excluded.last_heartbeat,
    ok = excluded.ok, duration_ms = excluded.duration_ms, payload = excluded.payload
"""
_EVENT = "INSERT INTO {s}.events (service, payload) VALUES (%s, %s)"


def run(bench: Bench) -> list[Figure]:
    services = bench.size(SERVICES, SERVICES, least=10)
    healthbus = bench.values.get(fold_name(services), float("nan"))
    try:
        import psycopg
    except ImportError:
        return _missing(healthbus, "psycopg is not installed: pip install 'healthbus[bench]'")
    try:
        admin = psycopg.connect(bench.postgres_url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        return _missing(healthbus, f"PostgreSQL unreachable at {bench.postgres_url}: {exc}")
    schema = f"healthbus_bench_{uuid.uuid4().hex[:8]}"
    seconds = bench.seconds(1.5, 10.0)
    rows = [(service_name(i), True, 12.5, heartbeat(i).decode()) for i in range(services)]
    try:
        admin.execute(_TABLES.format(s=schema).encode())

        def connect() -> Any:
            return psycopg.connect(bench.postgres_url, autocommit=True)

        def per_heartbeat(sql: str, connections: int) -> float:
            params = _event_params if sql is _EVENT else _upsert_params
            return _rate(connect, sql.format(s=schema), params, rows, seconds, connections)

        bench.progress(f"alternatives: upsert per heartbeat, one connection, {seconds:g} s")
        upsert = per_heartbeat(_UPSERT, 1)
        bench.progress(f"alternatives: upsert per heartbeat, pool of {POOL}, {seconds:g} s")
        pooled = per_heartbeat(_UPSERT, POOL)
        batched = 0.0
        # --quick tries the two largest batches only: the best form has been the largest.
        for size in BATCHES[-2:] if bench.quick else BATCHES:
            for form, send in (("unnest", _unnest), ("COPY", _copy)):
                bench.progress(f"alternatives: batched upsert ({form}), {size:,} a batch")
                rate = _batched(connect, send, _BATCH if send is _unnest else _FROM_STAGE,
                                schema, rows, size, seconds)  # fmt: skip
                batched = max(batched, rate)
        bench.progress(f"alternatives: events-table insert per heartbeat, {seconds:g} s")
        events = per_heartbeat(_EVENT, 1)
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())
        admin.close()
    note = f"{fold_name(services).removeprefix('fold: ')}, as in the fold"
    return [
        Figure(name="postgres: upsert per heartbeat, 1 connection", value=upsert, unit="hb/s"),
        Figure(name=f"postgres: upsert per heartbeat, pool of {POOL}", value=pooled, unit="hb/s"),
        Figure(
            name="postgres: batched upsert (best of unnest and COPY, 1k-10k a batch)",
            value=batched, unit="hb/s",
        ),
        Figure(name="postgres: events insert per heartbeat", value=events, unit="hb/s"),
        Figure.check(
            "healthbus / upsert per heartbeat", healthbus / upsert, "ratio", ">=", TARGET_VS_UPSERT,
            note,
        ),
        Figure(name=f"healthbus / upsert, pool of {POOL}", value=healthbus / pooled, unit="ratio"),
        Figure.check(
            "healthbus / batched upsert", healthbus / batched, "ratio", ">=", TARGET_VS_BATCHED,
            note,
        ),
        Figure(name="healthbus / events insert", value=healthbus / events, unit="ratio"),
    ]  # fmt: skip


def _missing(healthbus: float, why: str) -> list[Figure]:
    nan = float("nan")
    return [
        Figure.check("healthbus / upsert per heartbeat", nan, "ratio", ">=", TARGET_VS_UPSERT, why),
        Figure.check("healthbus / batched upsert", nan, "ratio", ">=", TARGET_VS_BATCHED, why),
    ]


Row = tuple[str, bool, float, str]


def _upsert_params(row: Row) -> Row:
    return row


def _event_params(row: Row) -> tuple[str, str]:
    return row[0], row[3]


def _rate(
    connect: Callable[[], Any],
    sql: str,
    params: Callable[[Row], tuple[Any, ...]],
    rows: list[Row],
    seconds: float,
    connections: int,
) -> float:
    """Statements a second, one heartbeat each, from `connections` threads."""
    counts = [0] * connections

    def worker(k: int) -> None:
        with connect() as conn:
            end = time.monotonic() + seconds
            i = k
            while time.monotonic() < end:
                conn.execute(sql, params(rows[i % len(rows)]))
                i += connections
                counts[k] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - start)


Send = Callable[[Any, str, list[Row]], None]


def _unnest(conn: Any, sql: str, batch: list[Row]) -> None:
    conn.execute(sql, [list(c) for c in zip(*batch, strict=True)])


def _copy(conn: Any, sql: str, batch: list[Row]) -> None:
    with conn.transaction():
        with conn.cursor().copy("COPY stage FROM STDIN") as copy:
            for row in batch:
                copy.write_row(row)
        conn.execute(sql)


def _batched(
    connect: Callable[[], Any],
    send: Send,
    sql: str,
    schema: str,
    rows: list[Row],
    size: int,
    seconds: float,
) -> float:
    """Heartbeats a second, upserted `size` at a time by `send` on one connection."""
    size = min(size, len(rows))  # a statement may touch each row once
    done = 0
    with connect() as conn:
        if send is _copy:
            conn.execute(_STAGE)
        sql = sql.format(s=schema)
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            first = done % len(rows)
            batch = rows[first : first + size] or rows[:size]
            send(conn, sql, batch)
            done += len(batch)
        return done / (time.monotonic() - start)
