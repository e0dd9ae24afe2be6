"""A small client for the three ways to consume the bus.

bus = HealthBus.from_url("redis://localhost:6379/0")
snap = await bus.snapshot()                      # the whole derived state
async for update in bus.updates(): ...           # live changes, in commit order
async for t in bus.transitions(group="pager"):   # automations: at least once, resumable
    ...                                          # acked when you ask for the next one
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import msgspec
import redis.exceptions

from healthbus.config import Config
from healthbus.connection import AsyncClient, bus_errors, connect, follow_master
from healthbus.keys import Keys
from healthbus.schema import Meta, ServiceView, Transition, Update, decode_meta

__all__ = ["Entry", "HealthBus", "Snapshot", "default_consumer"]

_view_decoder = msgspec.json.Decoder(ServiceView)
_update_decoder = msgspec.json.Decoder(Update)
_transition_decoder = msgspec.json.Decoder(Transition)
BLOCK_MS = 5000
#: XAUTOCLAIM pages scanned per call: bounds one take-over pass over a long pending list.
CLAIM_PAGES = 100
log = logging.getLogger("healthbus.client")
#: A transitions-stream entry: its id and the transition (None: trimmed away or unreadable).
Entry: TypeAlias = tuple[str, Transition | None]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The snapshot hash as one consistent value; `meta` is None before the first commit."""

    meta: Meta | None
    services: dict[str, ServiceView] = field(default_factory=dict)


class HealthBus:
    def __init__(self, redis_url: str, namespace: str = "default") -> None:
        self.url = redis_url
        self.keys = Keys(namespace)
        self.redis: AsyncClient = connect(redis_url, block_ms=BLOCK_MS, name="healthbus-client")

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

    async def services(self, names: Iterable[str]) -> dict[str, ServiceView]:
        """The named services that the snapshot holds, in one round trip."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}
        with bus_errors(self.url):
            raws: Any = await self.redis.hmget(self.keys.snapshot, wanted)
        return {n: _view_decoder.decode(raw) for n, raw in zip(wanted, raws, strict=True) if raw}

    async def updates(self, after: str = "$") -> AsyncIterator[tuple[str, Update]]:
        """Updates entries after stream id `after` ("$": only new ones), with their ids."""
        cursor = after
        while True:
            with bus_errors(self.url):
                await follow_master(self.redis)
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
        consumer = consumer or default_consumer()
        await self.ensure_group(group, start)
        pending = True  # our own pending entries first, then new ones
        while True:
            entries = await self.read_transitions(group, consumer, pending=pending)
            if pending and not entries:
                pending = False
                continue
            for entry_id, transition in entries:
                if transition is not None:  # None: trimmed away while pending, or unreadable
                    yield transition
                await self.ack(group, [entry_id])

    async def read_transitions(
        self,
        group: str,
        consumer: str,
        *,
        pending: bool = False,
        block_ms: int = BLOCK_MS,
        count: int = 100,
    ) -> list[Entry]:
        """One read through `group`, not acked: this consumer's own pending entries, or new
        ones waiting up to `block_ms`. For consumers that ack in batches (the notifier)."""
        with bus_errors(self.url):
            await follow_master(self.redis)  # a failed-over master stays readable for seconds
        reply: Any = await self._in_group(
            group,
            self.redis.xreadgroup(
                group,
                consumer,
                {self.keys.transitions: "0" if pending else ">"},
                count=count,
                block=None if pending else max(1, block_ms),
            ),
        )
        return [_entry(raw_id, fields) for raw_id, fields in (reply[0][1] if reply else [])]

    async def claim_transitions(
        self, group: str, consumer: str, min_idle_ms: int, *, count: int = 100
    ) -> list[Entry]:
        """Entries that other consumers of `group` left pending for `min_idle_ms` (they
        died or hung), now this consumer's: the take-over half of at-least-once."""
        out: list[Entry] = []
        cursor = "0-0"
        for _ in range(CLAIM_PAGES):
            reply: Any = await self._in_group(
                group,
                self.redis.xautoclaim(
                    self.keys.transitions, group, consumer, min_idle_ms, cursor, count=count
                ),
            )
            if not reply:
                break
            out.extend(_entry(i, f) for i, f in reply[1] if i is not None)
            cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            if cursor == "0-0" or len(out) >= count:
                break
        return out

    async def touch(self, group: str, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of entries this consumer still works on, so no other consumer
        takes them over while, say, a send is being retried."""
        if ids:
            with bus_errors(self.url):
                await self.redis.xclaim(
                    self.keys.transitions, group, consumer, 0, list(ids), justid=True
                )

    async def forget_consumers(self, group: str, idle_ms: int) -> list[str]:
        """Remove consumers of `group` idle for `idle_ms` that hold nothing pending (gone
        processes, one per restart), so the group does not grow forever."""
        with bus_errors(self.url):
            consumers: Any = await self.redis.xinfo_consumers(self.keys.transitions, group)
            gone = [c["name"] for c in consumers if not c["pending"] and c["idle"] > idle_ms]
            for name in gone:
                await self.redis.xgroup_delconsumer(self.keys.transitions, group, name)
        return [n.decode() if isinstance(n, bytes) else str(n) for n in gone]

    async def ack(self, group: str, ids: Sequence[str]) -> None:
        if ids:
            with bus_errors(self.url):
                await self.redis.xack(self.keys.transitions, group, *ids)

    async def ensure_group(self, group: str, start: str = "$") -> None:
        """Create consumer group `group` at `start` unless it exists."""
        try:
            with bus_errors(self.url):
                await self.redis.xgroup_create(
                    self.keys.transitions, group, id=start, mkstream=True
                )
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _in_group(self, group: str, call: Awaitable[Any]) -> Any:
        """Await a group command; None when Redis lost the group (it restarted empty), which
        is then made again from the start of what the stream holds."""
        try:
            with bus_errors(self.url):
                return await call
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        await self.ensure_group(group, "0")
        return None


def default_consumer() -> str:
    """This process's consumer name: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _entry(raw_id: bytes, fields: dict[bytes, bytes] | None) -> Entry:
    raw = fields.get(b"m") if fields else None
    if raw is None:
        return raw_id.decode(), None
    try:
        return raw_id.decode(), _transition_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        log.warning("skipping unreadable transition %s: %s", raw_id.decode(), exc)
        return raw_id.decode(), None
