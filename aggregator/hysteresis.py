"""Hysteresis (HAProxy's rise/fall): a heartbeat's verdict counts only once repeated.

A status worsens after `fall` consecutive heartbeats judged worse than the held status,
and improves after `rise` consecutive ones judged better; anything else resets the count.
The first heartbeat of an instance is taken as it is. Only what heartbeats say is
counted: silence (the age rule), goodbyes and broken publishers act at once, since no
heartbeat is there to count. With rise = fall = 1 (the default) every verdict counts at
once. Pure: verdicts in, the held verdict out.
"""

from __future__ import annotations

import msgspec

from healthbus.schema import STATUS_ORDER, Status

__all__ = ["Held", "observe"]


class Held(msgspec.Struct, kw_only=True, gc=False):
    """The verdict an instance holds, and how many heartbeats in a row disagreed with it."""

    status: Status
    reason: str
    #: Consecutive heartbeats judged better (> 0) or worse (< 0) than `status`.
    streak: int = 0


def observe(held: Held | None, status: Status, reason: str, rise: int, fall: int) -> Held:
    """The held verdict after one more heartbeat judged `status` for `reason`."""
    if held is None or status == held.status:
        return Held(status=status, reason=reason)
    worse = STATUS_ORDER[status] > STATUS_ORDER[held.status]
    streak = held.streak if (held.streak < 0) == worse and held.streak else 0
    streak += -1 if worse else 1
    if abs(streak) >= (fall if worse else rise):
        return Held(status=status, reason=reason)
    return Held(status=held.status, reason=held.reason, streak=streak)
