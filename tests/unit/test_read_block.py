"""How long the aggregator's read may block before a deadline (runner.read_block)."""

from __future__ import annotations

import pytest

from aggregator.runner import MAX_BLOCK_MS, REDIS_TICK_MS, read_block


def test_no_deadline_blocks_up_to_the_tick() -> None:
    assert read_block(None, 5_000) == (MAX_BLOCK_MS, False)
    assert read_block(None, 300.4) == (300, False)


@pytest.mark.parametrize("until", [REDIS_TICK_MS + 1, 150, 500, 999, 5_000])
def test_a_blocked_read_ends_a_redis_tick_before_the_deadline(until: int) -> None:
    """Redis ends a blocked read on its timer tick, up to REDIS_TICK_MS late: blocking up to
    the deadline itself met it up to 100 ms late."""
    block, near = read_block(until, 10_000)
    assert not near and 1 <= block <= max(1, until - REDIS_TICK_MS)


@pytest.mark.parametrize("until", [-5, 0, 1, 50, REDIS_TICK_MS - 1])
def test_a_near_deadline_is_napped_towards(until: int) -> None:
    block, near = read_block(until, 10_000)
    assert near and 1 <= block <= max(1, until)
