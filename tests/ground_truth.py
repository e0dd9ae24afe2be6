"""The ground truth of a scenario: what a pure fold of the heartbeats stream says the
transitions must be, whatever processes were killed, paused or replaced on the way."""

from __future__ import annotations

from typing import Any

import msgspec

from aggregator.fold import Folder
from aggregator.rules import Rules
from aggregator.state import FoldState
from healthbus.config import Config
from healthbus.connection import AsyncClient
from healthbus.errors import InvalidMessage
from healthbus.schema import Meta, Transition, decode_heartbeat, encode

__all__ = ["assert_matches_pure_fold", "caught_up", "heartbeat", "meta", "pure_fold", "transitions"]


def heartbeat(service: str, **fields: Any) -> dict[str, bytes]:
    """The fields of one heartbeats entry (hourly, ok unless `fields` say otherwise)."""
    body: dict[str, Any] = {"v": 1, "service": service, "interval_s": 3600, "ok": True}
    body.update(fields)
    return {"m": encode(body)}


async def transitions(redis: AsyncClient, config: Config) -> list[Transition]:
    rows: Any = await redis.xrange(config.keys.transitions)
    return [msgspec.json.decode(f[b"m"], type=Transition) for _, f in rows]


async def meta(redis: AsyncClient, config: Config) -> Meta | None:
    raw: Any = await redis.hget(config.keys.snapshot, "_meta")
    return msgspec.json.decode(raw, type=Meta) if raw else None


async def caught_up(redis: AsyncClient, config: Config, last: str) -> bool:
    """True once a commit's cursor reached the heartbeats entry `last`."""
    m = await meta(redis, config)
    return m is not None and m.as_of == last


def pure_fold(entries: list[Any], rules: Rules | None = None) -> list[str]:
    """The transition ids one uninterrupted fold of `entries` produces, in order."""
    folder = Folder(FoldState(), rules)
    ids: list[str] = []
    for raw_id, fields in entries:
        try:
            hb = decode_heartbeat(fields[b"m"])
        except InvalidMessage:
            continue
        ids += [t.id for t in folder.apply(hb, int(raw_id.split(b"-")[0]))]
    return ids


async def assert_matches_pure_fold(redis: AsyncClient, config: Config) -> None:
    """The transitions stream holds exactly the pure fold's transitions: none lost, none
    repeated, none extra, in the same order."""
    rows: Any = await redis.xrange(config.keys.heartbeats)
    expected = pure_fold(rows, Rules.from_config(config))
    actual = [t.id for t in await transitions(redis, config)]
    missing = [i for i in expected if i not in actual]
    repeated = [i for i in actual if actual.count(i) > 1 or i not in expected]
    assert (missing, repeated) == ([], [])
    assert actual == expected
