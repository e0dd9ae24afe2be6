"""A service's instances against a plain dict (hypothesis): whatever the order of puts and
drops, `find`, `each` and their order are a dict's, and a sole instance holds no dict of
its own; its state row is the one every version writes and reads, and loads back the same."""

from __future__ import annotations

from typing import NamedTuple

from hypothesis import given
from hypothesis import strategies as st

from aggregator.persist import load_state, service_row
from aggregator.state import Instance, Service
from healthbus.schema import Heartbeat, encode

T0 = 1_767_225_600_000
KEYS = ("", "a", "b", "c")


class Put(NamedTuple):
    key: str
    at: int


class Drop(NamedTuple):
    key: str


ops = st.lists(
    st.one_of(
        st.builds(Put, st.sampled_from(KEYS), st.integers(0, 1000)),
        st.builds(Drop, st.sampled_from(KEYS)),
    ),
    max_size=40,
)


def instance(key: str, at: int = 0) -> Instance:
    hb = Heartbeat(v=1, service="svc", interval_s=10.0, ok=True, instance=key or None)
    return Instance(hb=hb, last_ms=T0 + at, last_v=T0 + at)


def service() -> Service:
    return Service(name="svc", kind="perpetual", since_ms=T0)


@given(ops)
def test_instances_behave_as_a_dict_by_name(steps: list[Put | Drop]) -> None:
    svc, model = service(), dict[str, Instance]()
    for step in steps:
        if isinstance(step, Put):
            inst = instance(step.key, step.at)
            svc.put(inst)
            model[step.key] = inst
        else:
            assert svc.drop(step.key) is model.pop(step.key, None)
        assert list(svc.each()) == list(model.values())
        assert all(svc.find(key) is model.get(key) for key in KEYS)
        # One instance is held as itself; a dict only for two or more.
        assert (svc.sole is not None) == (len(model) == 1)
        assert svc.several is None or len(svc.several) >= 2
        loaded = load_state({b"svc": service_row(svc)}).services["svc"]
        assert [(i.key, i.last_ms) for i in loaded.each()] == [
            (i.key, i.last_ms) for i in model.values()
        ]


def test_a_sole_instance_is_written_by_name_as_every_version_writes_it() -> None:
    """An aggregator of before 2026-12-03 may lead next (a rolling upgrade): it reads the
    instances by name, and a row without them would show the service as left."""
    svc = service()
    svc.put(instance("a"))
    row = service_row(svc)
    assert row.startswith(encode(service())[:-1]) and b'"sole"' not in row
    assert row.endswith(b',"instances":{"a":' + encode(instance("a")) + b"}}")
    assert svc.sole is not None and svc.several is None  # as it was before the write
    svc.put(instance("b"))
    assert service_row(svc) == encode(svc)


def test_a_row_of_one_instance_loads_it_as_the_sole_one() -> None:
    row = encode(service())[:-1] + b',"instances":{"a":' + encode(instance("a")) + b"}}"
    loaded = load_state({b"svc": row}).services["svc"]
    assert loaded.several is None and loaded.sole is not None
    assert [i.key for i in loaded.each()] == ["a"] and loaded.find("a") is loaded.sole
    assert service_row(loaded) == row
