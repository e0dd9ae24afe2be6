"""Flap detection (the Nagios/Sensu method): weighted percent state change.

Each observation (a heartbeat, or a change the age rule makes) appends the service's
status to a window of the last 21. The percent state change weighs the 20 comparisons of
consecutive entries from 0.8 (oldest) to 1.2 (newest), so recent flips count more, and
divides by 20: a short history cannot flap. A service starts flapping above the high
threshold and stops below the low one; in between it keeps its state, so it does not flap
about flapping. While it flaps the fold holds its status at the worst seen and says so
once (`flapping`), and once more when it settles (`stable`): not a transition per flip.
Pure: strings of status letters in, numbers out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from healthbus.schema import Status, worst

if TYPE_CHECKING:
    from aggregator.rules import Rules
    from aggregator.state import Service

__all__ = [
    "HEALTHY_RUNS",
    "HEALTHY_WINDOW",
    "WINDOW",
    "differs",
    "judge_flapping",
    "percent_change",
    "record",
    "step",
]

WINDOW: Final = 21
_LETTER: Final[dict[str, str]] = {"unknown": "u", "healthy": "h", "degraded": "d", "error": "e"}
#: Windows of healthy observations only, by length: one string each, shared by all services.
HEALTHY_RUNS: Final = tuple(_LETTER["healthy"] * n for n in range(WINDOW + 1))
HEALTHY_WINDOW: Final = HEALTHY_RUNS[WINDOW]
_WEIGHTS: Final = tuple(0.8 + 0.4 * i / (WINDOW - 2) for i in range(WINDOW - 1))


def record(window: str, status: Status) -> str:
    """The window after one more observation (a steady one shared by all services)."""
    window = (window + _LETTER[status])[-WINDOW:]
    healthy = HEALTHY_RUNS[len(window)]
    return healthy if window == healthy else window


def differs(window: str, status: Status) -> bool:
    """Whether `status` differs from the window's last observation (or there is none)."""
    return not window or window[-1] != _LETTER[status]


def percent_change(window: str) -> float:
    """Weighted percent of state changes among the window's consecutive observations."""
    changes = len(window) - 1
    if changes < 1:
        return 0.0
    # The newest comparison always gets the newest weight.
    weights = _WEIGHTS[-changes:]
    total = sum(w for w, a, b in zip(weights, window, window[1:], strict=False) if a != b)
    return 100 * total / (WINDOW - 1)


def step(flapping: bool, percent: float, high: float, low: float) -> bool:
    """Whether the service flaps after an observation: start above `high`, stop below
    `low`; a `high` of 0 turns detection off."""
    if high <= 0:
        return False
    return percent >= low if flapping else percent > high


def judge_flapping(
    svc: Service, status: Status, raw: Status, reason: str, observed: bool, rules: Rules
) -> tuple[Status, str, str]:
    """Record one observation of `svc`, whose status is now `status` for `reason` (`raw`
    before hysteresis: flapping input flaps whatever the rise/fall counts), and update its
    flapping flag. Returns the status and reason to show (while flapping: the worst seen,
    held) and why the flag is what it is, for the event when it changed."""
    if observed or differs(svc.flap_window, raw):
        svc.flap_window = record(svc.flap_window, raw)
    pct = percent_change(svc.flap_window)
    svc.flapping = step(svc.flapping, pct, rules.flap_high_pct, rules.flap_low_pct)
    why = f"changed state in {pct:.0f}% of its last {WINDOW} observations " + (
        f"(flapping above {rules.flap_high_pct:g}%)"
        if svc.flapping
        else f"(stable below {rules.flap_low_pct:g}%)"
    )
    if svc.flapping:
        return worst(svc.status, status), f"flapping, held at its worst; now: {reason}", why
    return status, reason, why
