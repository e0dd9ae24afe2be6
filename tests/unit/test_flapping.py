"""Flap detection: the weighted percent state change, and what the fold says about it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.flapping import WINDOW, percent_change, record, step
from aggregator.fold import Folder, view
from aggregator.rules import Rules
from aggregator.state import FoldState
from healthbus.config import Config
from healthbus.errors import ConfigError
from healthbus.schema import Heartbeat, Status, Transition

T0 = 1_767_225_600_000
FLAPS = Rules.from_config(Config())  # the product defaults: 40 % / 20 %
PROPERTY = settings(max_examples=60, derandomize=True, deadline=None, database=None)


def beat(status: Status, **fields: object) -> Heartbeat:
    return Heartbeat(
        v=1,
        service="svc",
        interval_s=10.0,
        ok=status != "error",
        status="degraded" if status == "degraded" else None,
        **fields,  # type: ignore[arg-type]
    )


def play(statuses: list[Status], rules: Rules = FLAPS) -> tuple[Folder, list[Transition]]:
    """One on-time heartbeat every 10 s with each status in turn."""
    folder = Folder(FoldState(), rules)
    out: list[Transition] = []
    for i, status in enumerate(statuses):
        out += folder.apply(beat(status), T0 + i * 10_000)
    return folder, out


def changes(transitions: list[Transition]) -> list[Transition]:
    return [t for t in transitions if t.from_ != t.to]


def test_percent_change_weighs_recent_flips_more() -> None:
    assert percent_change("h" * WINDOW) == 0
    assert percent_change("he" * 10 + "h") == pytest.approx(100)
    old = "e" + "h" * 20
    new = "h" * 20 + "e"
    assert percent_change(old) == pytest.approx(4.0) and percent_change(new) == pytest.approx(6.0)
    assert len(record("h" * WINDOW, "error")) == WINDOW


def test_thresholds_have_a_dead_band_and_zero_turns_detection_off() -> None:
    assert step(False, 41, 40, 20) and not step(False, 40, 40, 20)
    assert step(True, 30, 40, 20) and not step(True, 19, 40, 20)
    assert not step(True, 100, 0, 0)


def test_a_flapping_service_says_so_once_holds_its_worst_and_settles() -> None:
    folder, out = play(["healthy", "error"] * 20)
    events = [t.event.rsplit(".", 1)[1] for t in out]
    assert events.count("flapping") == 1 and "stable" not in events
    flagged = out[events.index("flapping") :]
    assert all(t.flapping for t in flagged)
    # Held at its worst: at most the one change to error, nothing per flip.
    assert len(changes(flagged)) <= 1 and all(t.to == "error" for t in changes(flagged))
    svc = folder.state.services["svc"]
    assert (svc.status, view(svc).flapping) == ("error", True)
    assert svc.reason.startswith("flapping")
    settled: list[Transition] = []
    for i in range(40, 70):
        settled += folder.apply(beat("healthy"), T0 + i * 10_000)
    assert [(t.event.rsplit(".", 1)[1], t.from_, t.to, t.flapping) for t in settled] == [
        ("stable", "error", "error", False),
        ("recovered", "error", "healthy", False),
    ]
    assert settled[0].incident == settled[1].incident == flagged[-1].incident is not None


def test_occasional_failures_do_not_flap() -> None:
    _, out = play((["healthy"] * 5 + ["error"]) * 10)
    assert not any(t.flapping for t in out)
    assert len(changes(out)) == 1 + 2 * 10 - 1


# -- properties (acceptance of issue #5) -----------------------------------------------

runs = st.lists(st.integers(1, 2), min_size=1, max_size=150)


@PROPERTY
@given(
    runs, st.sampled_from(["healthy", "degraded", "error"]), st.integers(1, 3), st.integers(1, 3)
)
def test_a_flapping_input_yields_bounded_transitions(
    lengths: list[int], first: Status, rise: int, fall: int
) -> None:
    """A status that changes at least every other heartbeat, for up to 300 heartbeats."""
    order: list[Status] = ["healthy", "degraded", "error"]
    statuses: list[Status] = []
    status = first
    for n in lengths:
        statuses += [status] * n
        status = order[(order.index(status) + 1 + n % 2) % 3]
    _, out = play(statuses, Rules(flap_high_pct=40, flap_low_pct=20, rise=rise, fall=fall))
    assert len(out) <= WINDOW


@PROPERTY
@given(st.sampled_from(["healthy", "degraded", "error"]), st.integers(1, 200))
def test_a_steady_input_yields_no_transition_after_the_first(status: Status, n: int) -> None:
    _, out = play([status] * n)
    assert len(out) == 1 and out[0].from_ == "unknown"


@PROPERTY
@given(
    st.lists(st.sampled_from(["healthy", "degraded", "error"]), min_size=1, max_size=80),
    st.integers(1, 3),
    st.integers(1, 3),
)
def test_recovery_follows_error_once_heartbeats_are_healthy_again(
    statuses: list[Status], rise: int, fall: int
) -> None:
    rules = Rules(flap_high_pct=40, flap_low_pct=20, rise=rise, fall=fall)
    folder, out = play([*statuses, *["healthy"] * (WINDOW + rise)], rules)
    svc = folder.state.services["svc"]
    assert (svc.status, svc.flapping, svc.incident) == ("healthy", False, None)
    last = changes(out)[-1]
    assert last.to == "healthy"
    assert last.event.endswith("recovered" if last.from_ != "unknown" else "appeared")


def test_a_high_threshold_of_zero_turns_detection_off_whatever_the_low() -> None:
    assert Rules.from_config(Config(flap_high_pct=0)).flap_high_pct == 0
    with pytest.raises(ConfigError, match="flap thresholds"):
        Config(flap_high_pct=30, flap_low_pct=50)
