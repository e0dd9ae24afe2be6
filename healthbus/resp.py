"""Packing commands into RESP for the asyncio client, each argument copied once.

redis-py's asyncio connections pack in Python and join the command's growing buffer once
per argument (up to 6 KB at a time), so a commit of a few thousand rows and views copied
every byte several times: 12-17 % of the aggregator's samples under load were
`pack_command` (BENCHMARKS.md). The sync client packs with hiredis; the asyncio one cannot yet
(redis/redis-py#4176). This packs what the aggregator sends (bytes, str and int arguments)
in one pass and leaves everything else to redis-py's own packer, so the bytes on the wire
are the same either way (tests/unit/test_resp.py).
"""

from __future__ import annotations

from typing import Any, Final

from redis.asyncio.connection import AbstractConnection

__all__ = ["packing_once"]


#: Each argument's length header, led by the CRLF that ends the argument before it: two
#: pieces an argument instead of three, and no formatting for the usual lengths.
_HEADS: Final = tuple(b"\r\n$%d\r\n" % n for n in range(1024))


class _PackOnce(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if (isinstance(first, str) and " " in first) or (
            isinstance(first, bytes) and b" " in first
        ):
            return super().pack_command(*args)  # 'CONFIG GET': split by redis-py
        encoding, errors = self.encoder.encoding, self.encoder.encoding_errors
        out = [b"*%d" % len(args)]
        append = out.append
        heads = _HEADS
        for arg in args:
            kind = type(arg)
            if kind is str:
                arg = arg.encode(encoding, errors)
            elif kind is int:
                arg = b"%d" % arg
            elif kind is not bytes:  # floats, memoryviews, errors: redis-py's way
                return super().pack_command(*args)
            size = len(arg)
            append(heads[size] if size < 1024 else b"\r\n$%d\r\n" % size)
            append(arg)
        append(b"\r\n")
        return [b"".join(out)]


_made: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def packing_once(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class` with the one-pass packer (one subclass per class, made once)."""
    made = _made.get(connection_class)
    if made is None:
        made = _made[connection_class] = type(
            connection_class.__name__, (_PackOnce, connection_class), {}
        )
    return made
