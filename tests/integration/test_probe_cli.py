"""`healthbus probe` and `healthbus serve --probes`, run as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import redis

from healthbus.cli import main
from healthbus.config import Config
from healthbus.embedded import free_port
from healthbus.schema import Heartbeat, ServiceView
from tests.probe_support import silent_port
from tests.support import wait_until_sync


def tcp_probe(name: str, port: int, interval: float = 30) -> str:
    return (
        f'[[probe]]\nname = "{name}"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
        f"interval = {interval}\ntimeout = {min(interval, 3)}\n"
    )


def test_once_checks_each_probe_prints_and_fails_unless_all_healthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "probes.toml"
    with silent_port() as port:
        file.write_text(tcp_probe("mail", port))
        assert main(["probe", "--probes", str(file), "--once"]) == 0
        file.write_text(tcp_probe("mail", port) + tcp_probe("gone", free_port()))
        assert main(["probe", "--probes", str(file), "--once"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2].split()[:3] == ["mail", "tcp", "healthy"]
    assert out[-1].split()[:3] == ["gone", "tcp", "error"]
    assert "ConnectionRefusedError" in out[-1]


def test_probes_may_live_in_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "healthbus.toml"
    with silent_port() as port:
        file.write_text('[healthbus]\nnamespace = "probes"\n\n' + tcp_probe("mail", port))
        assert main(["probe", "--config", str(file), "--once"]) == 0
    assert "mail" in capsys.readouterr().out


def test_a_typo_is_rejected_with_file_line_key_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "probes.toml"
    file.write_text(tcp_probe("mail", 25).replace("interval", "intervall"))
    assert main(["probe", "--probes", str(file)]) == 1
    err = capsys.readouterr().err
    assert f"{file}:6: probe 'mail': intervall: unknown key `intervall`" in err
    assert "did you mean `interval`?" in err
    assert main(["serve", "--probes", str(file), "--port", str(free_port())]) == 1


def test_probe_without_a_file_says_how_to_give_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe"]) == 1
    assert "pass --probes probes.toml" in capsys.readouterr().err


def run_until(command: list[str], ready: Callable[[], object]) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "healthbus.cli", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )  # fmt: skip
    try:
        wait_until_sync(lambda: ready() or process.poll() is not None, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.slow
def test_probe_publishes_until_stopped_then_says_goodbye(config: Config, tmp_path: Path) -> None:
    assert config.redis_url
    client = redis.Redis.from_url(config.redis_url)
    file = tmp_path / "probes.toml"

    def beats() -> list[Heartbeat]:
        entries = client.xrange(config.keys.heartbeats)
        return [msgspec.json.decode(f[b"m"], type=Heartbeat) for _, f in entries]

    with silent_port() as port:
        file.write_text(tcp_probe("mail", port, interval=0.2))
        done = run_until(
            ["probe", "--probes", str(file), "--redis-url", config.redis_url,
             "--namespace", config.namespace],
            lambda: len(beats()) >= 2,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, *_, last = beats()
    assert (first.service, first.kind, first.status) == ("mail", "probe", "healthy")
    assert last.goodbye


@pytest.mark.slow
def test_serve_runs_the_configured_probes(config: Config, tmp_path: Path) -> None:
    assert config.redis_url
    client = redis.Redis.from_url(config.redis_url)
    file = tmp_path / "probes.toml"
    with silent_port() as port:
        file.write_text(tcp_probe("mail", port, interval=0.5))
        done = run_until(
            ["serve", "--probes", str(file), "--port", str(free_port()),
             "--redis-url", config.redis_url, "--namespace", config.namespace],
            lambda: client.hget(config.keys.snapshot, "mail"),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    raw = client.hget(config.keys.snapshot, "mail")
    assert raw is not None
    view = msgspec.json.decode(raw, type=ServiceView)
    assert view.kind == "probe" and view.details and view.details["type"] == "tcp"
