"""Adaptive grace and restart detection: what an instance's own cadence teaches.

Lateness is how much longer than its promised interval an instance took between two
heartbeats (never negative); its exponentially weighted mean (weight 1/4 for the newest)
is the instance's usual lateness. The age rule then allows it three times that, at most
`grace_max` intervals: a job that regularly runs a little late is not degraded for it,
one that keeps its cadence is judged as strictly as ever, and a late-running one still
fails within bounds. A new `boot` is a restart: counted, and the gap across it teaches
nothing. A jump in `n` within one boot counts the heartbeats lost on the way. Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from aggregator.rules import Rules
    from aggregator.state import Instance
    from healthbus.schema import Heartbeat

__all__ = ["grace_ms", "learn", "learn_from"]

WEIGHT: Final = 0.25
SPREAD: Final = 3.0


def learn(prev: Instance | None, fresh: Instance) -> None:
    """Carry what `prev` (the instance's previous completed heartbeat) taught to `fresh`."""
    if prev is None or not prev.completed:
        return
    fresh.restarts, fresh.lost, fresh.late_ms = prev.restarts, prev.lost, prev.late_ms
    learn_from(fresh, prev.hb, prev.last_v)


def learn_from(inst: Instance, old: Heartbeat, old_v: int) -> None:
    """What `inst`'s newest heartbeat (`inst.hb`, at `inst.last_v`) teaches after `old`,
    the one before it, at `old_v`: a restart, heartbeats lost, lateness."""
    new = inst.hb
    if new.boot is not None and old.boot is not None and new.boot != old.boot:
        inst.restarts += 1
        return
    if new.n is not None and old.n is not None and new.n > old.n + 1:
        inst.lost += new.n - old.n - 1
    late = inst.last_v - old_v - new.interval_s * 1000
    if late > 0 or inst.late_ms:  # an instance that keeps its cadence stays at 0 (most)
        mean = inst.late_ms + WEIGHT * (max(late, 0.0) - inst.late_ms)
        # Under half a millisecond (entry ids count whole ones) it is none: rounded to
        # 0.1 ms, a mean once above it never decayed below 0.2 ms, back on cadence or not.
        # So a steady lateness under 2 ms (a quarter of it is the first step) is jitter at
        # the ids' resolution and never learned: its grace would be under 6 ms anyway.
        inst.late_ms = round(mean, 1) if mean >= 0.5 else 0.0


def grace_ms(inst: Instance, rules: Rules) -> int:
    """How much longer than the age rule says this instance may stay silent."""
    if rules.grace_max <= 0 or inst.late_ms <= 0:
        return 0
    return int(min(SPREAD * inst.late_ms, rules.grace_max * inst.hb.interval_s * 1000))
