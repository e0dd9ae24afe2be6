"""`type = "http"`: one request; the status code, optionally the body, and the latency.

TLS certificates are verified unless `verify_tls = false`. The latency is the whole exchange
from a new client (connect, TLS, request, body), as a fresh caller would see it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal

import msgspec

from publishers.probes.base import (
    Millis,
    Seconds,
    UrlProbeSpec,
    closing,
    elapsed_ms,
)
from publishers.probes.result import Finding, ProbeResult, conclude, latency_finding

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpProbe"]

#: design.md: external services are checked every 2-5 minutes, 15 s timeout, 1000/5000 ms.
EXTERNAL_DEFAULTS: Final = {
    "interval": 120.0,
    "timeout": 15.0,
    "degraded_ms": 1000.0,
    "error_ms": 5000.0,
}
#: At most this much of a body is read to look for `body_contains`.
BODY_LIMIT: Final = 1 << 20

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class HttpProbe(UrlProbeSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Internal by default (30 s, 10 s timeout, 500/2000 ms); `external = true` for others."""

    type: ClassVar[str] = "http"
    requires: ClassVar[tuple[str, ...]] = ("httpx",)
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    method: Method = "GET"
    expect_status: int | list[int] = 200
    #: The response body must contain this text.
    body_contains: str | None = None
    verify_tls: bool = True
    follow_redirects: bool = False
    external: bool = False
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    interval: Seconds = 30.0
    timeout: Seconds = 10.0
    degraded_ms: Millis | None = 500.0
    error_ms: Millis | None = 2000.0

    @classmethod
    def defaults_for(cls, table: Mapping[str, Any]) -> dict[str, Any]:
        return dict(EXTERNAL_DEFAULTS) if table.get("external") is True else {}

    @property
    def expected(self) -> list[int]:
        return [self.expect_status] if isinstance(self.expect_status, int) else self.expect_status

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        if not self.expected or not all(100 <= code <= 599 for code in self.expected):
            yield (
                "expect_status",
                "expect_status must be an HTTP status (100-599) or a list of them",
            )

    async def check(self) -> ProbeResult:
        import httpx  # the `probes` extra; the loader checks it is installed

        started = time.perf_counter()
        client = httpx.AsyncClient(
            verify=self.verify_tls, timeout=None, follow_redirects=self.follow_redirects
        )
        async with closing(client.aclose):
            request = client.build_request(self.method, self.url, headers=self.headers)
            response = await client.send(request, stream=True)
            async with closing(response.aclose):
                body = await _read_up_to(response, BODY_LIMIT if self.body_contains else 0)
        ms = elapsed_ms(started)
        findings: list[Finding | None] = [latency_finding(ms, self.degraded_ms, self.error_ms)]
        if response.status_code not in self.expected:
            want = " or ".join(map(str, self.expected))
            findings.append(Finding("error", f"HTTP {response.status_code}, expected {want}"))
        if self.body_contains is not None and self.body_contains not in body:
            findings.append(
                Finding("error", f"the response body does not contain {self.body_contains!r}")
            )
        return conclude(findings, duration_ms=ms, details={"status_code": response.status_code})


async def _read_up_to(response: httpx.Response, limit: int) -> str:
    if limit <= 0:
        return ""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit].decode(response.encoding or "utf-8", "replace")
