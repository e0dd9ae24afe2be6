"""A message consumer's counters, and the rule for when it looks stuck. Pure: no clock, no I/O.

`ConsumerReporter` (reporter.py) feeds this from the consumer's threads or tasks and asks it
for a report on its own cadence. Reporting on a timer would make a hung consumer look
healthy forever, so the tally answers None (say nothing) when the consumer is stuck: a batch
has run longer than `stall_after_s`, or work waits in the queue and no batch has ended for
that long. The silence then ages the service to degraded and error like any missed beat.
"""

from __future__ import annotations

import itertools
from typing import Final

import msgspec

from healthbus.schema import Details

__all__ = ["ConsumerReport", "ConsumerTally"]

#: At most this many batches are tracked as running; more cannot make it look more stuck.
_MAX_IN_FLIGHT: Final = 10_000


class ConsumerReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one consumer heartbeat says (the status rules read `details`)."""

    details: Details
    duration_ms: float | None
    error: str | None


class ConsumerTally:
    """Counts batches; times are seconds on one monotonic clock, passed in by the caller."""

    def __init__(self, now: float, *, stall_after_s: float, capacity: int | None = None) -> None:
        self.stall_after_s = stall_after_s
        self.capacity = capacity
        self.processed = 0
        self.failed = 0
        self.consecutive_failures = 0
        self.last_duration_ms: float | None = None
        self.last_error: str | None = None
        #: When a batch last ended (or the tally began): progress, as the stall rule sees it.
        self.last_progress = now
        self._running: dict[int, float] = {}
        self._tokens = itertools.count()

    def begin(self, now: float) -> int:
        """A batch starts; returns the token to pass to `end`."""
        token = next(self._tokens)
        if len(self._running) < _MAX_IN_FLIGHT:
            self._running[token] = now
        return token

    def end(
        self,
        token: int,
        now: float,
        *,
        processed: int = 0,
        failed: int = 0,
        error: str | None = None,
    ) -> None:
        """The batch `token` ended: `processed` messages went through, `failed` did not."""
        started = self._running.pop(token, None)
        self.record(
            now,
            processed=processed,
            failed=failed,
            duration_s=None if started is None else now - started,
            error=error,
        )

    def record(
        self,
        now: float,
        *,
        processed: int = 0,
        failed: int = 0,
        duration_s: float | None = None,
        error: str | None = None,
    ) -> None:
        """A batch ended. One with any failure (or an error) extends the failure streak;
        one without resets it."""
        self.processed += max(0, processed)
        self.failed += max(0, failed)
        if failed > 0 or error is not None:
            self.consecutive_failures += 1
            self.last_error = error
        else:
            self.consecutive_failures = 0
            self.last_error = None
        if duration_s is not None:
            self.last_duration_ms = max(0.0, duration_s) * 1000.0
        self.last_progress = now

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def stuck(self, now: float, depth: int | None) -> str | None:
        """Why the consumer looks stuck at `now` with `depth` messages waiting, or None."""
        if self._running:
            oldest = now - min(self._running.values())
            if oldest > self.stall_after_s:
                return f"a batch has been running for {oldest:.1f} s"
        elif depth and now - self.last_progress > self.stall_after_s:
            idle = now - self.last_progress
            return f"{depth} message(s) waiting and no batch ended for {idle:.1f} s"
        return None

    def report(self, now: float, depth: int | None) -> ConsumerReport | None:
        """The heartbeat to send now, or None while the consumer looks stuck."""
        if self.stuck(now, depth) is not None:
            return None
        details: Details = {
            "consecutive_failures": self.consecutive_failures,
            "processed": self.processed,
            "failed": self.failed,
            "in_flight": len(self._running),
        }
        if depth is not None:
            details["queue_depth"] = depth
        if self.capacity is not None:
            details["queue_capacity"] = self.capacity
        return ConsumerReport(
            details=details, duration_ms=self.last_duration_ms, error=self.last_error
        )
