"""Properties of the fold over generated histories (hypothesis, derandomized and bounded).

A history is a list of operations at non-decreasing times: heartbeats (random ok, status,
duration, interval, kind, instance), job starts, goodbyes, rejects, expire calls and blind
spans (grants). Some histories let entries trail the watermark, as they may once the runner
extrapolates Redis TIME. `derived()` restates the rules independently of the fold.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.fold import Folder, event_name, view
from aggregator.rules import Rules, judge
from aggregator.state import FoldState, Service
from healthbus.schema import STATUS_ORDER, Heartbeat, Status, Transition

T0 = 1_767_225_600_000
SERVICES = ("a", "b", "c")
INSTANCES = (None, "x", "y")
SHORT_FORGET = Rules(forget_after_ms=90_000)

PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- histories -------------------------------------------------------------------------


class Beat(NamedTuple):
    dt: int
    lag: int
    service: str
    instance: str | None
    ok: bool
    status: Status | None
    duration_ms: float | None
    interval_s: float
    kind: str


class Start(NamedTuple):
    dt: int
    lag: int
    service: str
    instance: str | None
    interval_s: float
    timeout_s: float


class Goodbye(NamedTuple):
    dt: int
    lag: int
    service: str
    instance: str | None


class Reject(NamedTuple):
    dt: int
    lag: int
    service: str


class Expire(NamedTuple):
    dt: int


class Blind(NamedTuple):
    """The bus was unreachable for `span` ms; the grant reaches `back` ms into seen time."""

    dt: int
    back: int
    span: int


Op = Beat | Start | Goodbye | Reject | Expire | Blind

gaps = st.one_of(st.integers(0, 2_500), st.integers(0, 12_000), st.just(0))
all_services = st.sampled_from(SERVICES)
instances = st.sampled_from(INSTANCES)
intervals = st.sampled_from([1.0, 2.5, 4.0])


def lags(max_lag: int) -> st.SearchStrategy[int]:
    # A few spread values find more than integers(), which favours the smallest.
    return st.just(0) if max_lag == 0 else st.sampled_from([0, 0, max_lag // 3, max_lag])


def beats(max_lag: int, services: st.SearchStrategy[str]) -> st.SearchStrategy[Beat]:
    return st.builds(
        Beat,
        dt=gaps,
        lag=lags(max_lag),
        service=services,
        instance=instances,
        ok=st.sampled_from([True, True, True, False]),
        status=st.sampled_from([None, None, None, "healthy", "degraded", "error"]),
        duration_ms=st.sampled_from([None, 10.0, 900.0, 3_000.0]),
        interval_s=intervals,
        kind=st.sampled_from(["perpetual", "probe", "cronjob"]),
    )


def ops(
    max_lag: int = 0, services: st.SearchStrategy[str] = all_services, blind: bool = True
) -> st.SearchStrategy[Op]:
    choices: list[st.SearchStrategy[Op]] = [
        beats(max_lag, services),
        beats(max_lag, services),
        beats(max_lag, services),
        st.builds(Expire, dt=gaps),
        st.builds(Expire, dt=gaps),
        st.builds(
            Start,
            dt=gaps,
            lag=lags(max_lag),
            service=services,
            instance=instances,
            interval_s=intervals,
            timeout_s=st.sampled_from([0.5, 3.0]),
        ),
        st.builds(Goodbye, dt=gaps, lag=lags(max_lag), service=services, instance=instances),
        st.builds(Reject, dt=gaps, lag=lags(max_lag), service=services),
    ]
    if blind:
        choices.append(
            st.builds(Blind, dt=gaps, back=st.integers(0, 2_000), span=st.integers(1, 60_000))
        )
    return st.one_of(*choices)


histories = st.lists(ops(), min_size=2, max_size=40)
rules_choices = st.sampled_from([Rules(), SHORT_FORGET])


@dataclass
class Step:
    op: Op
    transitions: list[Transition]
    before: dict[str, Status]
    after: dict[str, Status]
    now_v: int


@dataclass
class Run:
    folder: Folder
    steps: list[Step] = field(default_factory=list)
    t: int = T0
    last_entry: int = T0

    @property
    def transitions(self) -> list[Transition]:
        return [t for step in self.steps for t in step.transitions]


def statuses(folder: Folder) -> dict[str, Status]:
    return {name: svc.status for name, svc in folder.state.services.items()}


def heartbeat(service: str, interval_s: float, **fields: object) -> Heartbeat:
    return Heartbeat(v=1, service=service, interval_s=interval_s, **fields)  # type: ignore[arg-type]


def perform(run: Run, op: Op) -> list[Transition]:
    folder = run.folder
    run.t += op.dt
    if isinstance(op, Expire):
        return folder.expire(run.t)
    if isinstance(op, Blind):
        folder.grant(run.t - op.back, run.t + op.span)
        run.t += op.span
        return []
    # Stream entries never go back in time, but may trail the watermark by `lag` ms.
    run.last_entry = at = max(run.last_entry, run.t - op.lag)
    if isinstance(op, Reject):
        return folder.reject(op.service, "invalid heartbeat: bad field", at)
    if isinstance(op, Goodbye):
        return folder.apply(
            heartbeat(op.service, 1.0, ok=True, instance=op.instance, goodbye=True), at
        )
    if isinstance(op, Start):
        hb = heartbeat(
            op.service, op.interval_s, ok=True, instance=op.instance, phase="start",
            timeout_s=op.timeout_s,
        )  # fmt: skip
        return folder.apply(hb, at)
    hb = heartbeat(
        op.service, op.interval_s, ok=op.ok, status=op.status, duration_ms=op.duration_ms,
        kind=op.kind, instance=op.instance, error=None if op.ok else "boom",
    )  # fmt: skip
    return folder.apply(hb, at)


def play(history: list[Op], rules: Rules | None = None) -> Run:
    run = Run(Folder(FoldState(), rules))
    for op in history:
        before = statuses(run.folder)
        transitions = perform(run, op)
        run.steps.append(
            Step(op, transitions, before, statuses(run.folder), run.folder.state.clock.now_v)
        )
    return run


def by_service(transitions: list[Transition]) -> dict[str, list[Transition]]:
    out: dict[str, list[Transition]] = {}
    for t in transitions:
        out.setdefault(t.service, []).append(t)
    return out


# -- an independent statement of the rules --------------------------------------------


def derived(folder: Folder, svc: Service) -> Status | None:
    """The status the rules give `svc` at the watermark (None: the fold's own choice)."""
    now = folder.state.clock.now_v
    if svc.invalid is not None:
        return "error"
    if not svc.each():
        return None if svc.departed_v is not None else "unknown"  # a goodbye keeps its status
    worst: Status = "unknown"
    for inst in svc.each():
        status: Status = "unknown"
        if inst.completed:
            status = judge(inst.hb, max(0, now - inst.last_v), folder.rules)[0]
        if inst.started_v is not None and inst.start_timeout_ms is not None:
            if now > inst.started_v + inst.start_timeout_ms:
                status = "error"
        if STATUS_ORDER[status] > STATUS_ORDER[worst]:
            worst = status
    return worst


# -- properties ------------------------------------------------------------------------


@PROPERTY
@given(history=histories, rules=rules_choices)
def test_every_service_has_the_status_the_rules_give_it_at_the_watermark(
    history: list[Op], rules: Rules
) -> None:
    run = Run(Folder(FoldState(), rules))
    for op in history:
        perform(run, op)
        folder = run.folder
        now = folder.state.clock.now_v
        for svc in folder.state.services.values():
            expected = derived(folder, svc)
            if expected is not None:
                assert svc.status == expected, (svc.name, svc)
            assert now - svc.last_v < rules.forget_after_ms
        deadline = folder.state.next_deadline_v()
        assert deadline is None or deadline > now


@PROPERTY
@given(history=histories)
def test_never_healthy_when_every_live_instance_is_older_than_twice_its_interval(
    history: list[Op],
) -> None:
    run = Run(Folder(FoldState()))
    for op in [*history, Expire(0)]:
        perform(run, op)
        if not isinstance(op, Expire):
            continue
        now = run.folder.state.clock.now_v
        for svc in run.folder.state.services.values():
            ages = [(now - inst.last_v, 2 * inst.hb.interval_s * 1000) for inst in svc.each()]
            if ages and all(age > limit for age, limit in ages):
                assert svc.status != "healthy", svc


@PROPERTY
@given(history=histories, rules=rules_choices)
def test_a_transition_is_emitted_exactly_when_the_status_changes(
    history: list[Op], rules: Rules
) -> None:
    for step in play(history, rules).steps:
        mine = by_service(step.transitions)
        for name in set(step.before) | set(step.after) | set(mine):
            before = step.before.get(name, "unknown")
            after = step.after.get(name, "unknown")
            chain = mine.get(name, [])
            if not chain:
                assert before == after, (name, step)
                continue
            assert chain[0].from_ == before, (name, step)
            assert chain[-1].to == after, (name, step)
            for prev, nxt in itertools.pairwise(chain):
                assert nxt.from_ == prev.to
            for t in chain:
                assert t.event == event_name(t.from_, t.to)
                # `left` is a departure: it may close a service that never had a status.
                assert t.from_ != t.to or t.event == "healthbus.service.left", t


@PROPERTY
@given(history=histories)
def test_each_services_transitions_chain_from_unknown(history: list[Op]) -> None:
    for name, chain in by_service(play(history).transitions).items():
        assert chain[0].from_ == "unknown", name
        for prev, nxt in itertools.pairwise(chain):
            assert nxt.from_ == prev.to, (name, prev, nxt)


@PROPERTY
@given(history=histories, rules=rules_choices)
def test_recovery_follows_once_healthy_heartbeats_arrive(history: list[Op], rules: Rules) -> None:
    run = play(history, rules)
    folder = run.folder
    at = max(run.t, run.last_entry)
    folder.expire(at)
    for name in sorted(folder.state.services):
        svc = folder.state.services[name]
        was, incident = svc.status, svc.incident
        healing: list[Transition] = []
        keys = [inst.key for inst in svc.each()] or [""]
        for key in keys:
            hb = heartbeat(name, 10.0, ok=True, instance=key or None)
            healing += [t for t in folder.apply(hb, at) if t.service == name]
        assert svc.status == "healthy", svc
        if was in ("degraded", "error"):
            last = healing[-1]
            assert (last.event, last.to) == ("healthbus.service.recovered", "healthy")
            assert last.incident == incident is not None
            assert svc.incident is None


def lagging(max_lag: int) -> st.SearchStrategy[list[Op]]:
    """Histories of one service in which entries often follow an expire call."""
    one = ops(max_lag, services=st.just("a"))
    pair = st.tuples(st.builds(Expire, dt=gaps), beats(max_lag, st.just("a"))).map(list)
    return st.lists(st.one_of(one.map(lambda op: [op]), pair), min_size=5, max_size=25).map(
        lambda chunks: [op for chunk in chunks for op in chunk]
    )


@settings(PROPERTY, max_examples=300)
@given(history=lagging(max_lag=3_000), rules=rules_choices)
def test_stamps_and_the_watermark_never_go_back(history: list[Op], rules: Rules) -> None:
    # Entries may trail the watermark (it is extrapolated Redis TIME); a generous lag finds more.
    run = play(history, rules)
    watermarks = [step.now_v for step in run.steps]
    assert watermarks == sorted(watermarks)
    for name, chain in by_service(run.transitions).items():
        stamps = [t.at_ms for t in chain]
        assert stamps == sorted(stamps), name


@PROPERTY
@given(
    history=st.lists(ops(), max_size=40).map(
        lambda h: [op._replace(dt=op.dt + 1) for op in h]  # one operation per millisecond
    )
)
def test_transition_ids_are_unique_when_entries_have_distinct_times(history: list[Op]) -> None:
    ids = [t.id for t in play(history).transitions]
    assert len(ids) == len(set(ids))


@st.composite
def steady(draw: st.DrawFn) -> list[Op]:
    """One service beating within 2 x its interval, expire calls anywhere in between."""
    interval_s = draw(st.sampled_from([0.5, 1.0, 5.0, 60.0]))
    limit = int(2 * interval_s * 1000)
    instance = draw(instances)
    history: list[Op] = []
    for i in range(draw(st.integers(1, 40))):
        gap = draw(st.integers(0, limit)) if i else 0
        checks = sorted(draw(st.lists(st.integers(0, gap), max_size=3)))
        spent = 0
        for check in checks:
            history.append(Expire(check - spent))
            spent = check
        history.append(
            Beat(
                dt=gap - spent,
                lag=0,
                service="steady",
                instance=instance,
                ok=True,
                status=draw(st.sampled_from([None, "healthy"])),
                duration_ms=draw(st.sampled_from([None, 0.0, interval_s * 1000])),
                interval_s=interval_s,
                kind=draw(st.sampled_from(["perpetual", "probe"])),
            )
        )
    history.append(Expire(limit))
    return history


@PROPERTY
@given(history=steady())
def test_steady_healthy_input_yields_exactly_one_transition(history: list[Op]) -> None:
    transitions = play(history).transitions
    assert [(t.event, t.at_ms) for t in transitions] == [("healthbus.service.appeared", T0)]


@PROPERTY
@given(history=histories, rules=rules_choices)
def test_the_fold_is_deterministic(history: list[Op], rules: Rules) -> None:
    def outcome(run: Run) -> tuple[bytes, bytes, int | None]:
        services = [view(svc) for _, svc in sorted(run.folder.state.services.items())]
        return (
            msgspec.json.encode(run.transitions),
            msgspec.json.encode(services),
            run.folder.next_deadline_ms(),
        )

    assert outcome(play(history, rules)) == outcome(play(history, rules))


def without_expire_calls(history: list[Op]) -> list[Op]:
    """The same entries at the same times, with no expire call between them."""
    out: list[Op] = []
    carried = 0
    for op in history:
        if isinstance(op, Expire):
            carried += op.dt
        else:
            out.append(op._replace(dt=op.dt + carried))
            carried = 0
    return [*out, Expire(carried)]


@PROPERTY
@given(history=st.lists(ops(blind=False), min_size=2, max_size=40), rules=rules_choices)
def test_expire_calls_between_entries_do_not_change_the_outcome(
    history: list[Op], rules: Rules
) -> None:
    # A backlog read in one batch must fold as it would have live, one entry at a time.
    live = play([*history, Expire(0)], rules)
    batch = play(without_expire_calls(history), rules)
    assert by_service(live.transitions) == by_service(batch.transitions)
    assert statuses(live.folder) == statuses(batch.folder)
