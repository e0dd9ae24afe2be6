"""What the fold keeps per service is shared wherever services repeat each other, and what
it no longer needs is given back (BENCHMARKS.md, "memory"). Heartbeats are decoded from
bytes, as the aggregator gets them, so that each holds strings of its own."""

from __future__ import annotations

import sys

from aggregator.commit import build_parts
from aggregator.flapping import HEALTHY_RUNS
from aggregator.fold import Folder
from aggregator.rules import Rules
from aggregator.slo import record
from aggregator.state import FoldState, Service
from healthbus.config import Config
from healthbus.schema import Heartbeat, decode_heartbeat, encode

T0 = 1_767_225_600_000
RULES = Rules.from_config(Config())


def beat(service: str, **fields: object) -> Heartbeat:
    body = {"v": 1, "service": service, "interval_s": 10, "ok": True, **fields}
    return decode_heartbeat(encode(body))


def test_services_share_their_kind_and_instance_names() -> None:
    folder = Folder(FoldState(), RULES)
    for name in ("alpha", "beta"):
        folder.apply(beat(name, kind="consumer", instance="worker-host-17:8080"), T0)
    a, b = (folder.state.services[n] for n in ("alpha", "beta"))
    ia, ib = a.find("worker-host-17:8080"), b.find("worker-host-17:8080")
    assert a.kind is b.kind is ia.hb.kind is ib.hb.kind
    assert ia.hb.instance is ib.hb.instance


def test_a_service_of_one_instance_holds_no_dict_of_instances() -> None:
    """Most services run as one instance: a dict of one took 184 bytes each."""
    folder = Folder(FoldState(), RULES)
    for at in (T0, T0 + 10_000):  # first sighting, then a steady heartbeat
        folder.apply(beat("alpha", instance="host-a:4242"), at)
    folder.apply(beat("beta", instance="host-a:4242", phase="start"), T0)
    folder.apply(beat("beta", instance="host-a:4242"), T0 + 1_000)
    for svc in folder.state.services.values():
        assert svc.several is None and svc.sole is not None
    folder.apply(beat("alpha", instance="host-b:4242"), T0 + 20_000)
    folder.apply(beat("alpha", instance="host-b:4242", goodbye=True), T0 + 30_000)
    alpha = folder.state.services["alpha"]
    assert alpha.several is None and alpha.sole is alpha.find("host-a:4242")


def test_young_healthy_services_share_their_flap_window() -> None:
    folder = Folder(FoldState(), RULES)
    for i in range(3):
        for name in ("alpha", "beta"):
            folder.apply(beat(name), T0 + i * 10_000)
    a, b = (folder.state.services[n] for n in ("alpha", "beta"))
    assert a.flap_window is b.flap_window is HEALTHY_RUNS[3]


def test_a_flushed_fleet_leaves_no_large_pending_sets() -> None:
    folder = Folder(FoldState(), RULES)
    names = [f"svc-{i}" for i in range(5000)]
    for i in range(2):
        for name in names:
            folder.apply(beat(name), T0 + i * 10_000)
    pending = folder.state.pending
    assert len(pending.fresh) == len(names)  # steady repeats, left for the flush
    build_parts(folder.state, [], cursor=f"{T0 + 10_000}-0", flush=set(names))
    assert not pending
    empty = sys.getsizeof(set())
    assert [sys.getsizeof(s) for s in (pending.fresh, pending.deferred, pending.state)] == [
        empty
    ] * 3


def test_a_service_holds_no_empty_containers() -> None:
    svc = Service(name="alpha", kind="perpetual", since_ms=T0)
    record(svc, "healthy_ms", T0, T0 + 60_000)  # good time: no SLO minute kept
    assert (svc.depends_on, svc.slo_minutes) == ((), None)
    record(svc, "error_ms", T0, T0 + 1000)
    assert svc.slo_minutes == {T0 // 60_000: [1000, 0]}


def test_an_instance_shares_its_times_until_blind_time_is_granted() -> None:
    folder = Folder(FoldState(), RULES)
    at = int(str(T0 + 5))  # an int object of its own, as the runner parses each entry id
    folder.apply(beat("alpha"), at)
    inst = folder.state.services["alpha"].find("")
    assert inst.last_v is inst.last_ms
    folder.grant(at + 10, at + 20)
    later = int(str(T0 + 100))
    folder.apply(beat("alpha"), later)
    inst = folder.state.services["alpha"].find("")
    assert (inst.last_ms, inst.last_v) == (later, later - 10)


def test_accounting_without_slo_rules_remembers_no_target_per_service() -> None:
    folder = Folder(FoldState(), RULES)
    assert RULES.slo == {} and folder.retention.enabled
    for i in range(50):
        folder.apply(beat(f"svc-{i}"), T0 + i)
    folder.expire(T0 + 60_000)
    folder.account(100)
    assert folder._targets == {}


def test_services_share_their_day_and_a_first_sighting_one_time_object() -> None:
    folder = Folder(FoldState(), RULES)
    at = int(str(T0 + 5))  # an int object of its own, as the runner parses each entry id
    for name in ("alpha", "beta"):
        folder.apply(beat(name, duration_ms=12.5), at + (name == "beta"))
    a, b = (folder.state.services[n] for n in ("alpha", "beta"))
    assert a.sla_day == b.sla_day and a.sla_day is b.sla_day
    inst = a.find("")
    assert a.since_ms is a.sla_ms is inst.last_ms is inst.last_v
