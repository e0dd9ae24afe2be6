"""Running probes: each target on its own cadence, all concurrently, every check bounded by
its own timeout, so a hung target never delays another. Each result becomes a heartbeat of
kind `probe` through the buffered `Publisher` (publishing never waits on the bus).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final

import anyio
import msgspec

from healthbus.config import Config
from publishers.probes.base import Check, ProbeSpec, elapsed_ms
from publishers.probes.result import ProbeResult, fit_details
from publishers.publisher import Publisher, describe_error
from publishers.scrub import clean_error

__all__ = ["check_all", "check_once", "publish_result", "run_probes", "serve_probes"]

log = logging.getLogger("healthbus.probes")
#: The heartbeat schema's limit on `hint`.
HINT_MAX_CHARS: Final = 512


async def check_once(probe: ProbeSpec, check: Check | None = None) -> ProbeResult:
    """One check (`probe.check` unless given the one of `probe.checking()`), never longer
    than `probe.timeout` and never raising: a failure, a timeout or a bad custom function
    becomes an `error` result with a scrubbed message."""
    started = time.perf_counter()
    result = ProbeResult(status="error", ok=False)
    with anyio.move_on_after(probe.timeout) as scope:
        try:
            result = await (check or probe.check)()
        except Exception as exc:  # whatever a target or custom function throws is its failure
            result = ProbeResult(
                status="error", ok=False, duration_ms=elapsed_ms(started), error=_describe(exc)
            )
    if scope.cancelled_caught:
        result = ProbeResult(
            status="error",
            ok=False,
            duration_ms=elapsed_ms(started),
            error=f"no answer within {probe.timeout:g} s (timeout)",
        )
    return _tidy(probe, result)


def _tidy(probe: ProbeSpec, result: ProbeResult) -> ProbeResult:
    """`result` (and its parts) fit to publish: details within limits, texts scrubbed."""
    return msgspec.structs.replace(
        result,
        details=fit_details({"type": probe.type, "target": probe.target, **result.details}),
        error=None if result.error is None else clean_error(result.error),
        hint=None if result.hint is None else clean_error(result.hint)[:HINT_MAX_CHARS],
        parts={name: _tidy(probe, part) for name, part in result.parts.items()},
    )


async def check_all(probes: Sequence[ProbeSpec]) -> list[ProbeResult]:
    """Every probe checked once, concurrently; results in the order of `probes`."""
    results: list[ProbeResult] = [ProbeResult() for _ in probes]

    async def one(index: int) -> None:
        results[index] = await check_once(probes[index])

    async with anyio.create_task_group() as tg:
        for index in range(len(probes)):
            tg.start_soon(one, index)
    return results


def publish_result(publisher: Publisher, probe: ProbeSpec, result: ProbeResult) -> None:
    """One heartbeat for the probe, and one for each of its parts (`<name>.<part>`)."""
    _publish(publisher, probe.name, probe.interval, result, probe.depends_on)
    for part, found in result.parts.items():
        _publish(publisher, f"{probe.name}.{part}", probe.interval, found, [probe.name])


def _publish(
    publisher: Publisher, name: str, interval: float, result: ProbeResult, needs: list[str]
) -> None:
    publisher.publish(
        name,
        kind="probe",
        interval_s=interval,
        ok=result.ok,
        status=result.status,
        duration_ms=result.duration_ms,
        error=result.error,
        details=result.details,
        hint=result.hint,
        depends_on=needs or None,
    )


async def run_probes(probes: Sequence[ProbeSpec], publisher: Publisher) -> None:
    """Check and publish every probe on its own cadence until cancelled."""
    async with anyio.create_task_group() as tg:
        for probe in probes:
            tg.start_soon(_keep_checking, probe, publisher, name=f"probe {probe.name}")


async def serve_probes(config: Config, probes: Sequence[ProbeSpec]) -> None:
    """`run_probes` publishing to the configured bus; goodbyes are said when cancelled."""
    async with Publisher.from_config(config) as publisher:
        await run_probes(probes, publisher)


async def _keep_checking(probe: ProbeSpec, publisher: Publisher) -> None:
    """Checks start every `interval` seconds (at once after one that overran it)."""
    last = "healthy"
    async with probe.checking() as check:
        while True:
            started = anyio.current_time()
            result = await check_once(probe, check)
            publish_result(publisher, probe, result)
            if result.status != last:
                level = logging.INFO if result.status == "healthy" else logging.WARNING
                log.log(
                    level, "probe %s is %s: %s", probe.name, result.status, result.error or "ok"
                )
                last = result.status
            await anyio.sleep_until(started + probe.interval)


def _describe(exc: BaseException) -> str:
    """ "Type: message", with the cause when it says more ("All connection attempts failed"
    alone does not tell that the connection was refused)."""
    text = describe_error(exc)
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({_describe(cause)})"
    return text
