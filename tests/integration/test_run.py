"""`healthbus run -- CMD`, run as a cron job would run it, against a real Redis and aggregator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.schema import Heartbeat, ServiceView, decode_heartbeat
from publishers.publisher import default_host
from tests.support import wait_until, wait_until_sync


def command(config: Config, *args: str) -> list[str]:
    assert config.redis_url
    return [sys.executable, "-m", "healthbus.cli", "run", "--redis-url", config.redis_url,
            "--namespace", config.namespace, *args]  # fmt: skip


def run(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(config, *args), capture_output=True, text=True, timeout=60, check=False
    )


def beats(config: Config) -> list[Heartbeat]:
    assert config.redis_url
    with redis.Redis.from_url(config.redis_url) as client:
        entries = client.xrange(config.keys.heartbeats)
    return [decode_heartbeat(fields[b"m"]) for _, fields in entries]


@pytest.mark.anyio
async def test_a_failing_command_turns_the_service_error_with_its_exit_code(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    done = run(config, "--", "false")
    assert done.returncode == 1, done.stderr

    async def view() -> ServiceView | None:
        raw = await redis.hget(config.keys.snapshot, "false")
        found = msgspec.json.decode(raw, type=ServiceView) if raw else None
        return found if found is not None and found.status == "error" else None

    found = await wait_until(view)
    assert "exit code 1" in found.reason
    start, end = beats(config)
    assert (start.phase, end.phase, end.ok, end.details) == (
        "start",
        "end",
        False,
        {"exit_code": 1},
    )
    assert start.instance == end.instance == default_host()  # one identity across runs
    assert not any(hb.goodbye for hb in beats(config))  # the job is due again


@pytest.mark.anyio
async def test_a_successful_run_is_healthy_and_its_output_passes_through(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    done = run(config, "--service", "backup", "--interval", "3600", "--timeout", "60",
               "--instance", "cron-a", "--", "sh", "-c", "echo out; echo progress >&2")  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "out\n")
    assert "progress" in done.stderr

    async def healthy() -> bool:
        raw = await redis.hget(config.keys.snapshot, "backup")
        return raw is not None and msgspec.json.decode(raw, type=ServiceView).status == "healthy"

    await wait_until(healthy)
    start, end = beats(config)
    assert (start.timeout_s, start.interval_s, start.instance) == (60, 3600, "cron-a")
    assert end.ok and end.error is None and end.details == {"exit_code": 0}
    assert end.duration_ms is not None and end.duration_ms > 0


def test_the_stderr_tail_is_scrubbed_and_the_exit_code_kept(config: Config) -> None:
    script = (
        "echo 'connect redis://app:hunter2@cache failed' >&2; echo 'password=s3cret' >&2; exit 3"
    )
    done = run(config, "--service", "etl", "--", "sh", "-c", script)
    assert done.returncode == 3
    assert "hunter2" in done.stderr  # the terminal sees the command's own output
    end = beats(config)[-1]
    assert end.error == "exit code 3: connect redis://app:***@cache failed | password=***"


@pytest.fixture
def slow_job(config: Config) -> Iterator[subprocess.Popen[str]]:
    """`healthbus run` of a 30-second command, once the command runs; killed if still there."""
    with subprocess.Popen(
        command(config, "--service", "slow", "--", "sh", "-c", "echo ready; exec sleep 30"),
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        yield proc
        if proc.poll() is None:
            proc.kill()


def test_sigterm_is_passed_on_and_reported(config: Config, slow_job: subprocess.Popen[str]) -> None:
    slow_job.send_signal(signal.SIGTERM)
    assert slow_job.wait(timeout=30) == 128 + signal.SIGTERM
    end = wait_until_sync(lambda: [hb for hb in beats(config) if hb.phase == "end"])[0]
    assert end.error == "killed by SIGTERM (exit code 143)"


def test_sigterm_taken_by_another_thread_is_passed_on(slow_job: subprocess.Popen[str]) -> None:
    """The kernel may hand a process's SIGTERM to any of its threads (here, by its thread id,
    to one that is not the main thread), while the main thread waits for the command."""
    proc = slow_job
    tasks = Path(f"/proc/{proc.pid}/task")

    def waiting() -> list[int]:
        """Other threads' ids, once the main thread sleeps outside a lock (in the wait)."""
        main = tasks / str(proc.pid)
        others = [int(t.name) for t in tasks.iterdir() if t.name != str(proc.pid)]
        state = (main / "stat").read_text().rsplit(")", 1)[1].split()[0]
        sleeping = state == "S" and "futex" not in (main / "wchan").read_text()
        return others if sleeping and len(others) >= 2 else []  # the sender and the pump

    os.kill(wait_until_sync(waiting)[0], signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM


def test_a_missing_command_exits_127_and_is_reported(config: Config) -> None:
    done = run(config, "--service", "gone", "--", "/nonexistent/backup.sh")
    assert done.returncode == 127
    assert "cannot run '/nonexistent/backup.sh'" in done.stderr
    end = beats(config)[-1]
    assert end.ok is False and end.error and "exit code 127" in end.error


def test_nothing_to_run_is_a_clear_error(config: Config) -> None:
    done = run(config, "--service", "x")
    assert done.returncode == 1 and "nothing to run" in done.stderr
    assert "Traceback" not in done.stderr
