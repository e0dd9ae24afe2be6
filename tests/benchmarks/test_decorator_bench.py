"""What `@heartbeat` adds to each call of the host's function, with the sender draining to a
live Redis: timing, the context variable, `publish()`.

Run `pytest tests/benchmarks --benchmark-only` for the table; in a normal run each is one
quick test. Timing is reported, never asserted: machines differ.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from healthbus.config import Config
from publishers import Publisher, heartbeat


@pytest.fixture
def publisher(config: Config) -> Iterator[Publisher]:
    with Publisher.from_config(config) as publisher:
        yield publisher


def report(benchmark: BenchmarkFixture, what: str) -> None:
    if benchmark.stats is not None:
        print(f"{what}: median {benchmark.stats.stats.median * 1e6:.2f} µs per call")


def test_decorated_call_cost(benchmark: BenchmarkFixture, publisher: Publisher) -> None:
    @heartbeat(service="bench_decorated", interval=1, publisher=publisher)
    def task(n: int) -> int:
        return n + 1

    assert task(1) == 2
    benchmark.pedantic(task, args=(1,), rounds=200, iterations=100, warmup_rounds=5)
    report(benchmark, "@heartbeat call of a no-op function")
    assert publisher.stats.invalid == 0


def test_decorated_call_with_details_cost(
    benchmark: BenchmarkFixture, publisher: Publisher
) -> None:
    @heartbeat(service="bench_details", interval=1, publisher=publisher)
    def task() -> dict[str, int | str]:
        return {"rows": 120, "files": 3, "source": "s3"}

    benchmark.pedantic(task, rounds=200, iterations=100, warmup_rounds=5)
    report(benchmark, "@heartbeat call returning three details")
    assert publisher.stats.invalid == 0
