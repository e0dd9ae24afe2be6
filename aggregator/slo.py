"""SLOs: an availability target per service, and a transition when its error budget burns
too fast (the multiwindow, multi-burn-rate alerts of Google's SRE workbook).

Availability is the share of known time not in `error` (unknown and blind time are left
out). The budget is 1 - target; the burn rate over a window is the error share there
divided by the budget, so 1.0 spends the budget exactly over the SLO period. The service
burns while both windows of a pair burn at or above the pair's rate: 1 h and 5 min at 14.4
(2 % of a 30-day budget in an hour), or 6 h and 30 min at 6 (5 % in six hours). The short
window makes the alert stop soon after the errors do.

The time comes from the SLA accounting (sla.py), kept per minute for six hours, and only
for minutes that were not all good, so a healthy service costs nothing. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from aggregator.state import Service

__all__ = ["WINDOWS", "burn_rates", "judge_burn", "record", "target_for"]

MINUTE_MS: Final = 60_000
#: (long window, short window, burn rate) pairs.
WINDOWS: Final = ((3_600_000, 300_000, 14.4), (21_600_000, 1_800_000, 6.0))
KEEP_MS: Final = max(long for long, _, _ in WINDOWS)


def target_for(name: str, targets: Mapping[str, float]) -> float | None:
    """The target of the first pattern matching `name`, or None (no SLO)."""
    return next((t for pattern, t in targets.items() if fnmatchcase(name, pattern)), None)


def record(svc: Service, member: str, start: int, end: int) -> None:
    """Count [start, end) spent as `member` (`error_ms`, `blind_ms`, …) for the SLO."""
    if svc.slo_since is None:
        svc.slo_since = start
    if member in ("healthy_ms", "degraded_ms"):
        return
    slot = 0 if member == "error_ms" else 1
    minutes = svc.slo_minutes if svc.slo_minutes is not None else {}
    a = start
    while a < end:
        minute = a - a % MINUTE_MS
        b = min(end, minute + MINUTE_MS)
        tally = minutes.setdefault(minute // MINUTE_MS, [0, 0])
        tally[slot] += b - a
        a = b
    oldest = (end - KEEP_MS) // MINUTE_MS
    for minute in [m for m in minutes if m < oldest]:
        del minutes[minute]
    svc.slo_minutes = minutes or None  # most services: none, and no empty dict each


def burn_rates(svc: Service, now_ms: int, target_pct: float) -> list[float]:
    """The burn rate over each window (longest first), as of `now_ms`."""
    budget = 1 - target_pct / 100
    out: list[float] = []
    for window in sorted({w for pair in WINDOWS for w in pair[:2]}, reverse=True):
        start = max(now_ms - window, svc.slo_since if svc.slo_since is not None else now_ms)
        first = start // MINUTE_MS
        bad = unseen = 0
        for minute, (error_ms, other_ms) in (svc.slo_minutes or {}).items():
            if minute >= first:
                bad, unseen = bad + error_ms, unseen + other_ms
        known = now_ms - start - unseen
        out.append(bad / known / budget if known > 0 and budget > 0 else 0.0)
    return out


def judge_burn(svc: Service, now_ms: int, target_pct: float) -> tuple[bool, str]:
    """Whether the service burns its error budget too fast now, and why in words."""
    rates = dict(
        zip(
            sorted({w for pair in WINDOWS for w in pair[:2]}, reverse=True),
            burn_rates(svc, now_ms, target_pct),
            strict=True,
        )
    )
    burning = any(rates[long] >= rate and rates[short] >= rate for long, short, rate in WINDOWS)
    shown = ", ".join(f"{_span(w)}: {r:.1f}x" for w, r in rates.items())
    verb = "burns" if burning else "no longer burns"
    return burning, f"{verb} its {target_pct:g} % error budget too fast ({shown})"


def _span(ms: int) -> str:
    return f"{ms // 3_600_000} h" if ms >= 3_600_000 else f"{ms // 60_000} min"
