"""The aggregator against a real Redis: commits, transitions, dead letters, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis

from aggregator import Aggregator
from aggregator.rules import Rules
from healthbus.config import Config
from healthbus.schema import Meta, ServiceView, Update, encode
from tests.ground_truth import assert_matches_pure_fold, caught_up, heartbeat, meta, transitions
from tests.support import wait_until

pytestmark = pytest.mark.anyio


async def test_heartbeat_reaches_snapshot_and_updates(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    raw = b'{"v":1,"service":"nightly_backup","interval_s":86400,"ok":true}'
    entry = await redis.xadd(config.keys.heartbeats, {"m": raw}, maxlen=1_000_000, approximate=True)
    view_raw = await wait_until(lambda: redis.hget(config.keys.snapshot, "nightly_backup"), 1.0)
    view = msgspec.json.decode(view_raw, type=ServiceView)
    assert (view.status, view.kind, view.expected_interval_seconds) == (
        "healthy",
        "perpetual",
        86400,
    )
    m = await wait_until(lambda: meta(redis, config))
    assert m.as_of == entry.decode() and m.seq >= 1 and m.leader == aggregator.name
    (update_id, fields), *_ = await redis.xrange(config.keys.updates)
    update = msgspec.json.decode(fields[b"m"], type=Update)
    assert [s.name for s in update.services] == ["nightly_backup"]
    assert [t.event for t in update.transitions] == ["healthbus.service.appeared"]
    assert m.update_id == update_id.decode()


async def test_silence_degrades_then_errors_and_recovery(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    entry = await redis.xadd(config.keys.heartbeats, heartbeat("tick", interval_s=1))
    last_ms = int(entry.split(b"-")[0])

    async def events() -> list[str]:
        return [t.event.rsplit(".", 1)[1] for t in await transitions(redis, config)]

    await wait_until(lambda: _has(events, "error"), timeout=10)
    ts = await transitions(redis, config)
    stamps = {t.event.rsplit(".", 1)[1]: t.at_ms - last_ms for t in ts}
    assert [t.to for t in ts] == ["healthy", "degraded", "error"]
    assert 2000 <= stamps["degraded"] <= 3000
    assert 5000 <= stamps["error"] <= 6000
    assert "no heartbeat" in ts[-1].reason
    await redis.xadd(config.keys.heartbeats, heartbeat("tick", interval_s=1))
    await wait_until(lambda: _has(events, "recovered"))
    recovered = (await transitions(redis, config))[-1]
    assert recovered.incident == ts[1].incident == ts[2].incident


async def _has(events: Any, name: str) -> bool:
    return name in await events()


async def test_failure_is_error_at_once(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    await redis.xadd(config.keys.heartbeats, heartbeat("job", ok=False, error="disk full"))
    ts = await wait_until(lambda: transitions(redis, config), 1.0)
    assert (ts[0].event, ts[0].from_, ts[0].to) == ("healthbus.service.error", "unknown", "error")
    assert "disk full" in ts[0].reason


BIG = "x" * 100_000
HOSTILE: list[dict[str, Any]] = [
    {"m": b"{not json"},
    {"m": encode({"v": 1, "service": "typed", "interval_s": "often", "ok": True})},
    {"m": encode({"v": 1, "service": "evil\n\nevent: x", "interval_s": 1, "ok": True})},
    {"m": encode({"v": 1, "service": "big", "interval_s": 1, "ok": True, "details": {"k": BIG}})},
    {"m": encode({"v": 9, "service": "future", "interval_s": 1, "ok": True})},
    {"other": b"no m field"},
]  # fmt: skip


@pytest.mark.fault
async def test_hostile_entries_are_dead_lettered_and_fold_goes_on(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    for fields in HOSTILE:
        await redis.xadd(config.keys.heartbeats, fields)
    await redis.xadd(config.keys.heartbeats, heartbeat("fine", extra_future_key={"a": 1}))
    await wait_until(lambda: redis.hget(config.keys.snapshot, "fine"))
    dead = await wait_until(
        lambda: _len_at_least(redis, config.keys.deadletters, len(HOSTILE)), 2.0
    )
    reasons = [f[b"reason"].decode() for _, f in dead]
    assert len(reasons) == len(HOSTILE)
    assert any("interval_s" in r for r in reasons) and any("no field 'm'" in r for r in reasons)
    assert any("unknown major version v=9" in r for r in reasons)
    big = next(f for _, f in dead if b"8192" in f[b"reason"])
    assert len(big[b"f:m"]) == 1024 and int(big[b"len:m"]) > 100_000
    # A reject naming a valid service marks it broken; an unknown version does not.
    for name in ("typed", "big"):
        view = msgspec.json.decode(await redis.hget(config.keys.snapshot, name), type=ServiceView)
        assert view.status == "error" and view.error
    assert await redis.hget(config.keys.snapshot, "future") is None
    assert (await meta(redis, config) or pytest.fail("no meta")).invalid == len(HOSTILE)


async def _len_at_least(redis: aioredis.Redis, key: str, n: int) -> list[Any] | None:
    rows = await redis.xrange(key)
    return rows if len(rows) >= n else None


async def test_snapshot_refreshes_while_idle(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    first = await wait_until(lambda: meta(redis, config))
    later = await wait_until(lambda: _newer(redis, config, first.updated_at_ms))
    assert later.seq == first.seq  # a refresh is not a change


async def _newer(redis: aioredis.Redis, config: Config, ms: int) -> Meta | None:
    m = await meta(redis, config)
    return m if m and m.updated_at_ms > ms else None


def _spawn(config: Config) -> subprocess.Popen[bytes]:
    assert config.redis_url
    return subprocess.Popen(
        [sys.executable, "-m", "healthbus.cli", "aggregator", "--redis-url", config.redis_url,
         "--namespace", config.namespace],
        env={**os.environ, "HEALTHBUS_LEASE_TTL_S": "1"},
    )  # fmt: skip


@pytest.mark.fault
@pytest.mark.slow
async def test_killed_aggregator_neither_loses_nor_repeats_transitions(
    redis: aioredis.Redis, config: Config
) -> None:
    """SIGKILL mid-stream, restart: the transitions equal a pure fold of the same entries."""
    first = _spawn(config)
    try:
        await wait_until(lambda: meta(redis, config))
        for round_ in range(30):
            for i in range(20):
                fail = (round_ + i) % 3 == 0
                await redis.xadd(
                    config.keys.heartbeats,
                    heartbeat(f"svc{i}", ok=not fail, error="x" if fail else None),
                )
            if round_ == 10:
                await wait_until(lambda: transitions(redis, config))
                first.send_signal(signal.SIGKILL)
                first.wait()
    finally:
        first.kill()
        first.wait()
    second = _spawn(config)
    try:
        last = (await redis.xrevrange(config.keys.heartbeats, count=1))[0][0].decode()
        await wait_until(lambda: caught_up(redis, config, last), timeout=20)
    finally:
        second.terminate()
        second.wait()
    await assert_matches_pure_fold(redis, config)


async def test_freshness_is_coalesced_into_few_updates(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    """200 heartbeats: one update at once (appeared), the rest folded into ~1/s flushes."""
    for i in range(100):
        await redis.xadd(config.keys.heartbeats, heartbeat("busy", duration_ms=float(i)))
    for _ in range(100):
        last = await redis.xadd(config.keys.heartbeats, heartbeat("quiet"))
    last_ms = int(last.split(b"-")[0])

    async def flushed() -> list[Update] | None:
        rows = await redis.xrange(config.keys.updates)
        updates = [msgspec.json.decode(f[b"m"], type=Update) for _, f in rows]
        busy = [s for u in updates for s in u.services if s.name == "busy"]
        quiet = [u.fresh.get("quiet") for u in updates]
        done = busy and busy[-1].last_duration_ms == 99.0 and last_ms in quiet
        return updates if done else None

    updates = await wait_until(flushed, timeout=5)
    assert len(updates) <= 6, [u.seq for u in updates]
    assert [u.seq for u in updates] == sorted({u.seq for u in updates})


@pytest.mark.fault
async def test_past_max_services_new_names_are_dead_lettered(
    redis: aioredis.Redis, config: Config
) -> None:
    agg = Aggregator(config.replace(max_services=2))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agg.run)
        await agg.is_leader.wait()
        for name in ("a", "b", "c"):
            await redis.xadd(config.keys.heartbeats, heartbeat(name))
        await redis.xadd(config.keys.heartbeats, {"m": b'{"v":1,"service":"d","ok":1}'})
        await redis.xadd(config.keys.heartbeats, heartbeat("a", ok=False))
        dead = await wait_until(lambda: _len_at_least(redis, config.keys.deadletters, 2))
        await wait_until(lambda: _status_is(redis, config, "a", "error"))
        tg.cancel_scope.cancel()
    reasons = [f[b"reason"] for _, f in dead]
    assert reasons[0].startswith(b"already tracking max_services=2"), reasons
    assert await redis.hget(config.keys.snapshot, "c") is None


async def _status_is(redis: aioredis.Redis, config: Config, name: str, status: str) -> bool:
    raw = await redis.hget(config.keys.snapshot, name)
    return raw is not None and msgspec.json.decode(raw, type=ServiceView).status == status


class _Crash(Exception):
    """The aggregator dies between two parts of one commit."""


class _DiesBetweenParts(Aggregator):
    """Commits the first part that carries transitions, then dies before the next one."""

    committed = 0

    async def _commit(self, client: Any, part: Any, cursor: str, trim: bool) -> None:
        if part.transitions:
            if self.committed:
                raise _Crash
            self.committed += 1
        await super()._commit(client, part, cursor, trim)


async def test_a_crash_between_the_parts_of_a_commit_repeats_nothing(
    redis: aioredis.Redis, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read committed in parts carries the cursor in its last part only: the next leader
    reads the earlier parts' entries again, and must fold none of them twice."""
    import aggregator.commit
    from tests.ground_truth import pure_fold

    monkeypatch.setattr(aggregator.commit, "MAX_SERVICES", 3)
    for ok in (False, True):  # every service fails and recovers within one read
        for i in range(10):
            await redis.xadd(config.keys.heartbeats, heartbeat(f"s{i}", ok=ok))
    last = (await redis.xrevrange(config.keys.heartbeats, count=1))[0][0].decode()
    with pytest.raises(BaseExceptionGroup) as crashed:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_DiesBetweenParts(config).run)
    assert crashed.group_contains(_Crash)
    assert await transitions(redis, config), "the first part was committed"

    async with anyio.create_task_group() as tg:
        tg.start_soon(Aggregator(config).run)
        await wait_until(lambda: caught_up(redis, config, last))
        tg.cancel_scope.cancel()
    expected = pure_fold(await redis.xrange(config.keys.heartbeats), Rules.from_config(config))
    actual = [t.id for t in await transitions(redis, config)]
    assert sorted(actual) == sorted(expected) and len(set(actual)) == len(actual)
