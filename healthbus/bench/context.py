"""What every scenario shares in one run: the private Redis, the size (quick or full),
progress on stderr, the figures measured so far (for ratios), and process helpers."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from healthbus.bench.report import Figure
from healthbus.embedded import RedisServer
from healthbus.errors import HealthBusError
from healthbus.keys import Keys

__all__ = ["Bench", "Child", "drop_namespace", "rss_bytes", "spawn", "wait_for"]


class Bench:
    """One `healthbus bench` run."""

    def __init__(
        self,
        redis: RedisServer,
        *,
        quick: bool,
        postgres_url: str,
        scale: float = 1.0,
        verbose: bool = True,
    ) -> None:
        self.redis = redis
        self.quick = quick
        #: Shrinks every size and duration (the suite's smoke test runs at 0.05).
        self.scale = scale
        self.postgres_url = postgres_url
        self.verbose = verbose
        self.started = time.monotonic()
        #: Figures by name, for the scenarios that report ratios to others.
        self.values: dict[str, float] = {}

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def size(self, quick: int, full: int, least: int = 1) -> int:
        return max(least, round((quick if self.quick else full) * self.scale))

    def seconds(self, quick: float, full: float, least: float = 0.5) -> float:
        return max(least, (quick if self.quick else full) * self.scale)

    def namespace(self, scenario: str) -> str:
        """A fresh namespace, so scenarios never see each other's keys."""
        return f"bench-{scenario}-{uuid.uuid4().hex[:6]}"

    def progress(self, message: str) -> None:
        if self.verbose:
            elapsed = time.monotonic() - self.started
            print(f"[{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)

    def record(self, figures: Sequence[Figure]) -> None:
        for f in figures:
            self.values[f.name] = f.value


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc (Linux)."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


class Child:
    """A `python -m …` child process; its stderr goes to a file, shown when it fails."""

    def __init__(self, args: Sequence[str], *, pipes: bool) -> None:
        self.args = list(args)
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stderr=self.log,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def line(self) -> bytes:
        """The next line it printed (pipes only)."""
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def finish(self, timeout: float = 60) -> bytes:
        """Close its stdin (its cue to stop) and return the rest of what it printed."""
        out, _ = self.process.communicate(timeout=timeout)
        return out or b""

    def check(self, what: str) -> None:
        if self.process.poll() is not None:
            self.log.seek(0)
            tail = self.log.read().decode(errors="replace")[-2000:]
            raise HealthBusError(
                f"{self.args[:3]} exited ({self.process.returncode}) {what}: {tail}"
            )

    def stop(self) -> None:
        process = self.process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        self.log.close()


@contextlib.contextmanager
def spawn(args: Sequence[str], *, pipes: bool = False) -> Iterator[Child]:
    """A child process that is terminated, then killed, when the block ends."""
    child = Child(args, pipes=pipes)
    try:
        yield child
    finally:
        child.stop()


def wait_for(done: Callable[[], object], child: Child, what: str, within: float = 60) -> None:
    """Poll `done` every 20 ms; fail if the child exits or `within` seconds pass."""
    deadline = time.monotonic() + within
    while not done():
        child.check(f"before {what}")
        if time.monotonic() > deadline:
            raise HealthBusError(f"no {what} within {within:g} s")
        time.sleep(0.02)


def drop_namespace(client: Any, keys: Keys) -> None:
    """Delete every key of a bench namespace (they are ours alone)."""
    names = list(client.scan_iter(match=keys.prefix + "*", count=1000))
    for i in range(0, len(names), 500):
        client.delete(*names[i : i + 500])
