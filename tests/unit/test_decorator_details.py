"""`clean_details`: whatever a task returns, the details sent are ones the bus accepts."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from healthbus.schema import Heartbeat, decode_heartbeat, encode
from publishers.details import MAX_ENTRIES, clean_details

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=400)
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
keys = st.text(max_size=80) | st.integers() | st.tuples(st.integers())
mappings = st.dictionaries(keys, values, max_size=60)


@given(mappings, mappings)
def test_the_result_always_passes_the_bus_schema(
    first: dict[Any, Any], second: dict[Any, Any]
) -> None:
    details = clean_details(first, second)
    hb = Heartbeat(v=1, service="s", interval_s=1, ok=True, details=details)
    assert decode_heartbeat(encode(hb)).details == details  # valid, and round-trips
    if details is not None:
        assert 0 < len(details) <= MAX_ENTRIES
        assert all(key in first or key in second for key in details)


@given(st.dictionaries(st.text(min_size=1, max_size=20), st.integers(0, 1000), max_size=10))
def test_small_numeric_maps_pass_unchanged(values: dict[str, int]) -> None:
    assert clean_details(values) == (values or None)


def test_the_first_source_wins_a_key_and_the_rest_fill_in() -> None:
    assert clean_details({"rows": 1}, {"rows": 2, "files": 3}) == {"rows": 1, "files": 3}


def test_strings_are_scrubbed_and_cut() -> None:
    details = clean_details({"dsn": "postgres://app:hunter2@db/prod", "log": "x" * 5000})
    assert details is not None
    assert details["dsn"] == "postgres://app:***@db/prod"
    assert isinstance(details["log"], str) and len(details["log"].encode()) <= 256


def test_nothing_fitting_is_none() -> None:
    assert clean_details(None, {}, {"": 1, "k": [1], 3: 4}) is None
