"""Adaptive grace (learned lateness widens the age rule, within bounds) and restarts."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.fold import Folder, view
from aggregator.grace import grace_ms
from aggregator.rules import Rules
from aggregator.state import FoldState
from healthbus.schema import Heartbeat

T0 = 1_767_225_600_000
GRACE = Rules(grace_max=1.0)


def hb(**fields: object) -> Heartbeat:
    base: dict[str, object] = {"v": 1, "service": "job", "interval_s": 10.0, "ok": True}
    base.update(fields)
    return Heartbeat(**base)  # type: ignore[arg-type]


def beats(folder: Folder, gaps_ms: list[int]) -> int:
    """Heartbeats after each gap; the time of the last."""
    t = T0
    folder.apply(hb(), t)
    for gap in gaps_ms:
        t += gap
        folder.apply(hb(), t)
    return t


def next_change_ms(folder: Folder) -> int:
    """When the next transition is stamped. A steady heartbeat leaves its service's
    earlier deadline in place (re-judged then, nothing changes): look past those, on a copy."""
    probe = copy.deepcopy(folder)
    while True:
        deadline = probe.next_deadline_ms()
        assert deadline is not None
        if changes := probe.expire(deadline):
            return changes[0].at_ms


def test_a_regularly_late_instance_gets_a_learned_grace() -> None:
    folder = Folder(FoldState(), GRACE)
    last = beats(folder, [13_000] * 12)  # always 3 s late
    inst = folder.state.services["job"].find("")
    assert 2_900 < inst.late_ms <= 3_000
    grace = grace_ms(inst, GRACE)
    assert 8_700 < grace <= 9_000
    assert next_change_ms(folder) == last + 20_000 + grace + 1
    [t] = folder.expire(last + 20_000 + grace + 1)
    assert t.to == "degraded" and "learned lateness allowed" in t.reason


def test_an_on_time_instance_is_judged_as_strictly_as_ever() -> None:
    folder = Folder(FoldState(), GRACE)
    last = beats(folder, [10_000] * 12)
    assert next_change_ms(folder) == last + 20_001


def test_an_instance_back_on_its_cadence_forgets_its_lateness() -> None:
    for late_once, on_time in ((4, 20), (3_000, 40)):
        folder = Folder(FoldState(), GRACE)
        last = beats(folder, [10_000 + late_once] + [10_000] * on_time)
        assert folder.state.services["job"].find("").late_ms == 0
        assert next_change_ms(folder) == last + 20_001


def test_a_lateness_under_two_milliseconds_is_jitter_and_never_learned() -> None:
    folder = Folder(FoldState(), GRACE)
    last = beats(folder, [10_001, 9_999, 10_001] * 10)
    assert folder.state.services["job"].find("").late_ms == 0
    assert next_change_ms(folder) == last + 20_001
    folder = Folder(FoldState(), GRACE)
    beats(folder, [10_002] * 10)
    assert folder.state.services["job"].find("").late_ms > 0


def test_grace_is_bounded_and_off_by_default_in_bare_rules() -> None:
    folder = Folder(FoldState(), GRACE)
    last = beats(folder, [60_000] * 12)  # 50 s late each time on a 10 s cadence
    assert next_change_ms(folder) == last + 20_000 + 10_000 + 1  # at most one interval
    bare = Folder(FoldState())
    last = beats(bare, [60_000] * 12)
    assert next_change_ms(bare) == last + 20_001


@settings(max_examples=80, derandomize=True, deadline=None, database=None)
@given(st.lists(st.integers(1, 120_000), min_size=1, max_size=30), st.floats(0, 3))
def test_grace_stays_within_its_bounds(gaps: list[int], grace_max: float) -> None:
    rules = Rules(grace_max=grace_max)
    folder = Folder(FoldState(), rules)
    last = beats(folder, gaps)
    inst = folder.state.services["job"].find("")
    assert 0 <= grace_ms(inst, rules) <= grace_max * 10_000
    assert last + 20_001 <= next_change_ms(folder) <= last + 20_001 + grace_max * 10_000


def test_restarts_and_lost_heartbeats_are_counted_per_instance() -> None:
    folder = Folder(FoldState(), GRACE)
    folder.apply(hb(instance="a", boot="b1", n=1), T0)
    folder.apply(hb(instance="b", boot="x", n=1), T0)
    folder.apply(hb(instance="a", boot="b1", n=4), T0 + 10_000)  # 2 and 3 were lost
    folder.apply(hb(instance="a", boot="b2", n=1), T0 + 600_000)  # restarted: no lateness
    svc = folder.state.services["job"]
    assert (svc.find("a").restarts, svc.find("a").lost) == (1, 2)
    assert svc.find("a").late_ms == 0
    shown = {i.instance: (i.restarts, i.lost) for i in view(svc).instances}
    assert shown == {"a": (1, 2), "b": (0, 0)}
