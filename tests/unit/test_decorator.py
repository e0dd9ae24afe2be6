"""`@heartbeat` and `with heartbeat(...)`, read back from the publisher's buffer.

The publisher points at a closed port and flushes only on close, so every heartbeat a run
publishes is still in its buffer (no Redis involved).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator

import pytest

from healthbus.embedded import free_port
from healthbus.errors import ConfigError, InvalidMessage
from healthbus.schema import Heartbeat
from publishers import (
    Publisher,
    current_iteration,
    default_publisher,
    heartbeat,
    set_default_publisher,
)


@pytest.fixture
def buffered() -> Iterator[Publisher]:
    publisher = Publisher(
        f"redis://127.0.0.1:{free_port()}/0", "unit", batch_size=1000, flush_interval_s=60
    )
    yield publisher
    publisher.close(timeout=0)


def sent(publisher: Publisher) -> list[Heartbeat]:
    return list(publisher._buffer)


def test_a_sync_run_reports_duration_and_returned_details(buffered: Publisher) -> None:
    @heartbeat(service="sync_job", interval=60, depends_on=["postgres"], publisher=buffered)
    def job(n: int) -> dict[str, object]:
        return {"runs_scheduled": n, "rows": [1, 2], "note": "ok"}

    assert job(42) == {"runs_scheduled": 42, "rows": [1, 2], "note": "ok"}
    (hb,) = sent(buffered)
    assert (hb.service, hb.interval_s, hb.ok, hb.kind) == ("sync_job", 60, True, "perpetual")
    assert hb.duration_ms is not None and hb.duration_ms >= 0
    assert hb.details == {"runs_scheduled": 42, "note": "ok"}  # the list does not fit: left out
    assert hb.depends_on == ["postgres"] and hb.error is None


def test_a_run_that_raises_reports_the_error_and_reraises(buffered: Publisher) -> None:
    boom = ValueError("disk full")

    @heartbeat(service="failing", interval=5, publisher=buffered)
    def job() -> None:
        current_iteration().set(attempted=3)
        raise boom

    with pytest.raises(ValueError) as caught:
        job()
    assert caught.value is boom
    (hb,) = sent(buffered)
    assert hb.ok is False and hb.error == "ValueError: disk full"
    assert hb.details == {"attempted": 3}


@pytest.mark.anyio
async def test_an_async_run_is_measured_and_stays_a_coroutine_function(
    buffered: Publisher,
) -> None:
    @heartbeat(service="async_job", interval=5, publisher=buffered)
    async def job(delay: float = 0.0) -> dict[str, int]:
        await asyncio.sleep(delay)
        current_iteration().hint = "all good"
        return {"done": 1}

    assert inspect.iscoroutinefunction(job)
    assert await job() == {"done": 1}

    @heartbeat(service="async_fail", interval=5, publisher=buffered)
    async def failing() -> None:
        raise RuntimeError("no route")

    with pytest.raises(RuntimeError):
        await failing()
    ok, failed = sent(buffered)
    assert (ok.ok, ok.details, ok.hint) == (True, {"done": 1}, "all good")
    assert (failed.ok, failed.error) == (False, "RuntimeError: no route")


def test_the_wrapped_signature_name_and_doc_are_kept(buffered: Publisher) -> None:
    marker = object()

    async def original(a: int, *, perpetual: object = marker) -> None:
        """Does things."""

    wrapped = heartbeat(service="x", interval=1, publisher=buffered)(original)
    assert inspect.signature(wrapped) == inspect.signature(original)
    assert inspect.signature(wrapped).parameters["perpetual"].default is marker
    assert (wrapped.__name__, wrapped.__doc__) == ("original", "Does things.")
    assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]


def test_a_with_block_reports_each_pass(buffered: Publisher) -> None:
    tick = heartbeat(service="loop", interval=2, instance="worker-2", publisher=buffered)
    for i in range(3):
        with tick as it:
            it.set(i=i)
            if i == 1:
                it.fail("partial copy")
                it.status = "degraded"
    with pytest.raises(KeyError), tick:
        raise KeyError("gone")
    beats = sent(buffered)
    assert [hb.details for hb in beats] == [{"i": 0}, {"i": 1}, {"i": 2}, None]
    assert [hb.ok for hb in beats] == [True, False, True, False]
    assert beats[1].error == "partial copy" and beats[1].status == "degraded"
    assert beats[3].error == "KeyError: 'gone'"
    assert {hb.instance for hb in beats} == {"worker-2"}


def test_nested_runs_keep_their_own_details(buffered: Publisher) -> None:
    @heartbeat(service="inner", interval=1, publisher=buffered)
    def inner() -> None:
        current_iteration().set(level="inner")

    @heartbeat(service="outer", interval=1, publisher=buffered)
    def outer() -> None:
        current_iteration().set(before=1)
        inner()
        current_iteration().set(after=1)

    outer()
    assert [(hb.service, hb.details) for hb in sent(buffered)] == [
        ("inner", {"level": "inner"}),
        ("outer", {"before": 1, "after": 1}),
    ]


def test_interrupted_runs_report_nothing(buffered: Publisher) -> None:
    @heartbeat(service="stopped", interval=1, publisher=buffered)
    def job(exc: BaseException) -> None:
        raise exc

    for exc in (KeyboardInterrupt(), SystemExit(0), asyncio.CancelledError()):
        with pytest.raises(type(exc)):
            job(exc)
    assert sent(buffered) == []


def test_outside_a_run_the_iteration_is_detached(buffered: Publisher) -> None:
    it = current_iteration()
    it.set(anything=1)
    it.fail("ignored")
    assert current_iteration() is not it and sent(buffered) == []


def test_bad_names_and_generators_fail_at_decoration(buffered: Publisher) -> None:
    with pytest.raises(InvalidMessage, match="service name"):
        heartbeat(service="bad name", interval=1)
    with pytest.raises(InvalidMessage, match="interval_s"):
        heartbeat(service="ok", interval=0)
    with pytest.raises(InvalidMessage, match="instance"):
        heartbeat(service="ok", interval=1, instance="a b")
    with pytest.raises(InvalidMessage):
        heartbeat(service="ok", interval=1, depends_on=["no good"])

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(ConfigError, match="generator"):
        heartbeat(service="ok", interval=1, publisher=buffered)(gen)


def test_no_publisher_given_means_the_process_default(buffered: Publisher) -> None:
    @heartbeat(service="defaulted", interval=1)
    def job() -> None:
        pass

    previous = set_default_publisher(buffered)
    try:
        job()
    finally:
        set_default_publisher(previous)
    assert [hb.service for hb in sent(buffered)] == ["defaulted"]


def test_the_default_publisher_comes_from_the_environment() -> None:
    previous = set_default_publisher(None)
    url = f"redis://127.0.0.1:{free_port()}/0"
    try:
        env = {"HEALTHBUS_REDIS_URL": url, "HEALTHBUS_NAMESPACE": "envns"}
        made = default_publisher({**env, "HEALTHBUS_INSTANCE": "box-1"})
        assert default_publisher() is made  # made once, then shared
        assert (made.redis_url, made.keys.namespace, made.instance) == (url, "envns", "box-1")
        made.close(timeout=0)
        set_default_publisher(None)
        with pytest.raises(ConfigError, match="namespace"):
            default_publisher({"HEALTHBUS_NAMESPACE": "not valid"})
        local = default_publisher({})
        assert local.redis_url == "redis://127.0.0.1:6379/0"
        local.close(timeout=0)
    finally:
        set_default_publisher(previous)
