"""`healthbus aggregator` SIGKILLed at random points, again and again, while heartbeats flow.

Under load the aggregator spends most of its time committing, so random kills land inside
commits (between the parts of a split batch, between a commit's send and its reply). After
each kill, and at the end, what Redis holds must agree with itself and with a pure fold of the
heartbeats (tests/ground_truth.py): the transitions up to the committed cursor are exactly
the pure fold's, none lost, none repeated, and every service in the snapshot has the status
the pure fold gives it at that cursor.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

from aggregator.fold import Folder
from aggregator.rules import Rules
from aggregator.state import FoldState
from healthbus.config import Config
from healthbus.errors import InvalidMessage
from healthbus.schema import ServiceView, decode_heartbeat
from tests.faults.conftest import Figures, Processes
from tests.ground_truth import caught_up, heartbeat, meta
from tests.support import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.fault]

KILLS = 6
#: More services than one commit holds (1 000), and reads of up to 3 000 entries: a read is
#: committed in several parts, each with its own cursor, so kills land between them too.
SERVICES = 1500
READ_COUNT = 3000
BURST = 300
MAX_HEARTBEATS = 80_000
ENV = {"HEALTHBUS_LEASE_TTL_S": "1", "HEALTHBUS_READ_COUNT": str(READ_COUNT)}


async def publish(redis: aioredis.Redis, config: Config, stop: anyio.Event) -> None:
    """Bursts of heartbeats of services that fail and recover in turn; bounded in count."""
    n = 0
    while not stop.is_set() and n < MAX_HEARTBEATS:
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(BURST):
                fail = (n // SERVICES) % 4 == n % SERVICES % 4
                pipe.xadd(
                    config.keys.heartbeats,
                    heartbeat(f"svc{n % SERVICES}", ok=not fail, error="boom" if fail else None),
                )
                n += 1
            await pipe.execute()
        await anyio.sleep(0.05)


class PureFold:
    """The pure fold of the heartbeats stream, advanced to each committed cursor in turn."""

    def __init__(self, config: Config) -> None:
        self.folder = Folder(FoldState(), Rules.from_config(config))
        self.cursor = (0, 0)
        self.transitions: list[str] = []

    def advance(self, heartbeats: list[Any], cursor: tuple[int, int]) -> None:
        for raw_id, fields in heartbeats:
            key = _key(raw_id.decode())
            if key <= self.cursor:
                continue
            if key > cursor:
                break
            try:
                hb = decode_heartbeat(fields[b"m"])
            except InvalidMessage:
                continue
            self.transitions += [t.id for t in self.folder.apply(hb, key[0])]
        self.cursor = cursor


async def consistent_at_cursor(
    redis: aioredis.Redis,
    config: Config,
    truth: PureFold,
    *,
    expire: bool = False,
    final: bool = False,
) -> str:
    """Read the committed state in one transaction and check it against the pure fold of
    the heartbeats up to its cursor; returns the cursor. `expire`: the pure fold's clock
    also goes as far as the committed one (silences were judged by Redis time, past the
    last entry).

    A commit split in parts writes each part's services with their transitions, and only
    the last part moves the cursor: killed between parts, an earlier part's services stand
    ahead of it (the next leader folds none of their entries again). So, unless `final`
    (caught up, nothing split in flight), a service may be ahead of the cursor, as the pure
    fold of the heartbeats read so far has it; every other one is exactly at the cursor."""
    keys = config.keys
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.snapshot)
        pipe.xrange(keys.transitions)
        pipe.xrange(keys.heartbeats, min=f"({truth.cursor[0]}-{truth.cursor[1]}")
        pipe.hget(keys.state, "_fold")
        snapshot, transitions, heartbeats, fold = await pipe.execute()
    m = msgspec.json.decode(snapshot.pop(b"_meta"), type=Any)
    cursor = m["as_of"]
    ahead = copy.deepcopy(truth)
    truth.advance(heartbeats, _key(cursor))
    if expire:
        clock = msgspec.json.decode(fold, type=Any)
        truth.transitions += [
            t.id for t in truth.folder.expire(clock["now_v"] + clock["offset_ms"])
        ]
    decoded = [msgspec.json.decode(f[b"m"], type=Any) for _, f in transitions]
    actual = [t["id"] for t in decoded]
    expected = truth.transitions
    missing = sorted(set(expected) - set(actual))
    repeated = sorted({i for i in actual if actual.count(i) > 1})
    extra = set(actual) - set(expected)
    if extra and not final:
        ahead.advance(heartbeats, _key(heartbeats[-1][0].decode()) if heartbeats else (0, 0))
        extra -= set(ahead.transitions)
    assert (missing[:5], repeated[:5], sorted(extra)[:5]) == ([], [], []), f"at cursor {cursor}"
    mine, theirs, further = (
        per_service(actual),
        per_service(expected),
        per_service(ahead.transitions),
    )
    early = {name for name, ids in mine.items() if ids != theirs.get(name, [])}
    for name in early:  # ahead of the cursor: a prefix of what the heartbeats read lead to
        assert mine[name] == further[name][: len(mine[name])], f"{name} at cursor {cursor}"
    views = {k.decode(): msgspec.json.decode(v, type=ServiceView) for k, v in snapshot.items()}
    folded = {name: svc.status for name, svc in truth.folder.state.services.items()}
    last_to = {t["service"]: t["to"] for t in decoded}
    for name in early:
        folded.pop(name, None)
        if last_to[name] != "unknown":
            folded[name] = last_to[name]
    assert {n: v.status for n, v in views.items()} == folded, f"snapshot at cursor {cursor}"
    assert m["services"] == len(views)
    return str(cursor)


def per_service(ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i in ids:
        out.setdefault(i.split(":", 1)[0], []).append(i)
    return out


def _key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def test_killed_again_and_again_mid_commit_state_never_disagrees(
    redis: aioredis.Redis, config: Config, processes: Processes, figures: Figures
) -> None:
    truth = PureFold(config)
    cursors: list[str] = []
    killer = Killer(redis, config, processes, "a", random.Random(9), (0.05, 1.0))
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(publish, redis, config, stop)
        async for _ in killer.kills():
            cursors.append(await consistent_at_cursor(redis, config, truth))
        stop.set()
    last = (await redis.xrevrange(config.keys.heartbeats, count=1))[0][0].decode()
    await wait_until(lambda: caught_up(redis, config, last), timeout=30)
    cursors.append(await consistent_at_cursor(redis, config, truth, final=True))
    assert len(set(cursors)) == len(cursors)  # the stream moved on between kills
    figures.update(
        kills=KILLS,
        services=SERVICES,
        heartbeats=int(await redis.xlen(config.keys.heartbeats)),
        transitions=len(truth.transitions),
        takeover_s_max=round(max(killer.takeovers), 2),
    )


class Killer:
    """A leader, then KILLS times: a standby, a random pause, SIGKILL of the leader."""

    def __init__(
        self,
        redis: aioredis.Redis,
        config: Config,
        processes: Processes,
        prefix: str,
        rng: random.Random,
        pause: tuple[float, float],
    ) -> None:
        self.redis, self.config, self.processes = redis, config, processes
        self.prefix, self.rng, self.pause = prefix, rng, pause
        self.takeovers: list[float] = []

    async def kills(self) -> AsyncIterator[int]:
        """Yields after each kill, before the standby takes over."""
        redis, config, p = self.redis, self.config, self.prefix
        leader = self.processes.start(f"{p}0", "aggregator", "--name", f"{p}0", env=ENV)
        await wait_until(lambda: _led_by(redis, config, f"{p}0"), timeout=20)
        for k in range(1, KILLS + 1):
            name = f"{p}{k}"
            standby = self.processes.start(name, "aggregator", "--name", name, env=ENV)
            await wait_until(lambda: _standing_by(redis, 2), timeout=20)
            await anyio.sleep(self.rng.uniform(*self.pause))
            leader.kill()
            leader.wait()
            killed = time.monotonic()
            yield k
            await wait_until(lambda n=name: _led_by(redis, config, n), timeout=20)  # type: ignore[misc]
            self.takeovers.append(time.monotonic() - killed)
            leader = standby


async def _standing_by(redis: aioredis.Redis, n: int) -> bool:
    clients: Any = await redis.client_list()
    return sum(c.get("name") == "healthbus-aggregator" for c in clients) >= n


async def _led_by(redis: aioredis.Redis, config: Config, name: str) -> bool:
    m = await meta(redis, config)
    return m is not None and m.leader == name


#: Services that only send fresh heartbeats (a few fail now and then): their rows wait for
#: the 1-second flush, so a kill almost always lands while some rows are behind `as_of`.
FRESH_SERVICES = 300
FRESH_ROUNDS = 400


async def publish_fresh(redis: aioredis.Redis, config: Config, stop: anyio.Event) -> None:
    """Every service every 0.1 s, promising a heartbeat a second (degraded after 2 s), until
    its own last round: one falls silent about every round, so a heartbeat lost in a
    takeover would move its `degraded` transition earlier than the pure fold's."""
    for round_ in range(FRESH_ROUNDS):
        if stop.is_set():
            return
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(FRESH_SERVICES):
                if round_ > 40 + i:
                    continue
                fail = i < 10 and round_ % 20 == 2 * i
                pipe.xadd(
                    config.keys.heartbeats,
                    heartbeat(f"f{i}", interval_s=1, ok=not fail, error="boom" if fail else None),
                )
            await pipe.execute()
        await anyio.sleep(0.1)


class Monotonic:
    """Watches the snapshot: no service's last heartbeat, and not `as_of`, ever goes back."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.as_of = (0, 0)
        self.backwards: list[str] = []
        self.looks = 0

    async def watch(self, redis: aioredis.Redis, config: Config, stop: anyio.Event) -> None:
        while not stop.is_set():
            snapshot: dict[bytes, bytes] = await redis.hgetall(config.keys.snapshot)
            raw_meta = snapshot.pop(b"_meta", None)
            if raw_meta is not None:
                as_of = _key(msgspec.json.decode(raw_meta, type=Any)["as_of"])
                if as_of < self.as_of:
                    self.backwards.append(f"as_of {as_of} after {self.as_of}")
                self.as_of = as_of
            for name, raw in snapshot.items():
                ms = msgspec.json.decode(raw, type=ServiceView).last_heartbeat_ms or 0
                if ms < self.last.get(name.decode(), 0):
                    self.backwards.append(f"{name.decode()}: {ms} after {self.last[name.decode()]}")
                self.last[name.decode()] = max(ms, self.last.get(name.decode(), 0))
            self.looks += 1
            await anyio.sleep(0.03)


async def test_killed_between_flushes_folds_nothing_twice_and_no_heartbeat_goes_back(
    redis: aioredis.Redis, config: Config, processes: Processes
) -> None:
    """Fresh-only rows are written by the 1-second flush, and a new leader reads again from
    the replay position (persist.Replay), skipping what each row already holds: kills
    between flushes lose no freshness, fold nothing twice, and invent no transition."""
    truth = PureFold(config)
    watcher = Monotonic()
    killer = Killer(redis, config, processes, "b", random.Random(11), (0.2, 1.5))
    behind = 0
    stop, done = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(publish_fresh, redis, config, done)
        tg.start_soon(watcher.watch, redis, config, stop)
        async for _ in killer.kills():
            behind += await _replay_behind(redis, config)
            await consistent_at_cursor(redis, config, truth, expire=True)
        done.set()
        last = (await redis.xrevrange(config.keys.heartbeats, count=1))[0][0].decode()
        await wait_until(lambda: caught_up(redis, config, last), timeout=30)
        stop.set()
    await consistent_at_cursor(redis, config, truth, expire=True, final=True)
    assert watcher.backwards == [] and watcher.looks > 10
    assert behind >= KILLS // 2, "the kills should land while rows wait for a flush"
    assert sorted(watcher.last) == sorted(f"f{i}" for i in range(FRESH_SERVICES))
    silent = [t for t in truth.transitions if ":degraded:" in t]
    assert len(silent) >= 5 * KILLS, "services fell silent while the kills went on"


async def _replay_behind(redis: aioredis.Redis, config: Config) -> int:
    """1 when the committed replay position is behind `_meta.as_of` (rows wait for a flush)."""
    from aggregator.persist import load_replay

    rows = {b"_fold": await redis.hget(config.keys.state, "_fold")}
    replay = load_replay(rows)
    m = await meta(redis, config)
    assert replay is not None and m is not None
    return int(_key(replay.cursor) < _key(m.as_of))
