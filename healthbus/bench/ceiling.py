"""ceiling: `redis-benchmark` XADDs, pipelined, of the same heartbeat to the same Redis.

The transport's physical limit on this machine: no consumer can fold more heartbeats a
second than Redis accepts. The median of a few runs is the headline figure; the fold divides
by rounds run right before and after each of its drains (`xadd_rate`), as this VM's speed
moves within minutes.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess

import redis

from healthbus.bench.context import Bench
from healthbus.bench.payload import N_FIRST, SHAPE
from healthbus.bench.report import Figure
from healthbus.errors import HealthBusError
from healthbus.keys import Keys

__all__ = ["CEILING", "round_size", "run", "xadd_rate"]

CEILING = "ceiling: redis-benchmark XADD, pipelined"
_RPS = re.compile(r"([0-9.]+) requests per second")
PIPELINE = 64
CLIENTS = 4


def run(bench: Bench) -> list[Figure]:
    requests = round_size(bench)
    rounds = bench.size(2, 3)
    rates = []
    for i in range(rounds):
        bench.progress(f"ceiling: redis-benchmark round {i + 1}/{rounds}, {requests:,} XADDs")
        rates.append(xadd_rate(bench, requests))
    ceiling = statistics.median(rates)
    spread = f"runs: {', '.join(f'{r:,.0f}' for r in rates)}; -P {PIPELINE} -c {CLIENTS}"
    return [Figure(name=CEILING, value=ceiling, unit="XADD/s", note=spread)]


def round_size(bench: Bench) -> int:
    """XADDs a round. Every round is this size: a shorter one measures faster (150 000
    XADDs measured 20-35 % above 300 000 side by side here; the stream is smaller)."""
    return bench.size(300_000, 2_000_000, least=10_000)


def xadd_rate(bench: Bench, requests: int) -> float:
    """One `redis-benchmark` round of `requests` pipelined XADDs: XADDs a second."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise HealthBusError("redis-benchmark is not on PATH (Debian: apt-get install redis-tools)")
    key = Keys(bench.namespace("ceiling")).heartbeats
    payload = (SHAPE % (b"__rand_int__", b"__rand_int__", b"%d" % N_FIRST)).decode()
    command = [
        binary, "-h", "127.0.0.1", "-p", str(bench.redis.port), "-n", str(requests),
        "-P", str(PIPELINE), "-c", str(CLIENTS), "-r", "100000", "-q",
        "XADD", key, "MAXLEN", "~", "1000000", "*", "m", payload,
    ]  # fmt: skip
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    finally:
        with redis.Redis.from_url(bench.redis_url) as client:
            client.delete(key)
    found = _RPS.findall(out.stdout)
    if not found:
        raise HealthBusError(f"redis-benchmark said: {out.stdout[-300:]!r}")
    return float(found[-1])
