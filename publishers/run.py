"""`healthbus run -- CMD …`: a cron job or script reported as a start and a finish heartbeat.

The start (`phase: start`) arms the aggregator's deadline (`timeout_s`, else the interval) by
which the finish must come, so a hung job is noticed while it hangs. The finish carries the
exit code, the duration and, when the command failed, the tail of its stderr (scrubbed of
credentials) as the error. Stdout and stdin are the command's own; stderr still reaches the
terminal or log as it is written. The wrapper exits with the command's code (128 + N when a
signal N ended it), forwards SIGTERM and SIGHUP to it, and leaves Ctrl-C to reach it directly.

Heartbeats go through a buffered `Publisher`, so a Redis that is down never delays or fails the
job: the finish is flushed for at most `FLUSH_TIMEOUT_S` after the command ends, and the
instance (the host, or `HEALTHBUS_INSTANCE`) says no goodbye, since the job is due again.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import IO, Any, Final

from healthbus.config import Config
from healthbus.errors import ConfigError
from healthbus.schema import ERROR_MAX_BYTES
from publishers.default import make_publisher
from publishers.publisher import Publisher, check_names, default_host
from publishers.scrub import scrub

__all__ = [
    "DEFAULT_INTERVAL_S",
    "StderrTail",
    "default_service",
    "describe_exit",
    "exit_code",
    "failure_text",
    "run_command",
    "run_job",
]

#: A job that does not say how often it runs is taken to run daily.
DEFAULT_INTERVAL_S: Final = 86_400.0
#: How long the wrapper may wait, after the command ended, for the finish to reach Redis.
FLUSH_TIMEOUT_S: Final = 2.0
#: Bytes of stderr kept for the error text (only the last lines that fit 1 KiB are sent).
STDERR_KEEP_BYTES: Final = 8192
#: Signals passed on to the command; SIGINT from a terminal reaches it directly.
FORWARDED_SIGNALS: Final = (signal.SIGTERM, signal.SIGHUP)
#: Any length: what matters is that Popen.wait with a timeout naps rather than blocks.
WAIT_S: Final = 60.0
_SEPARATOR: Final = " | "
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")


class StderrTail:
    """The last `limit` bytes of a stream; a line cut at the front is dropped when read."""

    def __init__(self, limit: int = STDERR_KEEP_BYTES) -> None:
        self.limit = limit
        self.cut = False
        self._data = bytearray()

    def add(self, chunk: bytes) -> None:
        self._data += chunk
        excess = len(self._data) - self.limit
        if excess > 0:
            del self._data[:excess]
            self.cut = True

    def text(self) -> str:
        data = bytes(self._data)
        if self.cut:  # the first line is partial: it could be half of a secret the scrub misses
            data = data.partition(b"\n")[2]
        return data.decode("utf-8", "replace")


def exit_code(returncode: int) -> int:
    """The shell's exit status for a child's `returncode` (a signal N gives 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name} (exit code {exit_code(returncode)})"
    return f"exit code {returncode}"


def failure_text(returncode: int, stderr: str) -> str:
    """The error of a failed run: how it ended, then the last stderr lines that fit 1 KiB."""
    head = describe_exit(returncode)
    budget = ERROR_MAX_BYTES - len(head.encode()) - 2
    lines = [line.strip() for line in scrub(stderr).splitlines() if line.strip()]
    picked: list[str] = []
    used = 0
    for line in reversed(lines):
        size = len(line.encode()) + len(_SEPARATOR)
        if used + size > budget:
            if not picked:  # one long last line: keep its end
                picked.append("…" + line.encode()[-(budget - 3) :].decode("utf-8", "ignore"))
            break
        picked.append(line)
        used += size
    return f"{head}: {_SEPARATOR.join(reversed(picked))}" if picked else head


def default_service(argv: Sequence[str]) -> str:
    """A service name from the command: its program's base name, made to fit the rules."""
    program = os.path.basename(argv[0]) if argv else ""
    return _INVALID_NAME_CHARS.sub("-", program)[:128] or "job"


def run_job(
    config: Config,
    argv: Sequence[str],
    *,
    service: str | None = None,
    interval_s: float | None = None,
    timeout_s: float | None = None,
) -> int:
    """`healthbus run`: run `argv` reported as `service` (default: the program's name) every
    `interval_s` (default: daily), and return the exit status."""
    if not argv:
        raise ConfigError("nothing to run: give the command after `--`, e.g. `-- backup.sh`")
    service = service or default_service(argv)
    interval_s = interval_s or DEFAULT_INTERVAL_S
    instance = config.instance or default_host()
    check_names(service, instance, interval_s)
    publisher = make_publisher(config, instance=instance)
    try:
        return run_command(
            argv, publisher, service=service, interval_s=interval_s, timeout_s=timeout_s
        )
    finally:
        publisher.close(FLUSH_TIMEOUT_S, goodbye=False)
        stats = publisher.stats
        if stats.dropped or stats.queued:
            print(
                f"healthbus: the heartbeats of {service!r} did not reach Redis: {stats.last_error}",
                file=sys.stderr,
            )


def run_command(
    argv: Sequence[str],
    publisher: Publisher,
    *,
    service: str,
    interval_s: float,
    timeout_s: float | None = None,
) -> int:
    """Publish the start, run `argv` to its end, publish the finish; return the exit status."""
    publisher.publish(service, interval_s=interval_s, phase="start", timeout_s=timeout_s)
    started = time.monotonic()
    tail = StderrTail()
    with _Forwarder() as forwarder:
        try:
            proc = subprocess.Popen(list(argv), stderr=subprocess.PIPE)
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            reason = f"cannot run {argv[0]!r}: {exc.strerror or exc} (exit code {code})"
            print(f"healthbus: {reason}", file=sys.stderr)
            _finish(publisher, service, interval_s, started, code, reason)
            return code
        assert proc.stderr is not None
        pump = threading.Thread(
            target=_pump, args=(proc.stderr, tail), name="healthbus-run-stderr", daemon=True
        )
        pump.start()
        forwarder.attach(proc)
        returncode = _wait(proc)
    pump.join(timeout=1.0)  # a daemon the command left behind may hold the pipe open
    code = exit_code(returncode)
    error = None if returncode == 0 else failure_text(returncode, tail.text())
    _finish(publisher, service, interval_s, started, code, error)
    return code


def _wait(proc: subprocess.Popen[bytes]) -> int:
    """`proc.wait()` in naps (Popen's own, 50 ms at most, with a timeout), not one blocking
    waitpid: the kernel may hand a SIGTERM to another thread of this process, and then its
    handler, which passes it on, runs only once the main thread runs Python again. Blocked
    in waitpid, that was when the command ended by itself: the signal came too late."""
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=WAIT_S)


def _finish(
    publisher: Publisher,
    service: str,
    interval_s: float,
    started: float,
    code: int,
    error: str | None,
) -> None:
    publisher.publish(
        service,
        interval_s=interval_s,
        ok=error is None,
        phase="end",
        duration_ms=(time.monotonic() - started) * 1000.0,
        error=error,
        details={"exit_code": code},
    )


def _pump(source: IO[bytes], tail: StderrTail) -> None:
    """Copy the command's stderr to ours as it comes, keeping its tail."""
    sink = getattr(sys.stderr, "buffer", None)
    fd = source.fileno()
    try:
        while chunk := os.read(fd, 65536):
            tail.add(chunk)
            if sink is not None:
                with contextlib.suppress(OSError, ValueError):  # our stderr closed: keep draining
                    sink.write(chunk)
                    sink.flush()
    finally:
        source.close()


class _Forwarder:
    """While the command runs: SIGTERM and SIGHUP are passed on to it (one that arrives before
    it started is passed on once it has), and Ctrl-C reaches it alone, from the terminal.

    Handlers, not SIG_IGN, so the command starts with default dispositions (an ignored signal
    would be inherited across exec). Only the main thread may set handlers; elsewhere (tests,
    embedding) signals keep their current handling.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending: list[int] = []
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            return
        if self._proc is None:
            self._pending.append(signum)
        else:
            self._proc.send_signal(signum)

    def attach(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        for signum in self._pending:
            proc.send_signal(signum)

    def __enter__(self) -> _Forwarder:
        if threading.current_thread() is threading.main_thread():
            for sig in (*FORWARDED_SIGNALS, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
