"""compose.yaml is a valid Compose file and holds the documented topologies.

`docker compose config` needs the Compose plugin, which this machine lacks, so the file is
checked against the Compose Specification's JSON Schema, vendored in tests/data (see
compose-spec.NOTICE there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from healthbus.connection import parse_url

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def services(compose: dict[str, Any], *profiles: str) -> set[str]:
    """The services `docker compose --profile …` starts."""
    return {
        name
        for name, service in compose["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def test_compose_file_matches_the_compose_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_split_ha_and_sentinel_topologies(compose: dict[str, Any]) -> None:
    split = {"redis", "aggregator", "web", "demo"}
    assert services(compose) == split
    assert services(compose, "ha") == split | {"aggregator-standby", "web-2"}
    assert services(compose, "ha", "sentinel") - services(compose, "ha") == {
        "redis-replica",
        "sentinel",
    }
    svc = compose["services"]
    names = [
        svc[a]["command"][svc[a]["command"].index("--name") + 1]
        for a in ("aggregator", "aggregator-standby")
    ]
    assert len(set(names)) == 2, "two aggregators need names of their own"
    assert svc["web"]["command"] == svc["web-2"]["command"]
    assert svc["web"]["ports"] != svc["web-2"]["ports"]


def test_every_part_reads_one_redis_url_that_may_name_sentinel(compose: dict[str, Any]) -> None:
    healthbus = [s for s in compose["services"].values() if s.get("image") == "healthbus:local"]
    urls = {s["environment"]["HEALTHBUS_REDIS_URL"] for s in healthbus}
    assert urls == {"${HEALTHBUS_REDIS_URL:-redis://redis:6379/0}"}
    # The URL the file's comment gives for the Sentinel topology.
    assert parse_url("redis+sentinel://sentinel:26379/mymaster/0").master == "mymaster"
    for s in healthbus:
        if "web" in s.get("command", []):
            assert s["environment"]["HEALTHBUS_TOKEN"].startswith("${HEALTHBUS_TOKEN:?")
