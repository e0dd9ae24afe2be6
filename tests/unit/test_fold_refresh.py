"""The fold's short path for steady heartbeats (`Folder._refresh`) is only a shortcut: over
generated histories full of repeated heartbeats, a fold that takes it and one that never
does emit the same transitions and show the same services after every step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.fold import Folder, view
from aggregator.rules import Rules
from aggregator.state import FoldState, Service
from healthbus.config import Config
from healthbus.schema import Heartbeat, Transition, encode
from tests.unit.test_fold_properties import PROPERTY, Op, Run, gaps, ops, perform

DEFAULTS = Rules.from_config(Config(redis_url="redis://127.0.0.1:1"))
RULES = st.sampled_from(
    [
        Rules(),
        DEFAULTS,
        Rules(rise=2, fall=2),
        Rules(quorum={"a": 2}, grace_max=1.0),
        Rules(slo={"b": 99.0}, flap_high_pct=40, flap_low_pct=20),
    ]
)


class Repeat(NamedTuple):
    """The same heartbeat again (a newer `n`), `dt` ms later: what most traffic is."""

    dt: int
    service: str
    instance: str | None
    details: int
    #: Sent healthy (ok, no status, no error) rather than as the last one said.
    healthy: bool


class Full(Folder):
    """The fold without its short path: every heartbeat re-judges its service."""

    def _refresh(self, svc: Service, hb: Heartbeat, at_ms: int, v: int) -> bool:
        return False


class Pair:
    """The same history through both folds, checked step by step."""

    def __init__(self, rules: Rules) -> None:
        self.short = Run(Folder(FoldState(), rules))
        self.full = Run(Full(FoldState(), rules))
        self.last: dict[tuple[str, str | None], Heartbeat] = {}
        self.n = 0

    def step(self, op: Op | Repeat) -> None:
        if isinstance(op, Repeat):
            self.n += 1
            template = self.last.get((op.service, op.instance)) or Heartbeat(
                v=1, service=op.service, instance=op.instance, interval_s=1.0, ok=True
            )
            fields = {f: getattr(template, f) for f in template.__struct_fields__}
            fields.update(n=self.n, details={"rows": op.details})
            if op.healthy:
                fields.update(ok=True, status=None, error=None)
            hb = Heartbeat(**fields)
            got = [self._repeat(run, hb, op.dt) for run in (self.short, self.full)]
        else:
            got = [perform(run, op) for run in (self.short, self.full)]
        # Services' deadlines met in one expire may come in another order; each service's
        # transitions, and the times of all, never do.
        assert _in_time(got[0]) == _in_time(got[1]), (op, got)
        self._remember()
        assert self._shown(self.short) == self._shown(self.full), op

    @staticmethod
    def _repeat(run: Run, hb: Heartbeat, dt: int) -> list[Transition]:
        run.t += dt
        run.last_entry = at = max(run.last_entry, run.t)
        return run.folder.apply(hb, at)

    def _remember(self) -> None:
        for svc in self.full.folder.state.services.values():
            for inst in svc.each():
                if inst.completed:
                    self.last[(svc.name, inst.key or None)] = inst.hb

    @staticmethod
    def _shown(run: Run) -> dict[str, tuple[bytes, str, bool]]:
        state = run.folder.state
        return {
            name: (encode(view(svc)), svc.flap_window, svc.slo_burning)
            for name, svc in state.services.items()
        } | {"counts": (encode(state.counts), "", False)}


def _in_time(transitions: list[Transition]) -> list[Transition]:
    return sorted(transitions, key=lambda t: (t.at_ms, t.service))


repeats = st.builds(
    Repeat,
    dt=st.one_of(st.integers(0, 900), st.integers(0, 900), gaps),
    service=st.sampled_from(["a", "b", "c"]),
    instance=st.sampled_from([None, None, "x"]),
    details=st.sampled_from([1, 1, 1, 2]),
    healthy=st.sampled_from([True, True, False]),
)
#: Runs of repeats between the other operations, as in real traffic.
histories = st.lists(
    st.one_of(ops(max_lag=300), st.lists(repeats, min_size=1, max_size=12)), min_size=4, max_size=30
).map(lambda parts: [op for part in parts for op in (part if isinstance(part, list) else [part])])


@PROPERTY
@given(history=histories, rules=RULES)
def test_the_short_path_changes_nothing_but_the_cost(
    history: list[Op | Repeat], rules: Rules
) -> None:
    pair = Pair(rules)
    for op in history:
        pair.step(op)


def test_steady_heartbeats_take_the_short_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service that keeps its cadence is re-judged at its (lazy) deadlines only."""
    run = Run(Folder(FoldState(), DEFAULTS))
    rejudged = 0
    original = Folder._rejudge

    def counting(self: Folder, *args: Any, **kwargs: Any) -> list[Transition]:
        nonlocal rejudged
        rejudged += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Folder, "_rejudge", counting)
    for n in range(200):
        Pair._repeat(run, Heartbeat(v=1, service="a", interval_s=1.0, ok=True, n=n), 500)
    assert run.folder.state.services["a"].status == "healthy"
    # Every fourth heartbeat meets the deadline the one two seconds before it left.
    assert rejudged <= 200 // 4 + 1, rejudged
