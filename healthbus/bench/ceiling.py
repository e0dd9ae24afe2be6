"""ceiling: `redis-benchmark` XADDs, pipelined, of the same heartbeat to the same Redis.

The transport's physical limit on this machine: no consumer can fold more heartbeats a
second than Redis accepts. The median of a few runs is the denominator of the fold's ratio.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess

import redis

from healthbus.bench.context import Bench
from healthbus.bench.payload import HEAD, TAIL
from healthbus.bench.report import Figure
from healthbus.errors import HealthBusError
from healthbus.keys import Keys

__all__ = ["CEILING", "run"]

CEILING = "ceiling: redis-benchmark XADD, pipelined"
_RPS = re.compile(r"([0-9.]+) requests per second")
PIPELINE = 64
CLIENTS = 4


def run(bench: Bench) -> list[Figure]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise HealthBusError("redis-benchmark is not on PATH (Debian: apt-get install redis-tools)")
    key = Keys(bench.namespace("ceiling")).heartbeats
    payload = (HEAD + b"__rand_int__" + TAIL).decode()
    requests = bench.size(300_000, 2_000_000, least=10_000)
    rounds = bench.size(2, 3)
    rates = []
    for i in range(rounds):
        bench.progress(f"ceiling: redis-benchmark round {i + 1}/{rounds}, {requests:,} XADDs")
        command = [
            binary, "-h", "127.0.0.1", "-p", str(bench.redis.port), "-n", str(requests),
            "-P", str(PIPELINE), "-c", str(CLIENTS), "-r", "100000", "-q",
            "XADD", key, "MAXLEN", "~", "1000000", "*", "m", payload,
        ]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
        found = _RPS.findall(out.stdout)
        if not found:
            raise HealthBusError(f"redis-benchmark said: {out.stdout[-300:]!r}")
        rates.append(float(found[-1]))
        with redis.Redis.from_url(bench.redis_url) as client:
            client.delete(key)
    ceiling = statistics.median(rates)
    spread = f"runs: {', '.join(f'{r:,.0f}' for r in rates)}; -P {PIPELINE} -c {CLIENTS}"
    return [Figure(name=CEILING, value=ceiling, unit="XADD/s", note=spread)]
