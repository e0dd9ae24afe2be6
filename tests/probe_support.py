"""Targets for the probe tests: a port that accepts and never answers, a small HTTP app, and
a table of known size in the machine's PostgreSQL (a schema of the test's own, dropped after)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

#: The machine's PostgreSQL (trust auth, database `test`); override to point elsewhere.
PG_URL = os.environ.get("HEALTHBUS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def silent_port() -> Iterator[int]:
    """A port whose connections are accepted (by the kernel's backlog) and never answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("all ok")


async def _fail(request: Request) -> PlainTextResponse:
    return PlainTextResponse("down", status_code=503)


http_app = Starlette(routes=[Route("/ok", _ok), Route("/fail", _fail)])


@contextmanager
def scratch_schema() -> Iterator[tuple[Any, str]]:
    """(autocommit connection, name) of a schema of the test's own in the machine's
    PostgreSQL, dropped after; skips the test when PostgreSQL is not reachable."""
    import psycopg

    try:
        conn: Any = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable ({exc}); set HEALTHBUS_TEST_PG_URL")
    schema = "hb_probe_" + uuid.uuid4().hex[:12]
    with conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            yield conn, schema
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def fill_table(conn: Any, table: str, rows: int) -> None:
    """A table of `rows` rows, analyzed so that `pg_class.reltuples` knows."""
    conn.execute(f"CREATE TABLE {table} (id int)")
    conn.execute(f"INSERT INTO {table} SELECT generate_series(1, {int(rows)})")
    conn.execute(f"ANALYZE {table}")


@contextmanager
def events_table(rows: int) -> Iterator[tuple[str, str]]:
    """(database URL, `schema.events`) of a table holding `rows` rows."""
    with scratch_schema() as (conn, schema):
        fill_table(conn, f"{schema}.events", rows)
        yield PG_URL, f"{schema}.events"
