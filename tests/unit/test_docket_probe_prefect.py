"""The `prefect` preset: one table expanding into the probes of a Prefect server, with
Prefect's defaults, and its mistakes named like any probe's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from healthbus.errors import ConfigError
from publishers.probes import load_probes, parse_probes
from publishers.probes.docket_probe import DocketProbe
from publishers.probes.http_probe import HttpProbe
from publishers.probes.postgres_probe import PostgresProbe
from publishers.probes.prefect_preset import PREFECT_SERVICES
from publishers.probes.redis_probe import RedisProbe

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "prefect.toml"
ENVIRON = {
    "PREFECT_API_URL": "http://prefect-server:4200/api/",
    "PREFECT_SERVER_DOCKET_URL": "redis://:redis-secret@redis:6379/0",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://prefect:pg-secret@db/prefect",
}


def test_the_example_expands_into_every_check_with_prefects_defaults() -> None:
    probes = load_probes(EXAMPLE, ENVIRON)
    assert [(p.name, p.type) for p in probes] == [
        ("prefect.api", "http"),
        ("prefect.ready", "http"),
        ("prefect.redis", "redis"),
        ("prefect.postgres", "postgres"),
        ("prefect.docket", "docket"),
    ]
    api, ready, redis, pg, docket = probes
    assert isinstance(api, HttpProbe) and api.url == "http://prefect-server:4200/api/health"
    assert api.body_contains == "true" and (api.degraded_ms, api.error_ms) == (500, 2000)
    assert isinstance(ready, HttpProbe) and ready.url.endswith("/api/ready")
    assert ready.depends_on == ["prefect.postgres"]
    assert isinstance(redis, RedisProbe) and [s.key for s in redis.streams] == ["events", "actions"]
    assert redis.degraded_ms == 50 and redis.streams[0].lag_degraded == 10_000
    assert isinstance(pg, PostgresProbe) and pg.url == "postgresql://prefect:pg-secret@db/prefect"
    assert pg.applications == ["prefect-server"]
    assert [(t.name, t.rows_warning) for t in pg.tables] == [
        ("events", 10_000_000),
        ("event_resources", 50_000_000),
    ]
    assert pg.tables[0].hint and "PREFECT_SERVER_EVENTS_RETENTION_PERIOD" in pg.tables[0].hint
    assert isinstance(docket, DocketProbe) and docket.docket == "prefect-server"
    assert docket.tasks == PREFECT_SERVICES and docket.tasks["monitor_late_runs"] == 5
    assert docket.depends_on == ["prefect.redis"]
    assert all((p.interval, p.timeout) == (15, 5) for p in probes)
    for probe in probes:
        assert "secret" not in repr(probe) + probe.target


def test_only_the_api_is_required_and_services_can_be_tuned() -> None:
    probes = parse_probes(
        """
[[probe]]
name = "pf"
type = "prefect"
api_url = "http://127.0.0.1:4200/api"
docket_url = "redis://docket:6379/1"
docket = "prefect"
skip_tasks = ["monitor_subflow_runs"]
interval = 30
[probe.tasks]
schedule_deployments = 120
my_service = 10
""",
        "probes.toml",
        {},
    )
    assert [p.name for p in probes] == ["pf.api", "pf.ready", "pf.docket"]
    docket = probes[2]
    assert isinstance(docket, DocketProbe) and docket.depends_on == []
    assert docket.tasks["schedule_deployments"] == 120 and docket.tasks["my_service"] == 10
    assert "monitor_subflow_runs" not in docket.tasks and docket.interval == 30


def test_mistakes_are_named_with_their_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_probes(
            """
[[probe]]
name = "prefect"
type = "prefect"
api_url = "http://prefect:4200/api"
skip_tasks = ["schedule_deploymnets"]
timeout = 20

[[probe]]
name = "pf"
type = "prefect"
api_url = "http://prefect:4200/api"

[[probe]]
name = "pf.api"
type = "tcp"
host = "x"
port = 1
""",
            "probes.toml",
            {},
        )
    assert str(caught.value).splitlines()[1:] == [
        "probes.toml:6: probe 'prefect': skip_tasks: not one of the watched services: "
        "schedule_deploymnets",
        "probes.toml:7: probe 'prefect': timeout: timeout (20 s) is longer than interval (15 s); "
        "a check must end before the next one is due: lower timeout or raise interval",
        "probes.toml:15: probe 'pf.api': name: another probe is already named 'pf.api'; rename one",
    ]


def test_the_readme_config_and_compose_snippet_are_valid() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Watching a self-hosted Prefect", 1)[1].split("\n## ", 1)[0]
    toml, compose = re.findall(r"```(?:toml|yaml)\n(.*?)```", section, re.S)
    url = ENVIRON["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    probes = parse_probes(toml, "README.md", {"PREFECT_SERVER_DATABASE_CONNECTION_URL": url})
    docket = probes[-1]
    assert isinstance(docket, DocketProbe) and docket.docket == "prefect"
    assert docket.url.endswith("/1") and docket.depends_on == []
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(compose)))
    assert not errors, [e.message for e in errors]
