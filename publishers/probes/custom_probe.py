"""`type = "custom"`: an importable async function checks something healthbus does not know.

`function = "package.module:attr"` names `async def attr(**options) -> ProbeResult | None`;
the probe's `options` table is passed as keyword arguments. Returning None means healthy;
raising means the check failed (its message, scrubbed, becomes the error). The latency
thresholds apply only when set.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, ClassVar

import msgspec

from healthbus.errors import ConfigError
from publishers.probes.base import ProbeSpec, Seconds, elapsed_ms
from publishers.probes.result import Finding, ProbeResult, conclude, latency_finding

__all__ = ["CustomProbe", "resolve"]


class CustomProbe(ProbeSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: ClassVar[str] = "custom"
    function: Annotated[str, msgspec.Meta(pattern=r"^[\w.]+:[\w.]+$")]
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    interval: Seconds = 60.0
    timeout: Seconds = 10.0

    @property
    def target(self) -> str:
        return self.function

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        try:
            resolve(self.function)
        except ConfigError as exc:
            yield "function", str(exc)

    async def check(self) -> ProbeResult:
        started = time.perf_counter()
        returned = await resolve(self.function)(**self.options)
        ms = elapsed_ms(started)
        if returned is None:
            returned = ProbeResult()
        if not isinstance(returned, ProbeResult):
            return ProbeResult(
                status="error",
                ok=False,
                duration_ms=ms,
                error=f"{self.function} returned {type(returned).__name__}, "
                "expected a ProbeResult or None",
            )
        duration = returned.duration_ms if returned.duration_ms is not None else ms
        findings = [latency_finding(duration, self.degraded_ms, self.error_ms)]
        if returned.status != "healthy" or not returned.ok:
            status = "error" if not returned.ok else returned.status
            findings.append(Finding(status, returned.error or f"the check reports {status}"))
        graded = conclude(
            findings, duration_ms=duration, details=returned.details, hint=returned.hint
        )
        return msgspec.structs.replace(graded, ok=graded.ok and returned.ok)


def resolve(path: str) -> Callable[..., Any]:
    """The async function `module:attr` names, or ConfigError saying what is wrong."""
    module_name, _, attr = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {module_name!r} ({exc}); is it installed or on PYTHONPATH?"
        ) from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no {attr!r}") from None
    if not inspect.iscoroutinefunction(target):
        raise ConfigError(f"{path} is not an async function (async def)")
    return target  # type: ignore[no-any-return]
