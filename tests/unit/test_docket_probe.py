"""The docket probe's rules (pure): a perpetual task late, running long, unscheduled or failed;
the docket's workers and queues; what the state channel says; and its probes-file keys."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from healthbus.errors import ConfigError
from publishers.probes import parse_probes
from publishers.probes.docket_probe import DocketProbe
from publishers.probes.docket_rules import (
    DocketKeys,
    DocketStats,
    Ended,
    LiveLog,
    TaskRules,
    judge_docket,
    judge_task,
)

NOW = 1_000_000.0
RULES = TaskRules(degraded_after=2.0, error_after=5.0)


def task(run: dict[str, str], able: int | None = 1, ended: Ended | None = None) -> tuple[str, str]:
    result = judge_task(
        "schedule_deployments", 60.0, run, now=NOW, rules=RULES, able=able, ended=ended
    )
    return result.status, result.error or ""


@pytest.mark.parametrize(
    ("due_ago", "status"),
    [(-30.0, "healthy"), (119.0, "healthy"), (121.0, "degraded"), (301.0, "error")],
)
def test_a_waiting_task_is_judged_by_how_late_it_is_against_its_period(
    due_ago: float, status: str
) -> None:
    found, error = task({"state": "queued", "when": str(NOW - due_ago), "generation": "7"})
    assert found == status
    if status != "healthy":
        assert f"queued, due {due_ago:.1f} s ago; it runs every 60 s" in error


def test_a_long_run_degrades_then_errors() -> None:
    started = datetime.fromtimestamp(NOW - 200, UTC).isoformat()
    assert task({"state": "running", "when": "0", "started_at": started}) == (
        "degraded",
        "running for 200.0 s; it runs every 60 s (degraded past 2 times that)",
    )
    later = judge_task(
        "t",
        30.0,
        {"state": "running", "started_at": started},
        now=NOW,
        rules=RULES,
        able=1,
        ended=None,
    )
    assert later.status == "error" and later.details["running_s"] == 200.0


def test_a_task_nobody_will_run_is_in_error() -> None:
    assert task({})[1].startswith("not scheduled: no runs record")
    assert task({"state": "cancelled"}) == (
        "error",
        "not rescheduled: its last run ended cancelled",
    )
    status, error = task({"state": "scheduled", "when": str(NOW + 5)}, able=0)
    assert (status, error) == ("error", "no live worker has schedule_deployments registered")


def test_a_failed_last_run_is_an_error_with_its_message() -> None:
    failed = Ended("failed", "RuntimeError: postgres unreachable", 0.25)
    result = judge_task(
        "t",
        5.0,
        {"state": "scheduled", "when": str(NOW + 4)},
        now=NOW,
        rules=RULES,
        able=1,
        ended=failed,
    )
    assert result.status == "error" and not result.ok
    assert result.error == "last run failed: RuntimeError: postgres unreachable"
    assert result.duration_ms == 250.0 and result.details["last_run"] == "failed"


def test_the_live_log_keeps_how_each_task_last_ended() -> None:
    heard = LiveLog()
    # A perpetual run that raises: running, its successor scheduled, then the failure.
    heard.record(
        b'{"type":"state","key":"t","state":"running","started_at":"2026-01-01T00:00:00+00:00"}'
    )
    heard.record(
        b'{"type":"state","key":"t","state":"scheduled","when":"2026-01-01T00:00:05+00:00"}'
    )
    heard.record(
        b'{"type":"state","key":"t","state":"failed","completed_at":"2026-01-01T00:00:01.5+00:00",'
        b'"error":"RuntimeError: boom"}'
    )
    assert heard.ended["t"] == Ended("failed", "RuntimeError: boom", 1.5)
    heard.record(
        b'{"type":"state","key":"t","state":"completed","completed_at":"2026-01-01T00:00:09+00:00"}'
    )
    assert heard.ended["t"] == Ended("completed", None, None)
    for junk in (b"not json", b'{"type":"progress","key":"t"}', b"[]"):
        heard.record(junk)
    assert list(heard.ended) == ["t"]


def test_the_docket_needs_live_workers_and_moving_queues() -> None:
    stats = DocketStats(
        now=NOW,
        stream_length=1_500,
        pending=10,
        queue_length=20_000,
        overdue=12_000,
        workers_alive=0,
        last_worker_seen=NOW - 42,
    )
    result = judge_docket(
        stats,
        1.0,
        latency=(50.0, 500.0),
        workers_min=1,
        waiting=(1_000, 10_000),
        overdue=(1_000, 10_000),
    )
    assert result.status == "error"
    assert result.error == (
        "tasks overdue in the queue 12000 (error at 10000); "
        "0 live worker(s), at least 1 expected; the last heartbeat was 42 s ago; "
        "tasks waiting for a worker 1490 (degraded at 1000)"
    )
    assert result.details == {
        "workers": 0,
        "waiting": 1_490,
        "running": 10,
        "overdue": 12_000,
        "scheduled": 8_000,
    }


def test_keys_follow_pydocket() -> None:
    keys = DocketKeys("prefect-server")
    assert (keys.queue, keys.stream, keys.workers) == (
        "prefect-server:queue",
        "prefect-server:stream",
        "prefect-server:workers",
    )
    assert keys.runs("monitor_late_runs") == "prefect-server:runs:monitor_late_runs"
    assert keys.state("monitor_late_runs") == "prefect-server:state:monitor_late_runs"
    assert keys.task_workers("f") == "prefect-server:task-workers:f"


def test_the_probes_file_keys() -> None:
    [probe] = parse_probes(
        """
[[probe]]
name = "prefect-docket"
type = "docket"
url = "redis://cache:6379/0"
docket = "prefect-server"
[probe.tasks]
schedule_deployments = 60
monitor_late_runs = 5
""",
        "probes.toml",
        {},
    )
    assert isinstance(probe, DocketProbe) and probe.live
    assert probe.tasks == {"schedule_deployments": 60.0, "monitor_late_runs": 5.0}
    assert (probe.interval, probe.timeout, probe.degraded_after, probe.error_after) == (15, 3, 2, 5)
    with pytest.raises(ConfigError) as caught:
        parse_probes(
            """
[[probe]]
name = "d"
type = "docket"
url = "redis://cache"
degraded_after = 6
[probe.tasks]
"bad key" = 60
""",
            "probes.toml",
            {},
        )
    assert str(caught.value).splitlines()[1:] == [
        "probes.toml:6: probe 'd': degraded_after: degraded_after (6) must not be above "
        "error_after (5)",
        "probes.toml:7: probe 'd': tasks: task key 'bad key' is part of the service name "
        "d.bad key: rename the task to letters, digits and _ . : - only",
    ]
