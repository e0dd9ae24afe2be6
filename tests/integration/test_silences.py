"""Silences end to end: `/api/silences` and `healthbus silence` write commands, the running
aggregator folds them, and the transitions of silenced services are marked, never hidden."""

from __future__ import annotations

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from aggregator import Aggregator
from aggregator.fold import Folder
from aggregator.intake import order_key
from aggregator.rules import Rules
from aggregator.state import FoldState
from healthbus.cli import main
from healthbus.commands import decode_command
from healthbus.config import Config
from healthbus.schema import Transition, decode_heartbeat, encode
from healthbus.web.app import create_app
from tests.ground_truth import caught_up, heartbeat, transitions
from tests.support import wait_until
from tests.webserver import serve


async def _of(redis: aioredis.Redis, config: Config, service: str, n: int) -> list[Transition]:
    async def enough() -> list[Transition] | None:
        mine = [t for t in await transitions(redis, config) if t.service == service]
        return mine if len(mine) >= n else None

    return await wait_until(enough)


@pytest.mark.anyio
async def test_a_silence_from_the_api_marks_transitions_and_never_hides_a_resolve(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config, client: httpx.AsyncClient
) -> None:
    hb = config.keys.heartbeats
    for name in ("db-main", "api"):
        await redis.xadd(hb, heartbeat(name))
    with serve(create_app(config)) as url:
        made = await client.post(
            url + "/api/silences",
            json={"match": "db-*", "duration_s": 3600, "comment": "upgrade"},
        )
        assert made.status_code == 201, made.text
        silence = made.json()
        listed = (await client.get(url + "/api/silences")).json()["silences"]
        assert [(s["id"], s["match"], s["active"]) for s in listed] == [
            (silence["id"], "db-*", True)
        ]
        bad = await client.post(url + "/api/silences", json={"match": "x"})
        assert bad.status_code == 400 and "duration_s or until" in bad.json()["error"]

        async def folded() -> bool:
            return bool(await redis.hget(config.keys.state, "_commands"))

        await wait_until(folded)
        await redis.xadd(hb, heartbeat("db-main", ok=False, error="disk full"))
        await redis.xadd(hb, heartbeat("api", ok=False, error="no db"))
        await redis.xadd(hb, heartbeat("db-main"))
        db = await _of(redis, config, "db-main", 3)
        api = await _of(redis, config, "api", 2)
        assert [(t.to, t.silenced) for t in db] == [
            ("healthy", False),  # before the silence
            ("error", True),
            ("healthy", True),  # the resolve is recorded, marked
        ]
        assert [(t.to, t.silenced) for t in api] == [("healthy", False), ("error", False)]

        gone = await client.delete(url + "/api/silences", params={"id": silence["id"]})
        assert gone.status_code == 200
        assert (await client.get(url + "/api/silences")).json()["silences"] == []
        unknown = await client.delete(url + "/api/silences", params={"id": "nope"})
        assert unknown.status_code == 404
    await wait_until(lambda: _no_silences(redis, config))
    await redis.xadd(hb, heartbeat("db-main", ok=False))
    db = await _of(redis, config, "db-main", 4)
    assert (db[-1].to, db[-1].silenced) == ("error", False)


async def _no_silences(redis: aioredis.Redis, config: Config) -> bool:
    raw = await redis.hget(config.keys.state, "_commands")
    return raw is not None and b'"silences":{}' in raw


def test_the_cli_adds_lists_and_removes_silences(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert config.redis_url
    common = ["--redis-url", config.redis_url, "--namespace", config.namespace]
    assert main(["silence", "add", "worker-*", "--for", "2h", "--id", "deploy", *common]) == 0
    assert "silenced 'worker-*'" in capsys.readouterr().out
    assert main(["silence", "list", *common]) == 0
    assert "deploy" in capsys.readouterr().out
    assert main(["silence", "remove", "deploy", *common]) == 0
    assert main(["silence", "remove", "deploy", *common]) == 1
    assert main(["silence", "add", "x", "--for", "soon", *common]) == 1
    with redis.Redis.from_url(config.redis_url) as client:
        assert len(client.xrange(config.keys.commands)) == 2


@pytest.mark.anyio
async def test_commands_interleaved_with_heartbeats_fold_as_a_pure_replay_does(
    aggregator: Aggregator, redis: aioredis.Redis, config: Config
) -> None:
    """Silences sent between heartbeats mark exactly what a merge of the two streams by
    entry time marks, however the aggregator's reads fell."""
    hb, commands = config.keys.heartbeats, config.keys.commands
    until = "2100-01-01T00:00:00Z"
    for i in range(60):
        await redis.xadd(hb, heartbeat(f"svc{i % 4}", ok=i % 3 != 0))
        if i % 7 == 0:
            cmd = {"v": 1, "op": "silence", "id": f"s{i}", "match": f"svc{i % 4}", "until": until}
            await redis.xadd(commands, {"m": encode(cmd)})
        if i % 11 == 0:
            await redis.xadd(commands, {"m": encode({"v": 1, "op": "unsilence", "id": "s0"})})
    last = (await redis.xrevrange(hb, count=1))[0][0].decode()
    await wait_until(lambda: caught_up(redis, config, last))
    await wait_until(lambda: _commands_folded(redis, config))

    merged = [(order_key(i.decode(), False), False, f) for i, f in await redis.xrange(hb)]
    merged += [(order_key(i.decode(), True), True, f) for i, f in await redis.xrange(commands)]
    folder = Folder(FoldState(), Rules.from_config(config))
    expected: list[tuple[str, bool]] = []
    for (ms, _, _), is_command, fields in sorted(merged, key=lambda e: e[0]):
        if is_command:
            out = folder.command(decode_command(fields[b"m"]), ms, f"{ms}-0")
        else:
            out = folder.apply(decode_heartbeat(fields[b"m"]), ms)
        expected += [(t.id, t.silenced) for t in out]
    actual = [(t.id, t.silenced) for t in await transitions(redis, config)]
    assert actual == expected and any(s for _, s in actual)


async def _commands_folded(redis: aioredis.Redis, config: Config) -> bool:
    last = (await redis.xrevrange(config.keys.commands, count=1))[0][0].decode()
    raw = await redis.hget(config.keys.state, "_commands")
    return raw is not None and f'"cursor":"{last}"'.encode() in raw
