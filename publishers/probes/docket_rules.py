"""A docket's Redis keys, and the pure rules that grade what the docket probe read from them.

Checked against pydocket 0.27 (its `docket.py`, `worker.py` and `lua/*.lua`); `{p}` is the
docket's name (`prefect-server` for a Prefect server, `prefect` for `prefect server services
start`):

- `{p}:runs:<key>` (hash per task key): `state` (scheduled, queued, running, completed,
  failed, cancelled), `when` (due time, Unix seconds), `started_at` (ISO), `worker`,
  `generation` (runs so far), `function`.
- `{p}:queue` (sorted set): keys of future tasks by due time; due ones not yet moved to the
  stream are overdue.
- `{p}:stream` (stream, group `docket-workers`): due tasks; the pending ones are running, the
  rest wait for a free slot.
- `{p}:workers`, `{p}:task-workers:<function>` (sorted sets): worker names by last heartbeat
  (Unix seconds), all and per registered task.
- `{p}:state:<key>` (pub/sub channel): JSON per state change; a failed run's carries `error`.

An automatic `Perpetual` task's key is its function's name. A perpetual run that raised leaves
no trace in Redis: its successor is scheduled before the failure is recorded, so the record is
dropped as superseded and only the `failed` event on `{p}:state:<key>` carries the message.
That is why the probe listens there (`live`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final, NamedTuple

import msgspec

from healthbus.schema import SelfStatus
from publishers.probes.result import (
    DetailValue,
    Finding,
    ProbeResult,
    conclude,
    grade,
    latency_finding,
    threshold_finding,
)

__all__ = [
    "DocketKeys",
    "DocketStats",
    "Ended",
    "LiveLog",
    "TaskRules",
    "judge_docket",
    "judge_task",
]

#: pydocket's consumer group on `{p}:stream` (`Docket.worker_group_name`).
WORKER_GROUP: Final = "docket-workers"
#: Run states after which a perpetual task is no longer scheduled.
ENDED: Final = ("completed", "failed", "cancelled")


class DocketKeys(msgspec.Struct, frozen=True):
    """pydocket's key names for one docket, built in one place."""

    prefix: str

    @property
    def queue(self) -> str:
        return f"{self.prefix}:queue"

    @property
    def stream(self) -> str:
        return f"{self.prefix}:stream"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def runs(self, key: str) -> str:
        return f"{self.prefix}:runs:{key}"

    def task_workers(self, function: str) -> str:
        return f"{self.prefix}:task-workers:{function}"

    def state(self, key: str) -> str:
        return f"{self.prefix}:state:{key}"


class Ended(NamedTuple):
    """How a task's last run ended, from its `failed`/`completed` event."""

    state: str
    error: str | None
    duration_s: float | None


class _StateEvent(msgspec.Struct):
    type: str = ""
    key: str = ""
    state: str = ""
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None


_decode_event = msgspec.json.Decoder(_StateEvent).decode


class LiveLog:
    """What the `{p}:state:<key>` channels said, per task key, while the probe listened: the
    start of the current run and how the last one ended."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, Ended] = {}

    def record(self, payload: bytes | str) -> None:
        """Fold one published event in; anything unreadable is ignored."""
        try:
            event = _decode_event(payload)
        except msgspec.DecodeError:
            return
        if event.type != "state" or not event.key:
            return
        if event.state == "running" and event.started_at:
            started = _timestamp(event.started_at)
            if started is not None:
                self.started[event.key] = started
        elif event.state in ("completed", "failed"):
            started = self.started.pop(event.key, None)
            ended = _timestamp(event.completed_at) if event.completed_at else None
            took = ended - started if ended is not None and started is not None else None
            self.ended[event.key] = Ended(event.state, event.error, took)


class TaskRules(NamedTuple):
    """How late (in multiples of its period) a task may be before it is degraded or in error."""

    degraded_after: float
    error_after: float


class DocketStats(NamedTuple):
    """One check's reading of a docket. Times are Unix seconds by the Redis server's clock."""

    now: float
    stream_length: int
    #: Stream entries delivered to a worker and not yet acknowledged: running tasks.
    pending: int
    queue_length: int
    #: Queue entries already due (`ZCOUNT {p}:queue -inf now`).
    overdue: int
    workers_alive: int
    last_worker_seen: float | None


def judge_docket(
    stats: DocketStats,
    ping_ms: float,
    *,
    latency: tuple[float | None, float | None],
    workers_min: int,
    waiting: tuple[int | None, int | None],
    overdue: tuple[int | None, int | None],
) -> ProbeResult:
    """The docket as a whole: its workers alive, tasks waiting for a slot, tasks overdue."""
    waiting_now = max(stats.stream_length - stats.pending, 0)
    details: dict[str, DetailValue] = {
        "workers": stats.workers_alive,
        "waiting": waiting_now,
        "running": stats.pending,
        "overdue": stats.overdue,
        "scheduled": max(stats.queue_length - stats.overdue, 0),
    }
    findings: list[Finding | None] = [
        latency_finding(ping_ms, *latency),
        threshold_finding("tasks waiting for a worker", waiting_now, *waiting),
        threshold_finding("tasks overdue in the queue", stats.overdue, *overdue),
    ]
    if stats.workers_alive < workers_min:
        seen = (
            f"; the last heartbeat was {stats.now - stats.last_worker_seen:.0f} s ago"
            if stats.last_worker_seen is not None
            else "; none is registered (all stopped, or none started)"
        )
        findings.append(
            Finding(
                "error",
                f"{stats.workers_alive} live worker(s), at least {workers_min} expected{seen}",
            )
        )
    return conclude(findings, duration_ms=ping_ms, details=details)


def judge_task(
    key: str,
    every: float,
    run: Mapping[str, str],
    *,
    now: float,
    rules: TaskRules,
    able: int | None,
    ended: Ended | None,
) -> ProbeResult:
    """One perpetual task from its runs hash (`run`, empty when absent), the live workers
    that registered it (`able`, None when unknown), and how its last run ended (live mode)."""
    details: dict[str, DetailValue] = {"task": key, "every_s": every}
    findings: list[Finding | None] = []
    hint = None
    state = run.get("state")
    details["state"] = state
    details["runs"] = _int(run.get("generation"))
    if not run:
        findings.append(
            Finding("error", "not scheduled: no runs record; is a worker with this task running?")
        )
    elif state in ("scheduled", "queued"):
        due = _float(run.get("when"))
        if due is not None:
            late = max(now - due, 0.0)
            details["late_s"] = round(late, 3)
            waiting = _late(f"{state}, due {late:.1f} s ago", late, every, rules)
            findings.append(waiting)
            if waiting is not None:
                hint = "the docket's workers may all be busy (raise their concurrency) or gone"
    elif state == "running":
        started = _timestamp(run.get("started_at"))
        details["worker"] = run.get("worker")
        if started is not None:
            running = max(now - started, 0.0)
            details["running_s"] = round(running, 3)
            findings.append(_late(f"running for {running:.1f} s", running, every, rules))
    elif state in ENDED:
        why = f": {run['error']}" if run.get("error") else ""
        findings.append(Finding("error", f"not rescheduled: its last run ended {state}{why}"))
    if able is not None:
        details["workers"] = able
        if able == 0:
            function = run.get("function", key)
            findings.append(Finding("error", f"no live worker has {function} registered"))
    duration_ms = None
    if ended is not None:
        details["last_run"] = ended.state
        if ended.duration_s is not None:
            duration_ms = round(ended.duration_s * 1000, 2)
        if ended.state == "failed":
            findings.append(Finding("error", f"last run failed: {ended.error or 'no message'}"))
    return conclude(findings, duration_ms=duration_ms, details=details, hint=hint)


def _late(what: str, seconds: float, every: float, rules: TaskRules) -> Finding | None:
    status: SelfStatus = grade(seconds, rules.degraded_after * every, rules.error_after * every)
    if status == "healthy":
        return None
    factor = rules.error_after if status == "error" else rules.degraded_after
    return Finding(
        status, f"{what}; it runs every {every:g} s ({status} past {factor:g} times that)"
    )


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _timestamp(value: str | None) -> float | None:
    """An ISO time as Unix seconds (pydocket writes them with their UTC offset)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
