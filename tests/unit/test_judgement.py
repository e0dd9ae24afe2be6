"""Judgement beyond the plain rules: hysteresis, dependencies and incidents (pure, no Redis)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.dependencies import Graph, roots
from aggregator.fold import Folder, view
from aggregator.hysteresis import observe
from aggregator.rules import Rules
from aggregator.state import FoldState
from healthbus.config import Config
from healthbus.errors import ConfigError
from healthbus.schema import Heartbeat, Intent, Status, Transition

T0 = 1_767_225_600_000
BOUNDED = settings(max_examples=100, derandomize=True, deadline=None, database=None)


def hb(service: str = "svc", **fields: object) -> Heartbeat:
    base: dict[str, object] = {"v": 1, "service": service, "interval_s": 10.0, "ok": True}
    base.update(fields)
    return Heartbeat(**base)  # type: ignore[arg-type]


def events(transitions: list[Transition]) -> list[str]:
    return [f"{t.service}:{t.event.rsplit('.', 1)[1]}" for t in transitions]


# -- hysteresis ------------------------------------------------------------------------


def test_default_counts_take_every_verdict_at_once() -> None:
    folder = Folder(FoldState())
    folder.apply(hb(), T0)
    assert events(folder.apply(hb(ok=False), T0 + 1)) == ["svc:error"]


def test_fall_and_rise_counts_per_kind() -> None:
    rules = Rules(fall=3, rise=2, hysteresis_by_kind={"probe": (1, 1)})
    folder = Folder(FoldState(), rules)
    assert events(folder.apply(hb(), T0)) == ["svc:appeared"]
    assert folder.apply(hb(ok=False), T0 + 1) == []
    assert folder.apply(hb(ok=False), T0 + 2) == []
    assert folder.apply(hb(), T0 + 3) == []  # the streak of failures is broken
    assert folder.apply(hb(ok=False), T0 + 4) == []
    assert folder.apply(hb(ok=False), T0 + 5) == []
    [t] = folder.apply(hb(ok=False, error="boom"), T0 + 6)
    assert (t.to, t.reason) == ("error", "failed: boom")
    assert folder.apply(hb(), T0 + 7) == []
    assert events(folder.apply(hb(), T0 + 8)) == ["svc:recovered"]
    # probes are overridden to 1/1
    folder.apply(hb("p", kind="probe"), T0 + 9)
    assert events(folder.apply(hb("p", kind="probe", ok=False), T0 + 10)) == ["p:error"]


def test_silence_is_not_held_back_by_hysteresis() -> None:
    folder = Folder(FoldState(), Rules(fall=5))
    folder.apply(hb(interval_s=1), T0)
    assert [t.to for t in folder.expire(T0 + 6_000)] == ["degraded", "error"]


ORDER = {"healthy": 1, "degraded": 2, "error": 3}


@BOUNDED
@given(
    st.lists(st.sampled_from(["healthy", "degraded", "error"]), max_size=30),
    st.integers(1, 4),
    st.integers(1, 4),
)
def test_the_held_status_changes_only_after_enough_agreeing_verdicts(
    verdicts: list[Status], rise: int, fall: int
) -> None:
    held = None
    for i, status in enumerate(verdicts):
        before, held = held, observe(held, status, status, rise, fall)
        if before is None or held.status == before.status:
            continue
        worse = ORDER[status] > ORDER[before.status]
        need = fall if worse else rise
        tail = verdicts[max(0, i - need + 1) : i + 1]
        assert held.status == status and len(tail) == need
        assert all(v != before.status and (ORDER[v] > ORDER[before.status]) == worse for v in tail)
    if held is not None:
        for _ in range(max(rise, fall)):
            held = observe(held, "error", "error", rise, fall)
        assert held.status == "error"


# -- dependencies ----------------------------------------------------------------------


def test_roots_are_the_deepest_failing_dependencies() -> None:
    deps = {"web": ["api", "cache"], "api": ["postgres"], "postgres": ["disk"], "cache": []}
    status: dict[str, Status] = {"api": "error", "postgres": "error", "disk": "healthy"}
    assert roots("web", lambda n: deps.get(n, []), status.get) == ["postgres"]
    status["cache"] = "error"
    assert roots("web", lambda n: deps.get(n, []), status.get) == ["postgres", "cache"]
    status["api"] = "degraded"  # the chain is cut: only error explains dependants
    assert roots("web", lambda n: deps.get(n, []), status.get) == ["cache"]


def test_roots_survive_cycles() -> None:
    deps = {"a": ["b"], "b": ["c"], "c": ["b"]}
    status: dict[str, Status] = {"b": "error", "c": "error"}
    assert roots("a", lambda n: deps.get(n, []), status.get) == ["c"]
    assert roots("b", lambda n: deps.get(n, []), status.get) == ["c"]


def test_graph_finds_dependants_up_the_failing_chain() -> None:
    graph = Graph()
    graph.link("api", (), ["postgres"])
    graph.link("web", (), ["api"])
    graph.link("cron", (), ["postgres"])
    assert graph.upstream_of("postgres", lambda n: False) == {"api", "cron"}
    assert graph.upstream_of("postgres", lambda n: n == "api") == {"api", "cron", "web"}
    graph.link("cron", ["postgres"], [])
    assert graph.dependants("postgres") == {"api"}


def test_dependants_failing_after_their_dependency_are_suppressed() -> None:
    folder = Folder(FoldState())
    folder.apply(hb("postgres", kind="probe"), T0)
    for name in ("api", "worker", "cron"):
        folder.apply(hb(name, depends_on=["postgres"]), T0 + 1)
    [root] = folder.apply(hb("postgres", kind="probe", ok=False), T0 + 2)
    assert (root.root_cause, root.suppressed) == (None, False)
    assert view(folder.state.services["api"]).affected_by == ["postgres"]
    caused = [t for n in ("api", "worker", "cron") for t in folder.apply(hb(n, ok=False), T0 + 3)]
    assert [(t.to, t.root_cause, t.suppressed) for t in caused] == [("error", "postgres", True)] * 3
    # Resolves carry the incident's root cause, and the flags clear once postgres is fine.
    folder.apply(hb("postgres", kind="probe"), T0 + 4)
    assert view(folder.state.services["api"]).affected_by is None
    [resolved] = folder.apply(hb("api"), T0 + 5)
    assert (resolved.event, resolved.root_cause) == ("healthbus.service.recovered", "postgres")


def test_a_service_failing_before_its_dependency_is_not_suppressed() -> None:
    folder = Folder(FoldState())
    [t] = folder.apply(hb("api", ok=False, depends_on=["postgres"]), T0)
    assert (t.root_cause, t.suppressed) == (None, False)
    folder.apply(hb("postgres", ok=False), T0 + 1)
    assert folder.state.services["api"].affected_by == ["postgres"]
    [worse] = folder.apply(hb("web", ok=False, depends_on=["api"]), T0 + 2)
    assert worse.root_cause == "postgres"  # the deepest: through api, in error too


def test_dependencies_follow_the_live_instances() -> None:
    folder = Folder(FoldState())
    folder.apply(hb("db", ok=False), T0)
    folder.apply(hb("api", instance="a", depends_on=["db"]), T0)
    folder.apply(hb("api", instance="b"), T0)
    assert folder.state.services["api"].affected_by == ["db"]
    folder.apply(hb("api", instance="a", goodbye=True), T0 + 1)
    svc = folder.state.services["api"]
    assert (svc.depends_on, svc.affected_by) == ((), None)


# -- incidents -------------------------------------------------------------------------


def test_an_incident_groups_its_transitions_and_its_resolve_says_how_long() -> None:
    folder = Folder(FoldState())
    folder.apply(hb(), T0)
    [opened] = folder.apply(hb(status="degraded"), T0 + 1_000)
    [updated] = folder.apply(hb(ok=False), T0 + 2_000)
    [resolved] = folder.apply(hb(), T0 + 61_000)
    assert opened.incident == updated.incident == resolved.incident == f"svc:{T0 + 1_000}"
    assert (opened.incident_duration_ms, resolved.incident_duration_ms) == (None, 60_000)
    [again] = folder.apply(hb(ok=False), T0 + 62_000)
    assert again.incident == f"svc:{T0 + 62_000}"


def test_hysteresis_is_configured_per_kind() -> None:
    config = Config(fall=2, hysteresis_by_kind={"consumer": (2, 3)})
    rules = Rules.from_config(config)
    assert (rules.counts("perpetual"), rules.counts("consumer")) == ((1, 2), (2, 3))
    with pytest.raises(ConfigError, match="at least 1"):
        Config(rise=0)


# -- instances: quorum and intents -----------------------------------------------------


def test_a_quorum_rule_replaces_worst_of_for_matching_services() -> None:
    folder = Folder(FoldState(), Rules(quorum={"web-*": 2}))
    for pod in ("a", "b", "c"):
        folder.apply(hb("web-front", instance=pod), T0)
        folder.apply(hb("solo", instance=pod), T0)
    assert folder.apply(hb("web-front", instance="a", ok=False), T0 + 1) == []
    [solo] = folder.apply(hb("solo", instance="a", ok=False), T0 + 1)
    assert solo.to == "error"  # worst-of
    [t] = folder.apply(hb("web-front", instance="b", ok=False), T0 + 2)
    assert (t.to, t.reason) == ("degraded", "1 of 3 instances healthy, fewer than 2")
    [t] = folder.apply(hb("web-front", instance="c", status="degraded"), T0 + 3)
    assert (t.to, t.reason) == ("error", "none of 3 instances healthy (quorum 2)")
    recovered = folder.apply(hb("web-front", instance="a"), T0 + 4)
    recovered += folder.apply(hb("web-front", instance="b"), T0 + 5)
    assert [t.to for t in recovered] == ["degraded", "healthy"]


def test_an_intent_explains_the_expected_silence() -> None:
    until = datetime.fromtimestamp((T0 + 600_000) / 1000, UTC)
    folder = Folder(FoldState())
    folder.apply(hb(intent=Intent(state="deploying", until=until)), T0)
    assert folder.expire(T0 + 300_000) == []
    assert folder.state.services["svc"].reason == "deploying until 2026-01-01T00:10:00.000Z"
    assert [t.to for t in folder.expire(T0 + 600_000 + 51_000)] == ["degraded", "error"]
