"""Simulated services for `healthbus serve --demo`: something to watch degrade and recover.

Eight services of every kind follow scripted cycles of phases (healthy, slow, silent,
failing, and for consumers a backlog and a full queue) on different cadences and offsets, so
within a minute the dashboard shows each status and keeps moving. Services that depend on
`postgres` fail while it fails, which shows root causes. The script is a function of time, so
two runs look alike; a seeded random source only jitters the numbers.

`speed` compresses time: at `speed=10` every interval and phase is ten times shorter, and the
promised `interval_s` shrinks with it, so silence is still judged correctly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final

import anyio

from publishers.publisher import Publisher

__all__ = ["SERVICES", "DemoService", "phase_at", "run_demo"]


@dataclass(frozen=True)
class DemoService:
    name: str
    kind: str
    interval_s: float
    #: (phase, seconds) repeated forever, starting `offset_s` seconds into the cycle.
    script: tuple[tuple[str, float], ...]
    offset_s: float = 0.0
    depends_on: tuple[str, ...] = ()
    #: Probes: (healthy, slow) latency ranges in ms; errors past the target's thresholds.
    latency_ms: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 10.0), (100.0, 400.0))
    error: str = "RuntimeError: simulated failure"


_PG: Final = ("postgres",)
SERVICES: Final[tuple[DemoService, ...]] = (
    DemoService(
        "postgres", "probe", 3,
        (("healthy", 90), ("slow", 20), ("healthy", 40), ("failing", 15)),
        latency_ms=((3, 40), (300, 900)),
        error="connection to postgresql://prefect:s3cret@db:5432/prefect failed: timeout expired",
    ),
    DemoService(
        "redis", "probe", 2, (("healthy", 70), ("slow", 15), ("healthy", 60), ("silent", 20)),
        offset_s=30, latency_ms=((0.2, 3), (80, 400)),
    ),
    DemoService(
        "prefect_api", "probe", 5,
        (("healthy", 100), ("slow", 25), ("failing", 15), ("healthy", 20)),
        offset_s=60, latency_ms=((20, 200), (700, 1800)),
        error="GET https://api.example.com/health: 503 Service Unavailable",
    ),
    DemoService(
        "schedule_deployments", "perpetual", 5,
        (("healthy", 50), ("slow", 25), ("healthy", 40), ("silent", 35)),
        offset_s=10, depends_on=_PG,
    ),
    DemoService(
        "monitor_late_runs", "perpetual", 2,
        (("healthy", 60), ("failing", 12), ("healthy", 50), ("silent", 20)),
        offset_s=45, depends_on=_PG,
        error="TimeoutError: canceling statement due to statement timeout",
    ),
    DemoService(
        "mark_lost_runs", "perpetual", 4, (("healthy", 80), ("slow", 20), ("healthy", 40)),
        offset_s=90,
    ),
    DemoService(
        "EventPersister", "consumer", 2,
        (("healthy", 45), ("backlog", 20), ("full", 10), ("healthy", 30), ("failing", 15)),
        offset_s=20, depends_on=_PG,
        error="OperationalError: could not write events: disk full",
    ),
    DemoService(
        "TaskRunRecorder", "consumer", 3,
        (("healthy", 70), ("failing", 15), ("healthy", 30), ("backlog", 25)),
        offset_s=75, depends_on=_PG,
        error="OperationalError: deadlock detected while recording task runs",
    ),
)  # fmt: skip

_CAPACITY: Final = 1000


def phase_at(service: DemoService, t: float) -> tuple[str, float]:
    """The scripted phase at demo time `t` (seconds) and how long it has lasted."""
    cycle = sum(seconds for _, seconds in service.script)
    x = (t + service.offset_s) % cycle
    for phase, seconds in service.script:
        if x < seconds:
            return phase, x
        x -= seconds
    return service.script[-1][0], 0.0  # pragma: no cover - float rounding at the cycle's end


def _beat(
    service: DemoService, t: float, speed: float, rng: random.Random
) -> dict[str, Any] | None:
    """The publish() arguments for one iteration of `service`, or None while it is silent."""
    phase, elapsed = phase_at(service, t)
    error = service.error
    if phase != "silent" and service.depends_on and phase_at(SERVICES[0], t)[0] == "failing":
        phase, error = "failing", "OperationalError: database unavailable (postgres is failing)"
    if phase == "silent":
        return None
    interval = service.interval_s / speed
    beat: dict[str, Any] = {"interval_s": interval, "kind": service.kind}
    if service.depends_on:
        beat["depends_on"] = list(service.depends_on)
    if phase == "failing":
        beat.update(ok=False, error=error, status="error")
    if service.kind == "probe":
        healthy, slow = service.latency_ms
        low, high = slow if phase == "slow" else healthy
        beat["duration_ms"] = round(rng.uniform(low, high), 2)
        beat.setdefault("status", "degraded" if phase == "slow" else "healthy")
        if phase == "failing":
            beat["duration_ms"] = 3000.0  # the probe's timeout
    elif service.kind == "consumer":
        failures = int(elapsed // service.interval_s) + 1 if phase == "failing" else 0
        depth = {"backlog": rng.randint(820, 950), "full": _CAPACITY}.get(phase, rng.randint(0, 80))
        beat["details"] = {
            "queue_depth": depth,
            "queue_capacity": _CAPACITY,
            "consecutive_failures": failures,
        }
        # A consumer keeps reporting while its handler fails: failures pile up, degraded
        # from the first, error from the fifth (then the report itself says ok=false).
        beat["ok"] = failures < 5
        beat["status"] = (
            "error"
            if phase == "full" or failures >= 5
            else "degraded"
            if phase == "backlog" or failures
            else "healthy"
        )
        if phase in ("backlog", "full"):
            beat["hint"] = "the consumer falls behind; add workers or check the database"
    else:
        factor = rng.uniform(1.2, 1.6) if phase == "slow" else rng.uniform(0.05, 0.3)
        beat["duration_ms"] = round(interval * 1000 * factor, 1)
        beat["details"] = {"items_processed": rng.randint(0, 50)}
    return beat


async def run_demo(
    redis_url: str,
    namespace: str,
    *,
    stop: anyio.Event | None = None,
    speed: float = 1.0,
    seed: int = 7,
) -> None:
    """Publish the simulated services until `stop` is set or the task is cancelled.

    On the way out the publisher says goodbye for every service, so they leave the dashboard
    as a planned stop rather than going silent.
    """
    if not speed > 0:
        raise ValueError("speed must be > 0")
    rng = random.Random(seed)
    async with Publisher(redis_url, namespace) as publisher:
        start = anyio.current_time()
        due = dict.fromkeys((s.name for s in SERVICES), 0.0)
        while stop is None or not stop.is_set():
            t = (anyio.current_time() - start) * speed
            for service in SERVICES:
                if due[service.name] <= t:
                    beat = _beat(service, t, speed, rng)
                    if beat is not None:
                        publisher.publish(service.name, **beat)
                    due[service.name] = t + service.interval_s
            delay = max(0.0, min(due.values()) - t) / speed
            if stop is None:
                await anyio.sleep(delay)
            else:
                with anyio.move_on_after(delay):
                    await stop.wait()


def main() -> None:
    """`python -m publishers.demo`: only the simulated services (compose's `demo` container)."""
    import os

    from healthbus.config import Config

    config = Config.load(os.environ)
    anyio.run(run_demo, config.redis_url or "redis://127.0.0.1:6379/0", config.namespace)


if __name__ == "__main__":
    main()
