"""What every probe type shares: the common keys, their checks, and I/O helpers.

A probe is its own spec: a frozen Struct built from one `[[probe]]` table, whose `check()`
measures the target once. `check()` knows nothing of timeouts; the runner bounds it, so a
check only has to close what it opened (`closing`), even when cancelled.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, ClassVar, Final

import anyio
import msgspec

from healthbus.connection import redact_url
from healthbus.schema import SERVICE_PATTERN
from publishers.probes.result import ProbeResult
from publishers.scrub import scrub

__all__ = [
    "Check",
    "Millis",
    "Name",
    "ProbeSpec",
    "Seconds",
    "UrlProbeSpec",
    "closing",
    "elapsed_ms",
    "public_target",
]

Name = Annotated[str, msgspec.Meta(pattern=SERVICE_PATTERN)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]
Millis = Annotated[float, msgspec.Meta(ge=0)]
#: One check of a probe's target.
Check = Callable[[], Awaitable[ProbeResult]]
#: How long closing a connection may take after the check's own time is up.
CLOSE_TIMEOUT_S: Final = 1.0


class ProbeSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Keys of every `[[probe]]` table; each type adds its own and its default numbers."""

    type: ClassVar[str] = ""
    #: Modules the type needs (from the `probes` extra), checked when the file is loaded.
    requires: ClassVar[tuple[str, ...]] = ()
    #: (lower, upper) threshold keys: a lower one set above its upper one is a mistake.
    ordered: ClassVar[tuple[tuple[str, str], ...]] = (("degraded_ms", "error_ms"),)
    name: Name
    #: Seconds between the starts of two checks.
    interval: Seconds
    #: Seconds a check may take before it counts as an error.
    timeout: Seconds
    #: Latency (ms) from which the target is degraded, and from which it is in error.
    degraded_ms: Millis | None = None
    error_ms: Millis | None = None
    depends_on: list[Name] = msgspec.field(default_factory=list)

    @classmethod
    def defaults_for(cls, table: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults that depend on other keys of the table (see `http`'s `external`)."""
        return {}

    # Hooks each probe type implements: `target`, and `check` unless it is a preset that
    # `expand`s into probes that check (a Struct cannot be an abc.ABC: its metaclass is
    # msgspec's); `tests/unit/test_probe_load.py` checks every registered type.

    @property
    def target(self) -> str:
        """What is probed, safe to show: URLs without passwords or tokens."""
        raise NotImplementedError

    async def check(self) -> ProbeResult:
        """Measure the target once."""
        raise NotImplementedError

    @asynccontextmanager
    async def checking(self) -> AsyncIterator[Check]:
        """The check the runner calls on every cadence. A probe that keeps state between
        checks (a live subscription) holds it here for as long as the runner runs it;
        `--once` calls `check` alone."""
        yield self.check

    def expand(self) -> list[ProbeSpec]:
        """The probes this table stands for: itself, or the several of a preset."""
        return [self]

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, what is wrong and how to fix it) for settings that are valid one by one
        but not together."""
        if self.timeout > self.interval:
            yield (
                "timeout",
                f"timeout ({self.timeout:g} s) is longer than interval ({self.interval:g} s); "
                "a check must end before the next one is due: lower timeout or raise interval",
            )
        for low, high in self.ordered:
            below, above = getattr(self, low), getattr(self, high)
            if below is not None and above is not None and below > above:
                yield low, f"{low} ({below:g}) must not be above {high} ({above:g})"

    def __repr__(self) -> str:
        # The default repr would show URLs and headers, secrets included.
        return f"<{self.type} probe {self.name!r}>"


class UrlProbeSpec(ProbeSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A probe of a target named by a URL (each type narrows `url` to its schemes)."""

    url: str

    @property
    def target(self) -> str:
        return public_target(self.url)


def public_target(url: str) -> str:
    """A URL as it may appear in heartbeats and logs: no userinfo, no token parameters."""
    return scrub(redact_url(url))


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading), to 0.01 ms."""
    return round((time.perf_counter() - started) * 1000, 2)


@asynccontextmanager
async def closing(close: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """Call `close` when the block ends, also when the runner's timeout cancelled it, so a
    hung target leaves no socket open; closing itself gets at most CLOSE_TIMEOUT_S."""
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + CLOSE_TIMEOUT_S):
            await close()
