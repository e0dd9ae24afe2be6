"""`healthbus web --workers 4`: many SSE clients over several uvicorn worker processes.

Connections land on workers as the kernel hands them out. Every client must see every
transition in the one order of the transitions stream, a client that reconnects with
`Last-Event-ID` (to whichever worker) must miss nothing, and each worker must hold a few
Redis connections of its own however many clients it serves.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from anyio.abc import TaskStatus

from aggregator import Aggregator
from healthbus.config import Config
from healthbus.embedded import free_port
from tests.ground_truth import heartbeat, transitions
from tests.support import stop_process, wait_until
from tests.webserver import SSEReader, deliveries, open_stream

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WORKERS = 4
CLIENTS = 40
SERVICES = 10


@pytest.fixture
def config(config: Config) -> Config:
    """Every round flips every service: after ten or so flips flap detection would hold
    them (one `flapping` instead of a transition a flip), which is not what is tested here."""
    return config.replace(flap_high_pct=0)


@contextmanager
def web_workers(
    config: Config, workers: int, path: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`healthbus web --workers N` on a free loopback port, with `path` first on its
    PYTHONPATH; yields its URL and process."""
    assert config.redis_url
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEALTHBUS_", "_HEALTHBUS"))}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "healthbus.cli", "web", "--workers", str(workers),
         "--port", str(port), "--redis-url", config.redis_url, "--namespace", config.namespace],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop_process(process, timeout=20)


async def web_clients(redis: aioredis.Redis) -> int:
    clients: Any = await redis.client_list()
    return sum(c.get("name") == "hb-web" for c in clients)


def connections_per_worker(parent: int, port: int) -> dict[int, int]:
    """Established connections to `port` held by each child process of `parent` (/proc)."""
    local = f":{port:04X}"
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(local) and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    counts: dict[int, int] = {}
    for pid in map(int, children):
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held += 1
        counts[pid] = held
    return counts


async def publish_rounds(redis: aioredis.Redis, config: Config, rounds: range) -> str:
    """Every service flips each round (appeared, error, recovered, error, …); returns the
    last entry id."""
    last = b""
    for round_ in rounds:
        for i in range(SERVICES):
            fail = round_ % 2 == 1
            fields = heartbeat(f"s{i}", ok=not fail, error="down" if fail else None)
            last = await redis.xadd(config.keys.heartbeats, fields)
    return last.decode()


async def read_transitions(sse: SSEReader, n: int) -> list[str]:
    ids: list[str] = []
    while len(ids) < n:
        event = await sse.next(timeout=20)
        assert event.event != "snapshot", "a connected client must not need a new snapshot"
        if event.event == "transition":
            ids.append(event.json()["id"])
    return ids


async def test_forty_clients_over_four_workers_see_every_transition_in_order(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    limits = httpx.Limits(max_connections=CLIENTS + 10)
    with web_workers(config, WORKERS) as (url, process):
        await wait_until(lambda: _at_least(web_clients(redis), WORKERS), timeout=60)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            results: dict[int, list[str]] = {}
            rounds = 4

            async def subscriber(k: int, *, task_status: TaskStatus[None]) -> None:
                async with open_stream(client, url) as sse:
                    assert (await sse.next(timeout=20)).event == "snapshot"
                    task_status.started()
                    results[k] = await read_transitions(sse, rounds * SERVICES)

            async with anyio.create_task_group() as tg:
                for k in range(CLIENTS):
                    # One at a time: a burst of connects is taken by whichever worker wakes
                    # first (asyncio accepts a whole backlog at once), one by one they spread.
                    await tg.start(subscriber, k)
                spread = connections_per_worker(process.pid, int(url.rsplit(":", 1)[1]))
                readers = await web_clients(redis)
                await publish_rounds(redis, config, range(rounds))
        expected = [t.id for t in await transitions(redis, config)]
    assert len(expected) == rounds * SERVICES
    assert len(results) == CLIENTS
    assert all(ids == expected for ids in results.values()), "some client saw another order"
    # Spread over the workers by the kernel (uvicorn's other child, a tracker, holds none).
    assert sum(spread.values()) == CLIENTS, spread
    assert sum(1 for n in spread.values() if n) >= 2, f"all clients on one worker: {spread}"
    # One reader per worker (plus the odd pooled connection), not one per client.
    assert WORKERS <= readers <= 3 * WORKERS, readers


async def test_httptools_beside_it_is_never_used(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config, tmp_path: Path
) -> None:
    """uvicorn prefers httptools when it can import it (`uvicorn[standard]` brings it), and
    behind httptools the fan-out cannot write to idle connections itself. Here an httptools
    that fails on import sits first on the path: `healthbus web` serves with h11 all the same,
    and events reach an idle client by the direct path."""
    (tmp_path / "httptools").mkdir()
    (tmp_path / "httptools" / "__init__.py").write_text(
        'raise RuntimeError("healthbus web imported httptools")\n'
    )
    with web_workers(config, 1, path=tmp_path) as (url, _):
        await wait_until(lambda: _at_least(web_clients(redis), 1), timeout=60)
        async with httpx.AsyncClient(timeout=30) as client, open_stream(client, url) as sse:
            assert (await sse.next(timeout=20)).event == "snapshot"
            await publish_rounds(redis, config, range(2))
            assert len(await read_transitions(sse, 2 * SERVICES)) == 2 * SERVICES

            async def direct() -> int:
                return (await deliveries(client, url)).get("direct", 0)

            assert await wait_until(direct, timeout=20) > 0


async def test_reconnecting_with_last_event_id_to_any_worker_misses_nothing(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    published = 0

    async def flip() -> None:
        nonlocal published
        await publish_rounds(redis, config, range(published, published + 1))
        published += 1

    attempts = 16
    seen: list[str] = []
    last_id: str | None = None
    workers_used: list[int] = []
    with web_workers(config, WORKERS) as (url, process):
        await wait_until(lambda: _at_least(web_clients(redis), WORKERS), timeout=60)
        for attempt in range(attempts):
            headers = {"Last-Event-ID": last_id} if last_id else {}
            # A new client each time: a new connection, on whichever worker the kernel picks.
            async with (
                httpx.AsyncClient(timeout=30) as client,
                open_stream(client, url, headers=headers) as sse,
            ):
                workers_used.append(_serving(process.pid, url))
                if last_id is None:
                    snapshot = await sse.next(timeout=20)
                    assert snapshot.event == "snapshot" and snapshot.id
                await flip()
                # What was missed while away comes first, then this round; leave on an id.
                while True:
                    event = await sse.next(timeout=20)
                    assert event.event != "snapshot", f"attempt {attempt} resumed with a snapshot"
                    if event.event == "transition":
                        seen.append(event.json()["id"])
                    if event.id is not None and len(seen) >= published * SERVICES:
                        last_id = event.id
                        break
            moved = any(a != b for a, b in itertools.pairwise(workers_used))
            if attempt >= 3 and moved:
                break
            await flip()  # while no client is connected: the next must get it by its id
        expected = [t.id for t in await transitions(redis, config)]
    assert moved, f"every reconnection landed on the same worker: {workers_used}"
    assert len(expected) == published * SERVICES
    assert seen == expected


async def _at_least(count: Any, n: int) -> bool:
    return int(await count) >= n


def _serving(parent: int, url: str) -> int:
    """The worker holding the one open client connection."""
    spread = connections_per_worker(parent, int(url.rsplit(":", 1)[1]))
    (pid,) = [pid for pid, n in spread.items() if n]
    return pid
