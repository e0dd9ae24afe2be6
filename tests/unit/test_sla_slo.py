"""SLOs: the error budget's burn rate over two window pairs, and its two transitions."""

from __future__ import annotations

import pytest

from aggregator.fold import Folder
from aggregator.rules import Rules
from aggregator.slo import burn_rates, target_for
from aggregator.state import FoldState, Service
from healthbus.config import Config
from healthbus.errors import ConfigError
from healthbus.schema import Heartbeat, Transition

T0 = 1_767_261_600_000  # 2026-01-01T10:00:00Z
MIN = 60_000


def beat(ok: bool = True) -> Heartbeat:
    return Heartbeat(v=1, service="api", interval_s=60.0, ok=ok)


def run(rules: Rules, errors: range, minutes: int) -> list[Transition]:
    """A heartbeat a minute; failing during `errors` (minutes); time passes to `minutes`."""
    folder = Folder(FoldState(), rules)
    out: list[Transition] = []
    for m in range(minutes + 1):
        out += folder.apply(beat(ok=m not in errors), T0 + m * MIN)
    return out


def events(out: list[Transition]) -> list[tuple[str, int]]:
    return [(t.event.rsplit(".", 1)[1], (t.at_ms - T0) // 1000) for t in out if t.from_ == t.to]


def test_five_minutes_of_errors_burn_a_999_budget_until_the_30_minute_window_clears() -> None:
    out = run(Rules(slo={"api": 99.9}), range(60, 65), 120)
    assert events(out) == [("slo_burn", 61 * 60), ("slo_ok", 95 * 60)]
    burn, ok = (t for t in out if t.from_ == t.to)
    assert burn.reason.startswith("burns its 99.9 % error budget too fast (6 h: ")
    assert (burn.to, ok.to) == ("error", "healthy")
    # The status transitions themselves are unchanged by the SLO.
    plain = run(Rules(), range(60, 65), 120)
    assert [t.id for t in out if t.from_ != t.to] == [t.id for t in plain]


def test_a_looser_target_tolerates_the_same_errors() -> None:
    assert events(run(Rules(slo={"api": 90}), range(60, 65), 120)) == []
    assert events(run(Rules(slo={"other": 99.9}), range(60, 65), 120)) == []


def test_burn_rates_leave_out_unknown_and_blind_time() -> None:
    svc = Service(name="api", kind="perpetual", since_ms=T0, slo_since=T0)
    svc.slo_minutes = {T0 // MIN + m: [30_000, 30_000] for m in range(5)}  # half error, half blind
    rates = burn_rates(svc, T0 + 5 * MIN, 99.0)
    # every window reaches back to the start: 150 s of error in 150 s of known time
    assert rates == [pytest.approx(100.0)] * 4


def test_slo_targets_come_from_patterns_and_are_checked() -> None:
    assert target_for("api-eu", {"db": 99.0, "api-*": 99.5}) == 99.5
    assert Rules.from_config(Config(slo={"api": 99.9})).slo == {"api": 99.9}
    with pytest.raises(ConfigError, match="percentage"):
        Config(slo={"api": 100})
