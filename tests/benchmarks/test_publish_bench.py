"""The cost of `Publisher.publish()` to its caller, with the sender draining to a live Redis.

Run `pytest tests/benchmarks --benchmark-only` for the table; in a normal run it is one quick
test. Timing is reported, never asserted: machines differ.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from healthbus.config import Config
from publishers import Publisher


@pytest.fixture
def publisher(config: Config) -> Iterator[Publisher]:
    with Publisher.from_config(config) as publisher:
        yield publisher


def test_publish_cost(benchmark: BenchmarkFixture, publisher: Publisher) -> None:
    publisher.publish("bench", interval_s=1.0)  # first sight: the name check, once
    benchmark.pedantic(
        publisher.publish,
        args=("bench",),
        kwargs={"interval_s": 1.0, "duration_ms": 3.2},
        rounds=200,
        iterations=100,
        warmup_rounds=5,
    )
    if benchmark.stats is not None:
        print(f"publish(): median {benchmark.stats.stats.median * 1e6:.2f} µs per call")
    stats = publisher.stats
    assert stats.invalid == 0 and stats.queued + stats.sent + stats.dropped >= 2
