"""Redis frozen (SIGSTOP), then killed: decorated calls in the host keep returning at once,
memory stays bounded, drops are counted, and heartbeats flow again once Redis is back.

Counts are asserted; times are printed (`-s`), never asserted: this machine is small and noisy.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from healthbus.embedded import RedisServer
from healthbus.schema import decode_heartbeat
from publishers import Publisher, heartbeat
from tests.support import wait_until_sync

CALLS_PER_PHASE = 5_000
BUFFER = 1_000
BATCH = 500


def calls(work: Callable[[int], dict[str, int]], start: int) -> str:
    """CALLS_PER_PHASE calls; each must return its result. Returns their times, summarized."""
    took = []
    for i in range(start, start + CALLS_PER_PHASE):
        began = time.perf_counter()
        assert work(i) == {"i": i}
        took.append(time.perf_counter() - began)
    took.sort()
    over = sum(t > 0.005 for t in took)
    return (
        f"p50 {took[len(took) // 2] * 1e6:.1f} µs, p99 {took[len(took) * 99 // 100] * 1e6:.1f} µs, "
        f"max {took[-1] * 1e3:.2f} ms, {over} over 5 ms"
    )


def stopped(server: RedisServer) -> bool:
    """The server process has taken its SIGSTOP (state T in /proc)."""
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0] == "T"


@pytest.mark.fault
def test_ten_thousand_calls_return_while_redis_is_down(own_redis: RedisServer) -> None:
    publisher = Publisher(
        own_redis.url, "outage", buffer_size=BUFFER, batch_size=BATCH, flush_interval_s=0.01
    )

    @heartbeat(service="busy", interval=1, publisher=publisher)
    def work(i: int) -> dict[str, int]:
        return {"i": i}

    try:
        work(-1)
        wait_until_sync(lambda: publisher.stats.sent == 1)

        own_redis.pause()
        wait_until_sync(lambda: stopped(own_redis))
        frozen = calls(work, 0)
        assert publisher.stats.queued <= BUFFER + BATCH
        own_redis.kill()
        killed = calls(work, CALLS_PER_PHASE)
        down = publisher.stats
        assert down.queued <= BUFFER + BATCH  # bounded, whatever the number of calls
        # No heartbeat goes unaccounted for (a drop racing the sender's pop may count twice).
        # The batch in flight at SIGSTOP may still land: kill() sends SIGCONT before SIGKILL.
        assert down.sent + down.queued + down.dropped >= 1 + 2 * CALLS_PER_PHASE
        assert down.sent <= 1 + BATCH and down.dropped >= 2 * CALLS_PER_PHASE - BUFFER - 2 * BATCH
        assert not down.connected and down.last_error

        own_redis.start()  # same port, empty
        back = time.monotonic()
        client = redis.Redis.from_url(own_redis.url)

        def fresh_heartbeat_arrived() -> bool:
            work(10**6)  # the host keeps working; this run's heartbeat must get through
            entries = client.xrange("healthbus:{outage}:heartbeats")
            return any(decode_heartbeat(f[b"m"]).details == {"i": 10**6} for _, f in entries)

        wait_until_sync(fresh_heartbeat_arrived, timeout=20)
        recovered = time.monotonic() - back
        client.close()
        after = publisher.stats
        assert after.connected and after.dropped >= down.dropped
        print(
            f"\ncalls while frozen: {frozen}\ncalls while killed: {killed}\n"
            f"flowing again {recovered:.2f} s after restart; dropped {after.dropped}"
        )
    finally:
        publisher.close(timeout=1)
