"""The fold's deadline buckets against a plain map of deadlines (hypothesis): whatever the
order of schedules, removals and due calls, each service comes due once, at its deadline,
earliest first, and names left behind in old buckets stay bounded."""

from __future__ import annotations

from typing import NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.state import BUCKET_MS, STALE_SLACK, FoldState, Service

NAMES = ("a", "b", "c", "d")


class Schedule(NamedTuple):
    name: str
    #: Ahead of the watermark by this much, or None to unschedule.
    ahead: int | None


class Remove(NamedTuple):
    name: str


class Due(NamedTuple):
    advance: int


ops = st.lists(
    st.one_of(
        st.builds(
            Schedule,
            st.sampled_from(NAMES),
            st.none() | st.integers(0, 3 * BUCKET_MS) | st.integers(0, 50 * BUCKET_MS),
        ),
        st.builds(Remove, st.sampled_from(NAMES)),
        st.builds(Due, st.integers(0, 4 * BUCKET_MS)),
    ),
    max_size=60,
)


def service(state: FoldState, name: str) -> Service:
    svc = state.services.get(name)
    if svc is None:
        svc = Service(name=name, kind="perpetual", since_ms=0)
        state.add(svc)
    return svc


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(history=ops)
def test_services_come_due_exactly_as_a_map_of_deadlines_says(
    history: list[Schedule | Remove | Due],
) -> None:
    state = FoldState()
    expected: dict[str, int] = {}
    now = 0
    for op in history:
        if isinstance(op, Schedule):
            deadline = None if op.ahead is None else now + op.ahead
            state.schedule(service(state, op.name), deadline)
            if deadline is None:
                expected.pop(op.name, None)
            else:
                expected[op.name] = deadline
        elif isinstance(op, Remove):
            if op.name in state.services:
                state.remove(state.services[op.name])
            expected.pop(op.name, None)
        else:
            now += op.advance
            due = [(d, svc.name) for d, svc in state.due(now)]
            assert due == sorted((d, n) for n, d in expected.items() if d <= now)
            for _, name in due:
                del expected[name]
                assert state.services[name].deadline_v is None
        assert state.next_deadline_v() == min(expected.values(), default=None)
        assert state.any_due(now) or not any(d <= now for d in expected.values())


def test_names_left_behind_by_moves_are_dropped_before_they_pile_up() -> None:
    state = FoldState()
    fleet = [service(state, f"svc-{i}") for i in range(100)]
    for step in range(200):  # each move lists the name in another bucket
        for svc in fleet:
            state.schedule(svc, (step + 1) * BUCKET_MS)
    listed = sum(len(bucket) for bucket in state._buckets.values())
    assert listed <= 2 * len(fleet) + STALE_SLACK
    assert [svc.name for _, svc in state.due(200 * BUCKET_MS)] == sorted(s.name for s in fleet)
    assert state.next_deadline_v() is None


def test_a_service_moved_away_and_back_comes_due_once() -> None:
    state = FoldState()
    svc = service(state, "a")
    for deadline in (150, 950, 160):  # bucket 1, bucket 9, bucket 1 again
        state.schedule(svc, deadline)
    assert [(d, s.name) for d, s in state.due(1000)] == [(160, "a")]
    assert state.due(2000) == []


def test_a_service_moved_later_does_not_hold_back_the_bucket_it_left() -> None:
    state = FoldState()
    a, b = service(state, "a"), service(state, "b")
    state.schedule(a, 150)
    state.schedule(a, 950)  # still listed in bucket 1, now due in bucket 9
    state.schedule(b, 250)
    assert [(d, s.name) for d, s in state.due(500)] == [(250, "b")]
    assert state.next_deadline_v() == 950


def test_a_deadline_moved_within_its_bucket_is_listed_once() -> None:
    state = FoldState()
    svc = service(state, "a")
    for deadline in range(100, 200, 10):
        state.schedule(svc, deadline)
    assert state._buckets == {1: ["a"]}
