"""What one heartbeat costs the fold, with no Redis: decode and `Folder.apply` of a
freshness-only heartbeat, and the fold-state row a commit writes for it. These are the
pieces `healthbus bench --scenario fold` (BENCHMARKS.md) finds the aggregator's time in.

Run `pytest tests/benchmarks --benchmark-only` for the table; in a normal run each is one
quick test. Timing is reported, never asserted: machines differ.
"""

from __future__ import annotations

import itertools

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from aggregator.fold import Folder
from aggregator.state import FoldState
from healthbus.bench.payload import heartbeat, service_name
from healthbus.schema import decode_heartbeat, encode

SERVICES = 10_000
START_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def folder() -> Folder:
    """A fold that has seen each service once."""
    folder = Folder(FoldState())
    for i in range(SERVICES):
        folder.apply(decode_heartbeat(heartbeat(i)), START_MS + i // 100)
    return folder


def report(benchmark: BenchmarkFixture, what: str) -> None:
    if benchmark.stats is not None:
        print(f"{what}: median {benchmark.stats.stats.median * 1e6:.2f} µs")


def test_decode_and_fold_cost(benchmark: BenchmarkFixture, folder: Folder) -> None:
    raws = [heartbeat(i) for i in range(SERVICES)]
    clock = itertools.count(START_MS + SERVICES)

    def one() -> None:
        at = next(clock)
        folder.apply(decode_heartbeat(raws[at % SERVICES]), at)

    benchmark.pedantic(one, rounds=200, iterations=50, warmup_rounds=5)
    report(benchmark, "decode + fold of a freshness-only heartbeat")
    assert folder.state.counts["healthy"] == SERVICES


def test_state_row_cost(benchmark: BenchmarkFixture, folder: Folder) -> None:
    svc = folder.state.services[service_name(1)]
    benchmark.pedantic(encode, args=(svc,), rounds=200, iterations=100, warmup_rounds=5)
    report(benchmark, "encode one service's fold-state row")
