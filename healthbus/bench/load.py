"""A paced heartbeat load: `python -m healthbus.bench.load URL KEY RATE SERVICES SECONDS`.

Every 10 ms it sends its share of `RATE` heartbeats a second (round-robin over `SERVICES`
names) as one pipeline, for at most `SECONDS`; it runs in its own process so the load does
not share a core with what it loads. Exits early when stdin closes.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Final

import redis

from healthbus.bench.payload import N_FIRST, heartbeat

__all__ = ["main"]

TICK_S: Final = 0.01


def main(url: str, key: str, rate: int, services: int, seconds: float) -> None:
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    sent = 0
    start = time.monotonic()
    with redis.Redis.from_url(url) as client:
        print("ready", flush=True)
        while not stop.is_set() and time.monotonic() - start < seconds:
            due = int((time.monotonic() - start) * rate)
            pipe = client.pipeline(transaction=False)
            for i in range(sent, due):
                m = heartbeat(i % services, N_FIRST + i // services)
                pipe.xadd(key, {"m": m}, maxlen=1_000_000, approximate=True)
            pipe.execute()
            sent = max(sent, due)
            stop.wait(TICK_S)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
