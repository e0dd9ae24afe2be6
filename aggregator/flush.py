"""The 1-second flush, spread over parts with reads in between.

Rendering and writing every fresh service's view and row at once took 13-28 ms at 1 000
services, and a status change arriving meanwhile waited for all of it (the latency tail).
A flush now takes a sorted snapshot of what is owed when it starts and commits it a share
at a time; a status change waits for one share at most. Once every share is committed,
every row is its service's state at the flush's start or later: that start becomes the
replay position (persist.Replay).
"""

from __future__ import annotations

import math
from typing import Final

from aggregator.commit import MAX_SERVICES
from aggregator.persist import Replay
from aggregator.state import FoldState

__all__ = ["Flush"]

#: A flush is spread over about this many reads.
ROUNDS: Final = 16
#: ... in parts of at least this many services (a commit costs a round trip).
PART_MIN: Final = 64


class Flush:
    """One flush in progress: the services it still owes, in parts, and the replay
    position it establishes once done."""

    def __init__(self, state: FoldState, replay: Replay) -> None:
        pending = state.pending
        self.names = sorted(pending.state | pending.deferred | pending.fresh, reverse=True)
        self.replay = replay
        self.part = min(MAX_SERVICES, max(PART_MIN, math.ceil(len(self.names) / (2 * ROUNDS))))
        self.per_round = max(1, math.ceil(len(self.names) / self.part / ROUNDS))

    def __bool__(self) -> bool:
        return bool(self.names)

    def take(self, state: FoldState) -> set[str]:
        """The next part: names still tracked (a service removed since is done with)."""
        names = self.names
        out: set[str] = set()
        while names and len(out) < self.part:
            name = names.pop()
            if name in state.services:
                out.add(name)
        return out
