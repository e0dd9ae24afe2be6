"""The `healthbus` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from typing import Any

import httpx
import msgspec
import pytest
import redis

from healthbus.cli import _local_or_embedded, main
from healthbus.config import Config
from healthbus.embedded import free_port
from healthbus.schema import Heartbeat
from tests.support import wait_until_sync


def cli(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    assert config.redis_url
    return subprocess.run(
        [sys.executable, "-m", "healthbus.cli", *args[:1], "--redis-url", config.redis_url,
         "--namespace", config.namespace, *args[1:]],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_publish_writes_one_valid_heartbeat(config: Config) -> None:
    done = cli(config, "publish", "--service", "backup", "--interval", "86400", "--fail",
               "--error", "disk full", "--detail", "files=12", "--detail", "target=s3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    entry_id = done.stdout.strip()
    assert config.redis_url
    client = redis.Redis.from_url(config.redis_url)
    ((got_id, fields),) = client.xrange(config.keys.heartbeats)
    hb = msgspec.json.decode(fields[b"m"], type=Heartbeat)
    assert got_id.decode() == entry_id
    assert (hb.service, hb.ok, hb.error, hb.details) == (
        "backup",
        False,
        "disk full",
        {"files": 12, "target": "s3"},
    )


def test_publish_rejects_a_bad_name_with_a_clear_error(config: Config) -> None:
    done = cli(config, "publish", "--service", "bad name", "--interval", "5")
    assert done.returncode == 1
    assert "service" in done.stderr and "Traceback" not in done.stderr


def test_unreachable_redis_is_one_line_not_a_traceback() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = subprocess.run(
        [sys.executable, "-m", "healthbus.cli", "status", "--redis-url", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot reach Redis" in done.stderr and "Traceback" not in done.stderr


def test_schema_prints_every_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schemas = json.loads(capsys.readouterr().out)
    assert {"heartbeat", "transition", "update", "service", "meta"} <= set(schemas)


def test_bad_config_is_rejected_with_the_key(tmp_path: Any, capsys: Any) -> None:
    path = tmp_path / "healthbus.toml"
    path.write_text('[healthbus]\nredis_ulr = "redis://x"\n')
    assert main(["status", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "redis_ulr" in err and str(path) in err


def test_refuses_public_bind_without_token(config: Config) -> None:
    done = cli(config, "web", "--host", "0.0.0.0")
    assert done.returncode == 1 and "HEALTHBUS_TOKEN" in done.stderr


def test_serve_starts_an_embedded_redis_when_none_answers() -> None:
    with ExitStack() as stack:
        url = _local_or_embedded(stack, local=("127.0.0.1", free_port()))
        assert redis.Redis.from_url(url).ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url).ping()


@pytest.mark.slow
def test_serve_demo_end_to_end(config: Config) -> None:
    """`serve --demo`: demo services on /api/health and status, a clean exit on SIGTERM."""
    assert config.redis_url
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "healthbus.cli", "serve", "--demo", "--port", str(port),
         "--redis-url", config.redis_url, "--namespace", config.namespace],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ},
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/api/health"

        def services() -> Any:
            try:
                doc = httpx.get(url, timeout=2).json()
            except httpx.HTTPError:
                return None
            return doc if doc.get("total", 0) >= 5 else None

        doc = wait_until_sync(services, timeout=30)
        kinds = {k for k, rows in doc["services"].items() if rows}
        assert kinds == {"perpetual", "consumer", "probe"}
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        status = cli(config, "status")
        assert "schedule_deployments" in status.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    client = redis.Redis.from_url(config.redis_url)
    assert client.get(config.keys.leader) is None  # the lease was released
    last = client.xrevrange(config.keys.heartbeats, count=1)[0][1][b"m"]
    assert msgspec.json.decode(last, type=Heartbeat).goodbye
