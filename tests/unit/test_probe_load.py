"""The probes file: what it accepts, and the messages that name file, line, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthbus.errors import ConfigError
from publishers.probes import PROBE_TYPES, load_probes, parse_probes
from publishers.probes.base import ProbeSpec
from publishers.probes.http_probe import HttpProbe
from publishers.probes.postgres_probe import PostgresProbe
from publishers.probes.redis_probe import RedisProbe
from publishers.probes.tcp_probe import TcpProbe

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "probes.toml"
SECRETS = {
    "DATABASE_URL": "postgresql://app:pg-secret@db:5432/app",
    "REDIS_URL": "redis://:redis-secret@cache:6379/0",
    "STATUS_TOKEN": "tok-secret",
}


def problems(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_probes(text, "probes.toml", environ or {})
    return str(caught.value)


def test_the_worked_example_loads_with_its_secrets_from_the_environment() -> None:
    probes = load_probes(EXAMPLE, SECRETS)
    assert [p.type for p in probes] == ["postgres", "redis", "http", "http", "tcp"]
    pg, redis, api, provider, smtp = probes
    assert isinstance(pg, PostgresProbe) and pg.tables[0].rows_warning == 5_000_000
    assert isinstance(redis, RedisProbe) and redis.streams[0].length_error == 100_000
    assert isinstance(api, HttpProbe) and api.depends_on == ["postgres", "redis"]
    assert isinstance(provider, HttpProbe)
    assert provider.headers == {"Authorization": "Bearer tok-secret"}
    assert isinstance(smtp, TcpProbe) and smtp.interval == 60
    for probe in probes:  # secrets never show where a person or a log could see them
        assert "secret" not in repr(probe) + probe.target


def test_design_defaults_per_type() -> None:
    probes = parse_probes(
        """
[[probe]]
name = "db"
type = "postgres"
url = "postgresql://db/app"
[[probe]]
name = "cache"
type = "redis"
url = "redis://cache"
[[probe]]
name = "api"
type = "http"
url = "http://api/health"
[[probe]]
name = "vendor"
type = "http"
url = "https://vendor.example/health"
external = true
timeout = 20
""",
        "probes.toml",
        {},
    )
    numbers = [(p.interval, p.timeout, p.degraded_ms, p.error_ms) for p in probes]
    assert numbers == [
        (15, 5, 200, 1000),
        (15, 3, 50, 500),
        (30, 10, 500, 2000),
        (120, 20, 1000, 5000),  # external defaults, the given timeout kept
    ]


def test_a_typo_names_file_line_key_and_the_fix() -> None:
    text = '[[probe]]\nname = "db"\ntype = "tcp"\nhost = "db"\nport = 5432\nintervall = 15\n'
    message = problems(text)
    assert "probes.toml:6: probe 'db': intervall: unknown key `intervall`" in message
    assert "did you mean `interval`?" in message


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    text = """\
[[probe]]
name = "db"
type = "postgres"
url = "${PG_URL}"

[[probe]]
name = "cache"
type = "rediss"

[[probe]]
name = "q"
type = "redis"
url = "redis://localhost"
timeout = "3s"

[[probe]]
name = "s"
type = "redis"
url = "redis://localhost"
[[probe.streams]]
key = "a"
[[probe.streams]]
key = "b"
lenght_error = 5
"""
    lines = problems(text).splitlines()
    assert lines[0] == "4 problems in the probes file; nothing was started:"
    assert lines[1].startswith("probes.toml:4: probe 'db': url: environment variable PG_URL")
    assert (
        lines[2]
        == "probes.toml:8: probe 'cache': type: unknown type 'rediss': did you mean `redis`?"
    )
    assert lines[3].startswith("probes.toml:14: probe 'q': timeout: Expected `float`, got `str`")
    assert "e.g. `timeout = 5`" in lines[3]
    assert lines[4].startswith("probes.toml:24: probe 's': streams[1].lenght_error: unknown key")
    assert "did you mean `length_error`?" in lines[4]


def test_an_unknown_key_far_from_any_name_lists_the_known_keys() -> None:
    message = problems('[[probe]]\nname = "x"\ntype = "tcp"\nhost = "h"\nport = 1\nzzz = 1\n')
    assert "unknown key `zzz`; known keys of a tcp probe:" in message
    assert "host" in message and "port" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[probes]]\nname = "x"\n',
            "probes.toml:1: unknown table or key `probes`: did you mean `probe`?",
        ),
        ('[probe]\nname = "x"\n', "probes.toml:1: write [[probe]] (double brackets)"),
        (
            '[[probe]]\nname = "x"\n',
            "probes.toml:1: probe 'x': type: missing key `type`: one of http",
        ),
        ('[[probe]]\ntype = "tcp"\nport = 1\n', "probes.toml:1: [[probe]] at line 1: "),
        (
            '[[probe]]\nname = "x"\ntype = "tcp"\nhost = "h"\nport = 70000\n',
            "probes.toml:5: probe 'x': port: Expected `int` <= 65535",
        ),
        (
            '[[probe]]\nname = "x"\ntype = "http"\nurl = "ftp://x"\n',
            "probes.toml:4: probe 'x': url: Expected `str` matching regex",
        ),
        (
            '[[probe]]\nname = "x"\ntype = "http"\nurl = "http://x"\ntimeout = 60\n',
            "probes.toml:5: probe 'x': timeout: timeout (60 s) is longer than interval (30 s)",
        ),
        (
            '[[probe]]\nname = "x"\ntype = "tcp"\nhost = "h"\nport = 1\n'
            '[[probe]]\nname = "x"\ntype = "tcp"\nhost = "h"\nport = 2\n',
            "probes.toml:7: probe 'x': name: another probe is already named 'x'",
        ),
        (
            '[[probe]]\nname = "x"\ntype = "custom"\nfunction = "no_such_module_here:check"\n',
            "probes.toml:4: probe 'x': function: cannot import 'no_such_module_here'",
        ),
        (
            '[[probe]]\nname = "x"\ntype = "custom"\nfunction = "os.path:join"\n',
            "probes.toml:4: probe 'x': function: os.path:join is not an async function",
        ),
        (
            '[[probe]]\nname = "x"\ntype = "redis"\nurl = "redis://x"\nmemory_degraded = 0.99\n',
            "probes.toml:5: probe 'x': memory_degraded: memory_degraded (0.99) must not be above "
            "memory_error (0.95)",
        ),
        ("[[probe]\n", "probes.toml: Expected ']]' at the end of an array declaration (at line 1"),
        ("", "probes.toml: no probes: add a [[probe]] table per target"),
    ],
)
def test_rejected_with_a_message_that_says_what_to_do(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_a_config_file_without_probes_may_be_allowed() -> None:
    assert parse_probes('[healthbus]\nnamespace = "x"\n', "hb.toml", {}, allow_empty=True) == []


def test_probe_keys_are_found_below_their_own_header_not_an_earlier_one() -> None:
    text = (
        '[[probe]]\nname = "a"\ntype = "tcp"\nhost = "h"\nport = 1\ninterval = 5\n\n'
        '[[probe]]\nname = "b"\ntype = "tcp"\nhost = "h"\nport = 1\ninterval = -5\n'
    )
    assert "probes.toml:13: probe 'b': interval: Expected `float` > 0.0" in problems(text)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"probes file .*nope\.toml does not exist"):
        load_probes(tmp_path / "nope.toml", {})


def test_every_type_is_registered() -> None:
    assert set(PROBE_TYPES) == {"http", "tcp", "redis", "postgres", "docket", "prefect", "custom"}


@pytest.mark.parametrize("kind", sorted(PROBE_TYPES))
def test_every_probe_type_implements_its_hooks(kind: str) -> None:
    """Each names its target, and either checks it or stands for probes that do (a preset)."""
    cls = PROBE_TYPES[kind]
    assert cls.target is not ProbeSpec.target
    assert (cls.check is not ProbeSpec.check) != (cls.expand is not ProbeSpec.expand)
