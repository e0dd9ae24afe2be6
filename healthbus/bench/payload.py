"""The heartbeat every scenario sends, and a server-side bulk loader for it.

One shape everywhere, so the ceiling, the fold and the alternatives move the same bytes:
what `Publisher.publish(name, interval_s=60, duration_ms=12.5, details={"rows": 42})` sends
from instance `host-a:4242`, with its boot id and its sequence number `n`, as a publisher
some days into its run has it (tests/benchmarks/test_bench_payload.py). A service's boot id is
its own number, and its heartbeats count on from N_FIRST. Numbers are 12 digits, the form
`redis-benchmark -r` substitutes for `__rand_int__`.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["N_FIRST", "SHAPE", "heartbeat", "preload", "service_name"]

#: The heartbeat with its service number, boot id and `n` left as `%s`: the same string
#: formats in Python, in Lua (`string.format`) and, with `__rand_int__`, in redis-benchmark.
SHAPE: Final = (
    b'{"v":1,"service":"svc-%s","interval_s":60,"ok":true,"instance":"host-a:4242",'
    b'"boot":"%s","n":%s,"duration_ms":12.5,"details":{"rows":42}}'
)
#: A service's first `n`: a publisher at one heartbeat a second reaches it in under 12 days,
#: and Python holds a number this large as an object of its own, as it does a real `n`.
N_FIRST: Final = 1_000_000
#: XADDs per script call: each call blocks Redis for a few milliseconds at most.
_CHUNK: Final = 5000
_PRELOAD = """
local n, first, services = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n_first = tonumber(ARGV[5])
local id
for i = 0, n - 1 do
  local name = string.format('%012d', (first + i) % services)
  local seq = string.format('%d', n_first + math.floor((first + i) / services))
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000000, '*', 'm',
    string.format(ARGV[4], name, name, seq))
end
return id
"""


def service_name(i: int) -> str:
    return f"svc-{i:012d}"


def heartbeat(i: int, n: int = N_FIRST) -> bytes:
    """Service `i`'s heartbeat number `n`."""
    number = b"%012d" % i
    return SHAPE % (number, number, b"%d" % n)


def preload(client: Any, key: str, count: int, services: int, first: int = 0) -> str:
    """XADD `count` heartbeats, round-robin over `services` names starting at `first`
    (heartbeat `k` of the sequence is `heartbeat(k % services, N_FIRST + k // services)`);
    returns the last entry id. `client` is a sync redis client."""
    last = ""
    done = 0
    while done < count:
        n = min(_CHUNK, count - done)
        reply = client.eval(_PRELOAD, 1, key, n, first + done, services, SHAPE, N_FIRST)
        last = reply.decode() if isinstance(reply, bytes) else str(reply)
        done += n
    return last
