"""The one-pass packer puts on the wire exactly what redis-py's own would, or defers to it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from healthbus.connection import connect
from healthbus.resp import packing_once

PLAIN = Connection()
ONCE = packing_once(Connection)()

arguments = st.one_of(
    st.binary(max_size=9000),
    st.text(max_size=200),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.booleans(),
)


def wire(connection: Connection, args: tuple[Any, ...]) -> bytes | type[Exception]:
    try:
        return b"".join(connection.pack_command(*args))
    except DataError:
        return DataError


@given(
    st.one_of(st.sampled_from(["EVALSHA", "XADD", b"HSET", "CONFIG GET", b"CLIENT LIST"])),
    st.lists(arguments, max_size=40),
)
def test_the_same_bytes_as_redis_py(name: str | bytes, args: list[Any]) -> None:
    command = (name, *args)
    assert wire(ONCE, command) == wire(PLAIN, command)


@given(st.lists(st.lists(st.binary(max_size=3000), min_size=1, max_size=8), max_size=8))
def test_pipelines_are_the_same_bytes(commands: list[list[bytes]]) -> None:
    commands = [[b"XADD", *args] for args in commands]
    assert b"".join(ONCE.pack_commands(commands)) == b"".join(PLAIN.pack_commands(commands))


def test_lengths_either_side_of_the_cached_headers() -> None:
    args = ("HSET", *[b"x" * n for n in (0, 1, 9, 10, 1023, 1024, 1025, 70_000)], "é" * 600)
    assert wire(ONCE, args) == wire(PLAIN, args)


def test_a_commit_sized_command_is_one_buffer() -> None:
    args = ("EVALSHA", "f" * 40, 7, *[b"x" * 300 for _ in range(3000)])
    packed = ONCE.pack_command(*args)
    assert len(packed) == 1 and packed[0] == b"".join(PLAIN.pack_command(*args))


def test_each_connection_kind_keeps_its_own_class() -> None:
    for kind in (Connection, SSLConnection, UnixDomainSocketConnection):
        made = packing_once(kind)
        assert issubclass(made, kind) and made.__name__ == kind.__name__
        assert packing_once(kind) is made


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:1/0", Connection),
        ("rediss://127.0.0.1:1/0", SSLConnection),
        ("unix:///nowhere.sock", UnixDomainSocketConnection),
    ],
)
def test_clients_pack_once(url: str, kind: type[Connection]) -> None:
    assert connect(url).connection_pool.connection_class is packing_once(kind)
