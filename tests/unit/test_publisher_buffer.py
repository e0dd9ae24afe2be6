"""The publisher's buffer and counters, against a closed port (no Redis answers).

With `flush_interval_s` long and `batch_size` above the number published, the thread never
takes from the buffer before `close()`, so every count below is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import msgspec
import pytest

import publishers
from healthbus.embedded import free_port
from healthbus.errors import ConfigError, InvalidMessage
from healthbus.schema import Heartbeat, Intent, encode
from publishers import Publisher, PublisherStats


@pytest.fixture
def closed_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def idle(closed_url: str) -> Iterator[Publisher]:
    publisher = Publisher(closed_url, "unit", buffer_size=10, batch_size=1000, flush_interval_s=60)
    yield publisher
    publisher.close(timeout=0)


def test_all_is_exported() -> None:
    for name in publishers.__all__:
        assert getattr(publishers, name) is not None
    assert {"Publisher", "publish_once"} <= set(publishers.__all__)


def test_full_buffer_drops_the_oldest_and_counts(idle: Publisher) -> None:
    for i in range(25):
        idle.publish("svc", interval_s=5, details={"i": i})
    stats = idle.stats
    assert (stats.queued, stats.dropped, stats.sent) == (10, 15, 0)
    assert [hb.details for hb in idle._buffer] == [{"i": i} for i in range(15, 25)]
    assert [hb.n for hb in idle._buffer] == list(range(15, 25))


def test_close_against_a_dead_bus_gives_up_at_the_deadline(idle: Publisher) -> None:
    for _ in range(10):
        idle.publish("svc", interval_s=5)
    idle.close(timeout=0.3)
    stats = idle.stats
    # The goodbye pushed out the oldest heartbeat; the ten left could not be sent.
    assert isinstance(stats, PublisherStats)
    assert (stats.queued, stats.sent, stats.dropped) == (0, 0, 11)
    assert stats.connected is False and stats.failed_batches >= 1
    assert stats.last_error and "127.0.0.1" in stats.last_error
    idle.close()  # idempotent
    assert idle.closed


def test_publish_never_raises_for_redis_and_returns_nothing(closed_url: str) -> None:
    publisher = Publisher(closed_url, "unit", buffer_size=100, flush_interval_s=0.01)
    for _ in range(1000):
        assert publisher.publish("svc", interval_s=1) is None
    assert publisher.stats.queued <= 100 + 500
    publisher.close(timeout=0.1)
    assert publisher.stats.sent == 0


def test_heartbeat_fields(idle: Publisher) -> None:
    idle.publish(
        "svc", interval_s=5, ok=False, error=ValueError("boom"), depends_on=("db",), kind="probe"
    )
    idle.publish("svc", interval_s=5, instance="replica-2")
    first, second = idle._buffer
    assert first.v == 1 and first.instance == idle.instance and first.boot == idle.boot
    assert first.error == "ValueError: boom" and first.depends_on == ["db"]
    assert first.kind == "probe" and first.ok is False
    assert second.instance == "replica-2" and second.n == first.n + 1 == 1


def test_every_optional_field_given_is_kept_and_the_rest_are_unset(idle: Publisher) -> None:
    until = datetime(2026, 1, 1, tzinfo=UTC)
    given = {
        "status": "degraded",
        "duration_ms": 3.5,
        "error": "slow",
        "details": {"rows": 1},
        "hint": "see the runbook",
        "depends_on": ["db"],
        "phase": "end",
        "timeout_s": 30.0,
        "intent": Intent(state="draining", until=until),
    }
    idle.publish("svc", interval_s=5, **given)  # type: ignore[arg-type]
    idle.publish("svc", interval_s=5)
    full, bare = idle._buffer
    assert {name: getattr(full, name) for name in given} == given
    assert all(getattr(bare, name) is None for name in given)
    assert msgspec.json.decode(encode(full), type=Heartbeat) == full


def test_details_are_copied(idle: Publisher) -> None:
    details: dict[str, float | int | str | bool | None] = {"processed": 1}
    idle.publish("svc", interval_s=5, details=details)
    details["processed"] = 2
    assert idle._buffer[0].details == {"processed": 1}


def test_identity_is_host_and_pid() -> None:
    instance = publishers.publisher.default_instance()
    assert instance.endswith(f":{__import__('os').getpid()}")


@pytest.mark.parametrize(
    ("service", "interval_s", "instance", "needle"),
    [
        ("bad name", 5, None, "service name"),
        ("", 5, None, "service name"),
        ("x" * 129, 5, None, "service name"),
        ("svc", 0, None, "interval_s"),
        ("svc", -1, None, "interval_s"),
        ("svc", "5", None, "interval_s"),
        ("svc", True, None, "interval_s"),
        ("svc", 5, "a b", "instance"),
    ],
)
def test_caller_bugs_raise_at_once(
    idle: Publisher, service: str, interval_s: float, instance: str | None, needle: str
) -> None:
    with pytest.raises(InvalidMessage, match=needle):
        idle.publish(service, interval_s=interval_s, instance=instance)
    assert idle.stats.queued == 0


def test_bad_settings_are_config_errors(closed_url: str) -> None:
    with pytest.raises(ConfigError):
        Publisher(closed_url, "bad namespace!")
    with pytest.raises(ConfigError):
        Publisher("http://not-redis", "ns")
    with pytest.raises(ConfigError):
        Publisher(closed_url, buffer_size=0)
    with pytest.raises(ConfigError):
        Publisher(closed_url, instance="has space")


def test_from_config_needs_a_url() -> None:
    from healthbus.config import Config

    with pytest.raises(ConfigError, match="no Redis URL"):
        Publisher.from_config(Config())
