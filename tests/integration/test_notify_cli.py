"""`healthbus notify` as a process: killed, restarted, its receiver down; and via `serve`."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from anyio.abc import Process

from aggregator import Aggregator
from healthbus.cli import main
from healthbus.config import Config
from healthbus.embedded import free_port
from tests.integration.test_notify import beat, received, settled
from tests.receiver import Receiver
from tests.support import wait_until

pytestmark = pytest.mark.anyio

FAST_ENV = {"HEALTHBUS_NOTIFY_RETRY_MAX_S": "0.3", "HEALTHBUS_NOTIFY_CLAIM_IDLE_S": "1"}


async def start(config: Config, *args: str) -> Process:
    assert config.redis_url
    command = [sys.executable, "-m", "healthbus.cli", *args[:1], "--redis-url",
               config.redis_url, "--namespace", config.namespace, *args[1:]]  # fmt: skip
    return await anyio.open_process(command, env={**os.environ, **FAST_ENV})


async def notify_groups(redis: aioredis.Redis, config: Config) -> list[dict[str, Any]]:
    if not await redis.exists(config.keys.transitions):
        return []
    groups = await redis.xinfo_groups(config.keys.transitions)
    return [g for g in groups if g["name"].startswith(b"notify.")]


async def said(process: Process, text: bytes, seen: bytearray) -> bool:
    """Whether the process has written `text` to stderr (what it wrote so far is `seen`)."""
    assert process.stderr is not None
    with anyio.move_on_after(0.5):
        seen += await process.stderr.receive()
    return text in seen


async def stop(process: Process, sig: int = signal.SIGTERM) -> bytes:
    process.send_signal(sig)
    await process.wait()
    assert process.stderr is not None
    out = bytearray()
    for _ in range(1000):
        try:
            out += await process.stderr.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            break
    return bytes(out)


@pytest.mark.slow
async def test_killed_and_restarted_it_sends_nothing_twice_and_waits_out_an_outage(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    with Receiver() as receiver:
        args = ("notify", "--url", receiver.url, "--group-wait", "0.2")
        first = await start(config, *args)
        await wait_until(lambda: notify_groups(redis, config), timeout=30)
        await beat(redis, config, "db", ok=False, error="connection refused")
        (alert,) = await wait_until(lambda: received(receiver, 1), timeout=30)
        await wait_until(lambda: settled(redis, config))
        await stop(first, signal.SIGKILL)

        receiver.stop()  # the destination goes down for a while
        second = await start(config, *args)
        await beat(redis, config, "db")
        seen = bytearray()
        await wait_until(lambda: said(second, b"failed", seen), timeout=30)
        receiver.start()
        _, resolve = await wait_until(lambda: received(receiver, 2), timeout=30)
        await wait_until(lambda: settled(redis, config))
        err = await stop(second)
    assert second.returncode == 0 and b"Traceback" not in seen + err, err
    assert b"Connection" in seen  # the reason, in the notifier's words and apprise's
    assert alert["title"] == "db is in error" and "connection refused" in alert["message"]
    assert resolve["title"].startswith("db recovered after")
    assert len(receiver.messages()) == 2


@pytest.mark.slow
async def test_serve_notifies_the_destinations_of_its_config_file(
    redis: aioredis.Redis, config: Config, tmp_path: Path
) -> None:
    with Receiver() as receiver:
        path = tmp_path / "healthbus.toml"
        path.write_text(
            "[healthbus]\nnotify_group_wait_s = 0.2\n"
            f'[[healthbus.notify]]\nurl = "{receiver.url}"\nstatuses = ["error"]\n'
        )
        serve = await start(config, "serve", "--config", str(path), "--port", str(free_port()))
        await wait_until(lambda: notify_groups(redis, config), timeout=30)
        await beat(redis, config, "db", ok=False, error="disk full")
        (alert,) = await wait_until(lambda: received(receiver, 1), timeout=30)
        await stop(serve)
    assert alert["title"] == "db is in error" and serve.returncode == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "no notification destination"),
        (("--url", "nosuchscheme://x"), "not a usable Apprise URL"),
        (("--status", "error"), "filter --url destinations"),
    ],
    ids=["no-url", "bad-url", "filter-without-url"],
)
def test_a_bad_destination_is_one_clear_line(
    args: Sequence[str], expected: str, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert config.redis_url
    assert main(["notify", "--redis-url", config.redis_url, *args]) == 1
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
