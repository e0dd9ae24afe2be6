"""The Redis URL picks the topology: one server, a Cluster, or a master named by Sentinel."""

from __future__ import annotations

import pytest

from healthbus.config import Config
from healthbus.connection import Topology, parse_url, redact_url
from healthbus.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", Topology("server", "redis://localhost:6379/0")),
        ("unix:///run/redis.sock", Topology("server", "unix:///run/redis.sock")),
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2",
            Topology(
                "cluster",
                "redis+cluster://10.0.0.1:7000,10.0.0.2",
                (("10.0.0.1", 7000), ("10.0.0.2", 6379)),
            ),
        ),
        (
            "rediss+cluster://:s%40cret@[::1]:7000/0",
            Topology(
                "cluster",
                "rediss+cluster://:s%40cret@[::1]:7000/0",
                (("::1", 7000),),
                password="s@cret",
                ssl=True,
            ),
        ),
        (
            "redis+sentinel://app:pw@s1,s2:26380/mymaster/2",
            Topology(
                "sentinel",
                "redis+sentinel://app:pw@s1,s2:26380/mymaster/2",
                (("s1", 26379), ("s2", 26380)),
                master="mymaster",
                db=2,
                username="app",
                password="pw",
            ),
        ),
    ],
)
def test_urls_name_their_topology(url: str, expected: Topology) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://localhost", "not a Redis URL"),
        ("redis+sharded://h:1", "not a Redis URL"),
        ("redis://h:port/0", "invalid Redis URL"),
        ("unix+cluster:///x", "not supported"),
        ("redis+cluster://h:1/3", "database 0 only"),
        ("redis+cluster://h:1?timeout=3", "no query options"),
        ("redis+sentinel://h:26379", "name the master"),
        ("redis+sentinel://h:26379/m/x", "db 'x' is not a number"),
        ("redis+sentinel://:pw@/m", "host is missing"),
    ],
)
def test_bad_urls_say_what_a_good_one_looks_like(url: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as caught:
        parse_url(url)
    assert "pw@" not in str(caught.value)


def test_config_accepts_cluster_and_sentinel_urls() -> None:
    for url in ("redis+cluster://h:7000", "redis+sentinel://h/mymaster"):
        assert Config(redis_url=url).redis_url == url
    with pytest.raises(ConfigError):
        Config(redis_url="redis+cluster://h:7000/1")


def test_passwords_are_redacted_from_multi_host_urls() -> None:
    assert redact_url("redis+sentinel://u:pw@a:1,b:2/m") == "redis+sentinel://u:***@a:1,b:2/m"


def test_redact_url_masks_a_lone_userinfo_and_keeps_plain_urls() -> None:
    assert redact_url("redis://secret@h:1/0") == "redis://***@h:1/0"
    assert redact_url("redis://:pw@h") == "redis://:***@h"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
