"""Turning whatever a task hands back into `details` the bus accepts.

A decorated function may return any mapping (a row count, or a dict meant for someone else
entirely). Sending it as is would make the aggregator flag the service as broken the first
time a value is a list or the map outgrows 2 KiB, so the publisher would be what harms the
service. Instead the entries that fit are kept and the rest left out: string keys of 1-64
characters, scalar values, at most 32 entries and 2 KiB encoded. Strings are scrubbed of
credentials like error texts, since details are shown on the dashboard too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, Final

from healthbus.schema import (
    DETAIL_NAME_MAX,
    DETAILS_MAX_BYTES,
    DETAILS_MAX_ENTRIES,
    Details,
    DetailValue,
    encode,
)
from publishers.scrub import scrub, truncate_utf8

__all__ = ["MAX_ENTRIES", "clean_details"]

MAX_ENTRIES: Final = DETAILS_MAX_ENTRIES
#: Entries looked at: a huge mapping costs the caller a bounded amount of time.
_SCAN_ENTRIES: Final = 4 * MAX_ENTRIES
_STRING_MAX_BYTES: Final = 256
_INT_RANGE: Final = range(-(2**63), 2**63)


def clean_details(*sources: Mapping[Any, Any] | None) -> Details | None:
    """The entries of `sources` that fit a heartbeat's `details`, or None when none do.

    An earlier source wins a key (explicit details over a returned mapping); entries that do
    not fit are left out, never an error.
    """
    out: Details = {}
    for values in sources:
        if not values:
            continue
        for key, value in itertools.islice(values.items(), _SCAN_ENTRIES):
            if not isinstance(key, str) or not 0 < len(key) <= DETAIL_NAME_MAX or key in out:
                continue
            fits, fitted = _fit(value)
            if fits:
                out[key] = fitted
                if len(out) == MAX_ENTRIES:
                    break
        if len(out) == MAX_ENTRIES:
            break
    if not out:
        return None
    if len(encode(out)) <= DETAILS_MAX_BYTES:  # the usual case: one encode
        return out
    return _within_budget(out)


def _within_budget(details: Details) -> Details:
    """The entries, in order, that fit together in DETAILS_MAX_BYTES; the others are left out."""
    kept: Details = {}
    size = 2  # the braces
    for key, value in details.items():
        cost = len(encode(key)) + len(encode(value)) + 1  # ':', and ',' before all but the first
        if size + cost + (1 if kept else 0) <= DETAILS_MAX_BYTES:
            kept[key] = value
            size += cost + (1 if len(kept) > 1 else 0)
    return kept


def _fit(value: object) -> tuple[bool, DetailValue]:
    """(True, the value as sent) for a scalar, (False, None) for anything else."""
    if value is None or isinstance(value, bool):
        return True, value
    if isinstance(value, float):
        return True, value if math.isfinite(value) else None  # JSON has no NaN: sent as null
    if isinstance(value, int):
        return True, int(value) if value in _INT_RANGE else float(value)
    if isinstance(value, str):
        return True, truncate_utf8(scrub(value[: 4 * _STRING_MAX_BYTES]), _STRING_MAX_BYTES)
    return False, None
