"""Commit parts: each transition travels with its service's row, in fold order."""

from __future__ import annotations

from aggregator.commit import MAX_SERVICES, build_parts
from aggregator.fold import Folder
from aggregator.state import FoldState
from healthbus.schema import Heartbeat

#: 2026-01-01T00:00:00Z
T0 = 1_767_225_600_000
#: Enough services for three parts at least.
FLEET = 2 * MAX_SERVICES + 500


def test_a_fleets_first_sightings_and_mass_outage_go_with_their_rows() -> None:
    folder = Folder(FoldState())
    names = [f"svc-{i:05d}" for i in range(FLEET)]
    # Fold order differs from the parts' (sorted) order: each part gets its own, in order.
    out = []
    for i, name in enumerate(reversed(names)):
        out += folder.apply(Heartbeat(v=1, service=name, interval_s=1.0, ok=True), T0 + i)
    out += folder.expire(T0 + FLEET + 2_500)  # every service silent past 2 x its interval
    assert len(out) == 2 * FLEET

    parts = build_parts(folder.state, out, cursor="1-0")

    assert len(parts) >= 3
    for part in parts:
        assert set(part.state) == part.names
        assert {t.service for t in part.transitions} == part.names
        assert part.transitions == [t for t in out if t.service in part.names]
    assert sorted(t.id for p in parts for t in p.transitions) == sorted(t.id for t in out)
