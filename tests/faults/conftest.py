"""Fixtures of the fault suite: `healthbus` processes to stop and kill, readings of a
process's memory and descriptors from /proc, and `figures`, which records what a fault test
measured (printed, and written to test-artifacts/faults/ for RELIABILITY.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from healthbus.config import Config
from healthbus.embedded import free_port
from tests.support import stop_process, wait_until_sync

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "faults"


class Processes:
    """`healthbus <verb>` processes of one test, each logging to a file of its own; all are
    stopped (SIGCONT, then SIGTERM, then SIGKILL) when the test ends."""

    def __init__(self, config: Config, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, verb: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        assert self.config.redis_url
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("HEALTHBUS_", "_HEALTH"))}
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "healthbus.cli", verb, "--redis-url", self.config.redis_url,
                 "--namespace", self.config.namespace, *args],
                env={**clean, "HEALTHBUS_LOG_LEVEL": "info", **(env or {})},
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        self.started.append(process)
        return process

    def web(self, name: str = "web", env: dict[str, str] | None = None) -> tuple[str, int]:
        """`healthbus web` on a free port, answering; returns its base URL and pid."""
        port = free_port()
        process = self.start(name, "web", "--port", str(port), env=env)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"healthbus web exited: {self.log(name)[-2000:]}")
            try:
                return httpx.get(url + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until_sync(up, timeout=30, interval=0.1)
        return url, process.pid

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a stopped one must hear SIGTERM
            stop_process(process, timeout=10)


@pytest.fixture
def processes(config: Config, tmp_path: Path) -> Iterator[Processes]:
    group = Processes(config, tmp_path)
    try:
        yield group
    finally:
        group.close()


def theirs(item: Any) -> bool:
    """A service (name, view or transition) of the fleet, not the bus's own (`healthbus.*`,
    which reports the bus's troubles: after an outage it should say so)."""
    if isinstance(item, dict):
        item = item.get("service") or item.get("name") or ""
    return not str(item).startswith(("healthbus.", "_"))


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Figures(dict[str, Any]):
    """What a fault test measured; RELIABILITY.md quotes these."""


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    found = Figures()
    yield found
    if found:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = request.node.name.replace("/", "_")
        text = json.dumps(found, indent=2, sort_keys=True)
        (ARTIFACTS / f"{name}.json").write_text(text + "\n")
        print(f"\n{request.node.nodeid}: {text}")
