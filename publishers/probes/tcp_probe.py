"""`type = "tcp"`: can a connection be opened to host:port, and how fast."""

from __future__ import annotations

import time
from typing import Annotated, ClassVar

import anyio
import msgspec

from publishers.probes.base import Millis, ProbeSpec, Seconds, closing, elapsed_ms
from publishers.probes.result import ProbeResult, conclude, latency_finding

__all__ = ["TcpProbe"]


class TcpProbe(ProbeSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Connect time; not in design.md's table, so the numbers of a supporting service."""

    type: ClassVar[str] = "tcp"
    host: Annotated[str, msgspec.Meta(min_length=1)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65_535)]
    interval: Seconds = 30.0
    timeout: Seconds = 3.0
    degraded_ms: Millis | None = 100.0
    error_ms: Millis | None = 1000.0

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def check(self) -> ProbeResult:
        started = time.perf_counter()
        stream = await anyio.connect_tcp(self.host, self.port)
        async with closing(stream.aclose):
            ms = elapsed_ms(started)
        return conclude(
            [latency_finding(ms, self.degraded_ms, self.error_ms)], duration_ms=ms, details={}
        )
