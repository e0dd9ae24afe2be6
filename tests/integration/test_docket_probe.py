"""The docket probe against a real docket worker running perpetual tasks on the test's Redis:
each task healthy while it keeps its cadence, degraded while the worker's only slot is taken
by a long task, and in error with the message when its run raises (seen live, through the
aggregator)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from docket import Docket, Perpetual, Worker

from aggregator import Aggregator
from healthbus.cli import main
from healthbus.client import HealthBus
from healthbus.config import Config
from healthbus.schema import ServiceView
from publishers.probes import ProbeResult, check_once, parse_probes, serve_probes
from publishers.probes.docket_probe import DocketProbe
from tests.support import wait_until

pytestmark = pytest.mark.anyio

FAST = timedelta(milliseconds=10)
#: Docket reads a task's schedule from its parameter default; automatic: its key is its name.
EVERY_200MS = Perpetual(every=timedelta(seconds=0.2), automatic=True)
EVERY_300MS = Perpetual(every=timedelta(seconds=0.3), automatic=True)
EVERY_500MS = Perpetual(every=timedelta(seconds=0.5), automatic=True)


def docket_probe(
    config: Config, docket: Docket, tasks: dict[str, float], extra: str = ""
) -> DocketProbe:
    listed = "\n".join(f"{key} = {every}" for key, every in tasks.items())
    [probe] = parse_probes(
        f"""
[[probe]]
name = "jobs"
type = "docket"
url = "{config.redis_url}"
docket = "{docket.name}"
interval = 0.2
timeout = 0.2
degraded_ms = 5000
error_ms = 5000
{extra}
[probe.tasks]
{listed}
""",
        "probes.toml",
        {},
    )
    assert isinstance(probe, DocketProbe)
    return probe


@asynccontextmanager
async def docket_of(config: Config) -> AsyncIterator[Docket]:
    assert config.redis_url
    name = f"docket-{config.namespace}"
    async with Docket(name=name, url=config.redis_url, heartbeat_interval=FAST * 10) as docket:
        yield docket


@asynccontextmanager
async def working(docket: Docket, concurrency: int = 10) -> AsyncIterator[Worker]:
    async with (
        Worker(
            docket,
            concurrency=concurrency,
            minimum_check_interval=FAST,
            scheduling_resolution=FAST,
        ) as worker,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(worker.run_forever)
        yield worker
        tg.cancel_scope.cancel()


async def test_each_perpetual_task_is_healthy_while_it_keeps_its_cadence(config: Config) -> None:
    runs = {"tick": 0, "tock": 0}

    async def tick(
        perpetual: Perpetual = EVERY_300MS,
    ) -> None:
        runs["tick"] += 1

    async def tock(
        perpetual: Perpetual = EVERY_500MS,
    ) -> None:
        runs["tock"] += 1

    async with docket_of(config) as docket:
        docket.register(tick)
        docket.register(tock)
        probe = docket_probe(config, docket, {"tick": 0.3, "tock": 0.5})
        async with working(docket):
            await wait_until(lambda: _true(runs["tick"] >= 2 and runs["tock"] >= 2))
            result = await wait_until(lambda: _checked(probe, "healthy", "tick", "tock"))

    assert result.status == "healthy" and result.error is None
    assert result.details["workers"] == 1 and result.details["docket"] == docket.name
    tick_result = result.parts["tick"]
    assert tick_result.details["every_s"] == 0.3
    assert tick_result.details["state"] in ("scheduled", "queued", "running")
    assert isinstance(tick_result.details["runs"], int) and tick_result.details["runs"] >= 2
    assert tick_result.details["workers"] == 1


async def test_a_starved_worker_leaves_its_perpetual_task_degraded(config: Config) -> None:
    """concurrency=1 and a long task in the only slot: the perpetual task waits in the stream
    past twice its period; once the slot is free again, it is healthy again."""
    beats = 0
    release = anyio.Event()

    async def beat(
        perpetual: Perpetual = EVERY_200MS,
    ) -> None:
        nonlocal beats
        beats += 1

    async def hog() -> None:
        with anyio.fail_after(30):
            await release.wait()

    async with docket_of(config) as docket:
        docket.register(beat)
        docket.register(hog)
        probe = docket_probe(config, docket, {"beat": 0.2}, "error_after = 1000")
        async with working(docket, concurrency=1):
            await wait_until(lambda: _true(beats >= 1))
            await docket.add(hog)()
            starved = await wait_until(lambda: _checked(probe, "degraded", "beat"))
            release.set()
            recovered = await wait_until(lambda: _checked(probe, "healthy", "beat"))

    task = starved.parts["beat"]
    assert task.error is not None and "due" in task.error and "runs every 0.2 s" in task.error
    assert task.hint is not None and "busy" in task.hint
    assert starved.details["running"] == 1 and starved.details["waiting"] == 1
    assert recovered.parts["beat"].error is None


async def test_a_task_that_raises_is_in_error_with_its_message(
    config: Config, aggregator: Aggregator
) -> None:
    """Live mode, end to end: the failure is published on the task's state channel only; the
    probe running under serve_probes hears it, and the aggregator shows `jobs.flaky` in error
    with the message, depending on `jobs`; when the task succeeds again it recovers."""
    failing = True

    async def flaky(
        perpetual: Perpetual = EVERY_200MS,
    ) -> None:
        if failing:
            raise RuntimeError("postgres unreachable")

    async with docket_of(config) as docket, HealthBus.from_config(config) as bus:
        docket.register(flaky)
        probe = docket_probe(config, docket, {"flaky": 0.2})
        async with working(docket), anyio.create_task_group() as tg:
            tg.start_soon(serve_probes, config, [probe])
            broken = await wait_until(lambda: _service(bus, "jobs.flaky", "error", "run failed"))
            failing = False
            await wait_until(lambda: _service(bus, "jobs.flaky", "healthy"))
            docket_view = await wait_until(lambda: _service(bus, "jobs", "healthy"))
            tg.cancel_scope.cancel()

    assert broken.error is not None
    assert "last run failed: RuntimeError: postgres unreachable" in broken.error
    assert broken.kind == "probe" and broken.depends_on == ["jobs"]
    assert broken.details is not None and broken.details["last_run"] == "failed"
    assert docket_view.details is not None and docket_view.details["live"] is True


def test_once_prints_each_task_of_a_docket_with_no_worker(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "probes.toml"
    file.write_text(
        f'[[probe]]\nname = "jobs"\ntype = "docket"\nurl = "{config.redis_url}"\n'
        f'docket = "docket-{config.namespace}"\ntasks = {{ nightly = 86400 }}\n'
    )
    assert main(["probe", "--probes", str(file), "--once"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in out[1:]] == [
        ["jobs", "docket", "error"],
        ["jobs.nightly", "docket", "error"],
    ]
    assert "0 live worker(s), at least 1 expected" in out[1]
    assert "not scheduled: no runs record" in out[2]


async def _true(value: bool) -> bool:
    return value


async def _checked(probe: DocketProbe, status: str, *tasks: str) -> ProbeResult | None:
    result = await check_once(probe)
    holds = (
        all(result.parts[t].status == status for t in tasks) if tasks else result.status == status
    )
    return result if holds else None


async def _service(bus: HealthBus, name: str, status: str, saying: str = "") -> ServiceView | None:
    view = await bus.service(name)
    if view is None or view.status != status or saying not in (view.error or ""):
        return None
    return view
