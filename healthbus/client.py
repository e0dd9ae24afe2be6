"""A small client for the three ways to consume the bus.

bus = HealthBus.from_url("redis://localhost:6379/0")
snap = await bus.snapshot()                      # the whole derived state
async for update in bus.updates(): ...           # live changes, in commit order
async for t in bus.transitions(group="pager"):   # automations: at least once, resumable
    ...                                          # acked when you ask for the next one
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from healthbus.config import Config
from healthbus.connection import bus_errors, connect
from healthbus.keys import Keys
from healthbus.schema import Meta, ServiceView, Transition, Update, decode_meta

__all__ = ["HealthBus", "Snapshot"]

_view_decoder = msgspec.json.Decoder(ServiceView)
_update_decoder = msgspec.json.Decoder(Update)
_transition_decoder = msgspec.json.Decoder(Transition)
BLOCK_MS = 5000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The snapshot hash as one consistent value; `meta` is None before the first commit."""

    meta: Meta | None
    services: dict[str, ServiceView] = field(default_factory=dict)


class HealthBus:
    def __init__(self, redis_url: str, namespace: str = "default") -> None:
        self.url = redis_url
        self.keys = Keys(namespace)
        self.redis: aioredis.Redis = connect(redis_url, block_ms=BLOCK_MS, name="healthbus-client")

    @classmethod
    def from_config(cls, config: Config) -> HealthBus:
        return cls(config.redis_url or "redis://127.0.0.1:6379/0", config.namespace)

    async def __aenter__(self) -> HealthBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def snapshot(self) -> Snapshot:
        with bus_errors(self.url):
            rows: Any = await self.redis.hgetall(self.keys.snapshot)
        meta_raw = rows.pop(b"_meta", None)
        return Snapshot(
            meta=decode_meta(meta_raw),
            services={k.decode(): _view_decoder.decode(v) for k, v in rows.items()},
        )

    async def service(self, name: str) -> ServiceView | None:
        with bus_errors(self.url):
            raw: Any = await self.redis.hget(self.keys.snapshot, name)
        return _view_decoder.decode(raw) if raw else None

    async def updates(self, after: str = "$") -> AsyncIterator[tuple[str, Update]]:
        """Updates entries after stream id `after` ("$": only new ones), with their ids."""
        cursor = after
        while True:
            with bus_errors(self.url):
                reply: Any = await self.redis.xread(
                    {self.keys.updates: cursor}, block=BLOCK_MS, count=100
                )
            for raw_id, fields in reply[0][1] if reply else ():
                cursor = raw_id.decode()
                yield cursor, _update_decoder.decode(fields[b"m"])

    async def transitions(
        self, group: str, consumer: str | None = None, *, start: str = "$"
    ) -> AsyncIterator[Transition]:
        """Transitions through consumer group `group`, at least once, in order.

        An entry is acknowledged when the next one is requested, so one that was being
        handled when the process died is delivered again (first) after a restart. A new group
        starts at `start` ("$": from now, "0": the whole retained history).
        """
        consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        key = self.keys.transitions
        await self._ensure_group(group, start)
        cursor = "0"  # our own pending entries first, then new ones
        while True:
            try:
                with bus_errors(self.url):
                    reply: Any = await self.redis.xreadgroup(
                        group, consumer, {key: cursor}, count=100, block=BLOCK_MS
                    )
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._ensure_group(group, "0")  # Redis lost it (restarted empty)
                continue
            entries = reply[0][1] if reply else []
            if cursor == "0" and not entries:
                cursor = ">"
                continue
            for raw_id, fields in entries:
                if fields is None:  # pending but already trimmed away
                    await self.redis.xack(key, group, raw_id)
                    continue
                yield _transition_decoder.decode(fields[b"m"])
                with bus_errors(self.url):
                    await self.redis.xack(key, group, raw_id)

    async def _ensure_group(self, group: str, start: str) -> None:
        try:
            with bus_errors(self.url):
                await self.redis.xgroup_create(
                    self.keys.transitions, group, id=start, mkstream=True
                )
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
