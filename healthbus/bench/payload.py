"""The heartbeat every scenario sends, and a server-side bulk loader for it.

One shape everywhere (a perpetual service with an instance, a duration and one detail), so
the ceiling, the fold and the alternatives move the same bytes. Service names carry a
12-digit number, the form `redis-benchmark -r` substitutes for `__rand_int__`.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["HEAD", "TAIL", "heartbeat", "preload", "service_name"]

HEAD: Final = b'{"v":1,"service":"svc-'
TAIL: Final = (
    b'","kind":"perpetual","instance":"host-a:4242","interval_s":60,"ok":true,'
    b'"duration_ms":12.5,"details":{"rows":42}}'
)
#: XADDs per script call: each call blocks Redis for a few milliseconds at most.
_CHUNK: Final = 5000
_PRELOAD = """
local n, first, services = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local id
for i = 0, n - 1 do
  local name = string.format('%012d', (first + i) % services)
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000000, '*', 'm', ARGV[4] .. name .. ARGV[5])
end
return id
"""


def service_name(i: int) -> str:
    return f"svc-{i:012d}"


def heartbeat(i: int) -> bytes:
    return HEAD + b"%012d" % i + TAIL


def preload(client: Any, key: str, count: int, services: int, first: int = 0) -> str:
    """XADD `count` heartbeats, round-robin over `services` names starting at `first`;
    returns the last entry id. `client` is a sync redis client."""
    last = ""
    done = 0
    while done < count:
        n = min(_CHUNK, count - done)
        reply = client.eval(_PRELOAD, 1, key, n, first + done, services, HEAD, TAIL)
        last = reply.decode() if isinstance(reply, bytes) else str(reply)
        done += n
    return last
