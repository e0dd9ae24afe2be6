"""A real docket worker runs a `@heartbeat` Perpetual task against the test's own Redis.

Docket finds its dependencies (`Perpetual`, `CurrentExecution`, …) by inspecting the task's
signature, so this is the check that the decorator keeps it: the worker must inject the
Perpetual, reschedule after a failed run, and each run must publish one heartbeat.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from docket import Docket, Perpetual, Worker

from healthbus.config import Config
from healthbus.schema import Heartbeat, decode_heartbeat
from publishers import Publisher, current_iteration, heartbeat
from tests.support import wait_until_sync

pytestmark = pytest.mark.anyio

FAST = timedelta(milliseconds=10)
#: Docket reads the schedule from the parameter default (a fresh copy per run).
EVERY_50MS = Perpetual(every=timedelta(milliseconds=50))


@pytest.fixture
def publisher(config: Config) -> Iterator[Publisher]:
    with Publisher.from_config(config, instance="docket-worker-1", flush_interval_s=0.01) as p:
        yield p


def beats(config: Config, service: str) -> list[Heartbeat]:
    assert config.redis_url
    with redis.Redis.from_url(config.redis_url) as client:
        entries = client.xrange(config.keys.heartbeats)
    return [hb for _, f in entries if (hb := decode_heartbeat(f[b"m"])).service == service]


async def test_a_perpetual_task_publishes_one_heartbeat_per_run(
    config: Config, publisher: Publisher
) -> None:
    runs: list[Perpetual] = []

    @heartbeat(service="schedule_deployments", interval=0.05, publisher=publisher)
    async def schedule_deployments(
        perpetual: Perpetual = EVERY_50MS,
    ) -> dict[str, int]:
        runs.append(perpetual)
        current_iteration().set(run=len(runs))
        if len(runs) == 2:
            raise RuntimeError("postgres unreachable")
        return {"runs_scheduled": 10 * len(runs)}

    assert config.redis_url
    async with Docket(name=f"docket-{config.namespace}", url=config.redis_url) as docket:
        docket.register(schedule_deployments)
        execution = await docket.add(schedule_deployments)()
        async with Worker(
            docket, minimum_check_interval=FAST, scheduling_resolution=FAST
        ) as worker:
            await worker.run_at_most({execution.key: 3})

    assert len(runs) == 3
    # Injected by the worker: its own Perpetual per run, not the default object itself.
    assert all(isinstance(p, Perpetual) and p is not EVERY_50MS for p in runs)
    published = wait_until_sync(
        lambda: (found := beats(config, "schedule_deployments")) and len(found) == 3 and found
    )
    assert [hb.ok for hb in published] == [True, False, True]
    assert [hb.details for hb in published] == [
        {"run": 1, "runs_scheduled": 10},
        {"run": 2},
        {"run": 3, "runs_scheduled": 30},
    ]
    assert published[1].error == "RuntimeError: postgres unreachable"
    assert all(hb.duration_ms is not None and hb.duration_ms >= 0 for hb in published)
    assert {hb.instance for hb in published} == {"docket-worker-1"}
