"""Goodbyes at interpreter exit and on SIGTERM, and a publisher that survives fork."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from healthbus.config import Config
from healthbus.keys import Keys
from healthbus.schema import Heartbeat, decode_heartbeat
from publishers import Publisher
from tests.support import wait_until_sync


def beats(config: Config) -> list[Heartbeat]:
    import redis

    assert config.redis_url
    client = redis.Redis.from_url(config.redis_url)
    try:
        entries = client.xrange(Keys(config.namespace).heartbeats)
    finally:
        client.close()
    return [decode_heartbeat(fields[b"m"]) for _, fields in entries]


def python(code: str, config: Config) -> subprocess.Popen[str]:
    assert config.redis_url
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), config.redis_url, config.namespace],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_interpreter_exit_says_goodbye(config: Config) -> None:
    proc = python(
        """
        import sys
        from publishers import Publisher
        publisher = Publisher(sys.argv[1], sys.argv[2])
        publisher.publish("exiting", interval_s=5)
        """,
        config,
    )
    assert proc.wait(timeout=30) == 0
    assert proc.stdout is not None
    proc.stdout.close()
    assert [(hb.service, hb.goodbye) for hb in beats(config)] == [
        ("exiting", False),
        ("exiting", True),
    ]


def test_sigterm_says_goodbye_then_terminates(config: Config) -> None:
    proc = python(
        """
        import sys, time
        from publishers import Publisher, install_signal_handlers
        publisher = Publisher(sys.argv[1], sys.argv[2])
        install_signal_handlers()
        publisher.publish("terminated", interval_s=5)
        print("ready", flush=True)
        time.sleep(60)
        """,
        config,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.stdout.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert [(hb.service, hb.goodbye) for hb in beats(config)] == [
        ("terminated", False),
        ("terminated", True),
    ]


def test_forked_child_gets_its_own_identity_and_thread(config: Config) -> None:
    assert config.redis_url
    publisher = Publisher.from_config(config)
    publisher.publish("parent", interval_s=5)
    wait_until_sync(lambda: publisher.stats.sent == 1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            publisher.publish("child", interval_s=5)
            publisher.close(timeout=5)
            code = 0 if publisher.stats.sent == 2 else 2  # its heartbeat and its goodbye
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    publisher.publish("parent", interval_s=5)
    publisher.close()
    by_service = {(hb.service, hb.goodbye): hb for hb in beats(config)}
    assert set(by_service) == {
        ("parent", False),
        ("parent", True),
        ("child", False),
        ("child", True),
    }
    child, parent = by_service[("child", False)], by_service[("parent", False)]
    assert child.instance == f"{parent.instance.rsplit(':', 1)[0]}:{pid}"  # type: ignore[union-attr]
    assert child.boot != parent.boot and child.n == 0
