"""Hot standby and fencing with real `healthbus aggregator` processes.

One scenario, heartbeats flowing throughout: the leader is SIGKILLed and the standby must
commit within the lease TTL + 1 s; then the new leader is SIGSTOPped past its TTL, a third
process takes over, and the paused one is resumed: none of its writes may land. Across both,
the transitions stream must equal a pure fold of the heartbeats (none lost, none repeated).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from healthbus.config import Config
from healthbus.schema import Meta
from tests.ground_truth import assert_matches_pure_fold, caught_up, heartbeat, meta
from tests.support import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.fault]

LEASE_TTL_S = 2.0
#: The acceptance bound: from the leader's death to the standby's first commit.
TAKEOVER_BOUND_S = LEASE_TTL_S + 1.0
#: The heartbeat load: bounded in count, and in time by the scenario's own deadlines.
MAX_HEARTBEATS = 5000
SERVICES = 8


class Aggregators:
    """`healthbus aggregator` processes by name, each logging to a file of its own."""

    def __init__(self, config: Config, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        assert self.config.redis_url
        env = {**os.environ, "HEALTHBUS_LEASE_TTL_S": str(LEASE_TTL_S)}
        with (self.logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "healthbus.cli", "aggregator", "--name", name,
                 "--redis-url", self.config.redis_url, "--namespace", self.config.namespace,
                 "--log-level", "info"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait()


@contextmanager
def aggregators(config: Config, logs: Path) -> Iterator[Aggregators]:
    group = Aggregators(config, logs)
    try:
        yield group
    finally:
        group.close()


async def standing_by(redis: aioredis.Redis, n: int) -> bool:
    """True when `n` aggregator clients are connected (leader and standbys)."""
    clients: Any = await redis.client_list()
    return sum(c.get("name") == "healthbus-aggregator" for c in clients) >= n


async def led_by(redis: aioredis.Redis, config: Config, name: str, after: int = 0) -> Meta | None:
    m = await meta(redis, config)
    return m if m is not None and m.leader == name and m.epoch > after else None


async def publish(redis: aioredis.Redis, config: Config, stop: anyio.Event) -> None:
    """Heartbeats of a few services that fail and recover in turn, until `stop` or the cap."""
    for n in range(MAX_HEARTBEATS):
        if stop.is_set():
            return
        fail = (n // SERVICES) % 5 == n % SERVICES % 5
        fields = heartbeat(f"svc{n % SERVICES}", ok=not fail, error="boom" if fail else None)
        await redis.xadd(config.keys.heartbeats, fields)
        await anyio.sleep(0.005)


async def test_standby_takes_over_in_time_and_a_paused_leader_writes_nothing(
    redis: aioredis.Redis, config: Config, tmp_path: Path
) -> None:
    seen: list[tuple[str, int]] = []

    async def watch(done: anyio.Event) -> None:
        """The (leader, epoch) of `_meta` each time it changes, read once more after `done`.

        The last read follows `done`: a leadership that began just before it is never missed.
        """
        while True:
            m = await meta(redis, config)
            if m is not None and (not seen or seen[-1] != (m.leader, m.epoch)):
                seen.append((m.leader, m.epoch))
            if done.is_set():
                return
            await anyio.sleep(0.005)

    with aggregators(config, tmp_path) as group:
        group.start("a")
        first = await wait_until(lambda: led_by(redis, config, "a"), timeout=20)
        group.start("b")
        await wait_until(lambda: standing_by(redis, 2), timeout=20)
        stop, done = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as watching:
            watching.start_soon(watch, done)
            async with anyio.create_task_group() as publishing:
                publishing.start_soon(publish, redis, config, stop)
                await wait_until(lambda: _has_transitions(redis, config, 3))

                # 1. SIGKILL the leader: the standby commits within TTL + 1 s.
                group.processes["a"].kill()
                killed = time.monotonic()
                second = await wait_until(
                    lambda: led_by(redis, config, "b", first.epoch), timeout=4 * TAKEOVER_BOUND_S
                )
                took = time.monotonic() - killed
                assert took <= TAKEOVER_BOUND_S, f"the standby took {took:.2f} s to commit"

                # 2. SIGSTOP the new leader past its TTL; a third takes over; resume the paused one.
                group.start("c")
                await wait_until(lambda: standing_by(redis, 2), timeout=20)
                group.processes["b"].send_signal(signal.SIGSTOP)
                # Work it will find on waking: a new service, whose `appeared` must not repeat.
                await redis.xadd(config.keys.heartbeats, heartbeat("during-pause"))
                third = await wait_until(
                    lambda: led_by(redis, config, "c", second.epoch), timeout=4 * TAKEOVER_BOUND_S
                )
                await wait_until(lambda: redis.hget(config.keys.snapshot, "during-pause"))
                group.processes["b"].send_signal(signal.SIGCONT)
                await wait_until(lambda: _logged(group, "b", "lost the leader lease"), timeout=10)
                stop.set()
            last = (await redis.xrevrange(config.keys.heartbeats, count=1))[0][0].decode()
            await wait_until(lambda: caught_up(redis, config, last), timeout=20)
            done.set()
        final = await meta(redis, config)
        assert final is not None and (final.leader, final.epoch) == ("c", third.epoch)
        assert group.processes["b"].poll() is None, "the resumed leader should stand by"
    # Each leadership wrote `_meta` with its own epoch, and the paused one never again.
    assert seen == [("a", first.epoch), ("b", second.epoch), ("c", third.epoch)]
    await assert_matches_pure_fold(redis, config)


async def _has_transitions(redis: aioredis.Redis, config: Config, n: int) -> bool:
    return int(await redis.xlen(config.keys.transitions)) >= n


async def _logged(group: Aggregators, name: str, needle: str) -> bool:
    return needle in group.log(name)
