"""The fan-out hub: one Redis reader per worker process, many SSE clients.

The hub loads the snapshot hash into a `Replica`, then tails the updates stream from the
replica's cursor with `XREAD BLOCK`, applies each entry, keeps it in a bounded ring (for
`Last-Event-ID` resumes) and delivers each read to every subscriber (fanout.py): written to
an idle client's connection by the hub itself, else pushed to its bounded queue for its own
task. A subscriber whose queue is full is closed: a slow client is dropped (its browser
reconnects and resumes), it never slows the others. Keep-alive comments go to the clients
that were sent nothing for `sse_ping_s`. When the copy cannot be kept current entry by entry (a new
generation, trimmed or missed entries, the hash gone) the hub loads it again and tells every
subscriber to send a fresh `snapshot`. Redis errors never end the hub: it reconnects with
backoff and keeps serving the last copy, marked stale.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import msgspec

from healthbus.config import Config
from healthbus.connection import (
    CONNECTION_ERRORS,
    TIME_SCRIPT,
    AsyncClient,
    Backoff,
    follow_master,
)
from healthbus.schema import Update, decode_meta, parse_stream_id
from healthbus.web.direct import Connection
from healthbus.web.events import Entry, render_snapshot
from healthbus.web.fanout import Fanout
from healthbus.web.replica import NeedReload, Replica
from healthbus.web.replica import stream_entries as _entries
from healthbus.web.selection import Selection
from healthbus.web.subscriber import Plan, Subscriber, parse_event_id

__all__ = ["BLOCK_MS", "Hub", "running_hub"]

log = logging.getLogger("healthbus.web")

BLOCK_MS: Final = 1000
READ_COUNT: Final = 500
#: How often `_meta` is read again for the bus fields (`updated_at`, leader, lag).
META_POLL_S: Final = 1.0
RING_SIZE: Final = 1024
#: The ring also stops at this many bytes of entries (a new generation rewrites everything).
RING_BYTES: Final = 32 << 20
#: Most entries a resume reads back from Redis before it sends a snapshot instead.
RESUME_MAX: Final = 10_000
MIN_RELOAD_INTERVAL_S: Final = 0.5

_update_decoder = msgspec.json.Decoder(Update)


class Hub:
    def __init__(
        self,
        redis: AsyncClient,
        config: Config,
        *,
        block_ms: int = BLOCK_MS,
        ring_size: int = RING_SIZE,
        ring_bytes: int = RING_BYTES,
        resume_max: int = RESUME_MAX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = config.keys
        self.queue_size = config.sse_queue_size
        self.ping_s = config.sse_ping_s
        self.snapshot_limit = config.sse_snapshot_limit
        self.stale_after_ms = config.ready_stale_s * 1000
        self.block_ms = block_ms
        self.resume_max = resume_max
        self.replica = Replica()
        #: Bumped for every applied entry and every reload that changed the data.
        self.pos = 0
        #: Recent entries, for resumes: at most `ring_size` of them and `ring_bytes` in all.
        self.ring: deque[Entry] = deque()
        #: The ring holds exactly the entries after this id.
        self.ring_base = "0-0"
        self.ring_size = max(1, ring_size)
        self.ring_bytes = ring_bytes
        self._ring_used = 0
        self.connected = False
        #: Set once the first load was tried (whether or not Redis answered).
        self.started = anyio.Event()
        self._clock = clock
        self._offset_ms = 0.0
        self._meta_due = 0.0
        self._last_reload = -1e9
        self._subscribers = Fanout()
        #: SSE clients dropped for falling too far behind (their browsers reconnect).
        self.dropped = 0
        self._advanced = anyio.Event()
        self._version = 0
        self._snapshots: dict[tuple[Selection, bool], bytes] = {}
        self._snapshots_version = -1

    # -- for the endpoints --------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def redis_now_ms(self) -> int:
        """Redis server time, extrapolated from the last sample."""
        return int(self._clock() * 1000 + self._offset_ms)

    @property
    def stale(self) -> bool:
        """True when Redis is unreachable, there is no data, or `_meta` stopped refreshing."""
        meta = self.replica.meta
        if not self.connected or meta is None:
            return True
        return self.redis_now_ms() - meta.updated_at_ms > self.stale_after_ms

    def kind_of(self, name: str) -> str | None:
        view = self.replica.views.get(name)
        return view.kind if view is not None else None

    def snapshot(self, sel: Selection) -> bytes:
        """The `snapshot` event as of the current position, cached until the data changes."""
        if self._snapshots_version != self._version:
            self._snapshots.clear()
            self._snapshots_version = self._version
        stale = self.stale
        key = (sel, stale)
        rendered = self._snapshots.get(key)
        if rendered is None:
            rendered = render_snapshot(self.replica, sel, limit=self.snapshot_limit, stale=stale)
            if len(self._snapshots) < 16:
                self._snapshots[key] = rendered
        return rendered

    @property
    def deliveries(self) -> tuple[int, int]:
        """Entries delivered so far: written to idle clients by the hub itself, and queued
        for a client's own task."""
        return self._subscribers.direct, self._subscribers.queued

    def subscribe(
        self, sel: Selection, last_event_id: str | None = None, conn: Connection | None = None
    ) -> tuple[Subscriber, Plan]:
        """Register a client and say what it must be sent first. Synchronous on purpose:
        nothing can be applied between the plan and the registration. With `conn`, the hub
        writes live entries to it directly while the client's task is idle."""
        sub = Subscriber(sel, self.queue_size, self.pos, conn)
        self._subscribers.add(sub)
        return sub, self._plan(last_event_id)

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.close()
        self._subscribers.discard(sub)

    def _plan(self, last_event_id: str | None) -> Plan:
        parsed = parse_event_id(last_event_id)
        replica = self.replica
        if parsed is None or replica.meta is None or parsed[0] != replica.gen:
            return Plan(snapshot=True)
        _, stream_id, pair = parsed
        cursor = parse_stream_id(replica.cursor) or (0, 0)
        if pair == cursor:
            return Plan()
        if pair > cursor:
            return Plan(snapshot=True)
        if stream_id == self.ring_base:
            return Plan(entries=list(self.ring))
        base = parse_stream_id(self.ring_base) or (0, 0)
        if pair > base:
            entries = list(self.ring)
            for i in range(len(entries) - 1, -1, -1):
                if entries[i].id == stream_id:
                    return Plan(entries=entries[i + 1 :])
            return Plan(snapshot=True)  # inside the ring's range but not an entry's id
        return Plan(fetch=(stream_id, replica.cursor))

    async def wait_for(self, gen: str, pair: tuple[int, int]) -> None:
        """Wait until this worker has applied the entry `pair` of `gen` (that a client saw
        from another worker a little ahead), or moved to another generation. Callers bound
        the wait."""
        while self.replica.gen == gen and (parse_stream_id(self.replica.cursor) or pair) < pair:
            await self._advanced.wait()

    async def fetch(self, after: str, upto: str) -> list[Entry] | None:
        """Entries `(after, upto]` read back from Redis, or None when they cannot be given
        exactly (`after` trimmed or unknown, another generation, a gap, too many)."""
        try:
            rows: Any = await self.redis.xrange(
                self.keys.updates, min=after, max=upto, count=self.resume_max + 1
            )
        except CONNECTION_ERRORS:
            return None
        if not rows or rows[0][0].decode() != after or len(rows) > self.resume_max:
            return None
        gen = self.replica.gen
        entries: list[Entry] = []
        seq: int | None = None
        for raw_id, fields in rows:
            update = _decode_update(fields)
            if update is None or update.gen != gen or (seq is not None and update.seq != seq + 1):
                return None
            seq = update.seq
            entries.append(Entry(0, raw_id.decode(), update))
        return entries[1:]

    # -- the reader ---------------------------------------------------------------------

    async def run(self) -> None:
        """Load, tail, reload when needed; reconnect with backoff. Runs until cancelled."""
        backoff = Backoff(cap=5.0)
        need_load = True
        while True:
            try:
                if need_load:
                    await self._load()
                    need_load = False
                    self.started.set()
                backoff.reset()
                await self._tail()
            except NeedReload as why:
                log.info("reloading the snapshot: %s", why)
                need_load = True
            except CONNECTION_ERRORS as exc:
                if self.connected:
                    log.warning("lost Redis (%s); serving the last snapshot as stale", exc)
                self._set_connected(False)
                self.started.set()
                self._meta_due = 0.0  # on reconnect, look for a new generation first
                await anyio.sleep(backoff.next_delay())
            except Exception:
                log.exception("the SSE hub failed; reloading")
                self._set_connected(False)
                self.started.set()
                need_load = True
                await anyio.sleep(backoff.next_delay())

    async def keep_alive(self) -> None:
        """Keep-alive comments to the clients idle for `ping_s`, checked a few times per
        period. One loop here, not a timer task per client: a client that is sent events
        is never pinged, and no ping waits on a task of its own."""
        if self.ping_s <= 0:
            return
        while True:
            await anyio.sleep(min(1.0, self.ping_s / 4))
            self._subscribers.ping(self.ping_s)

    def close(self) -> None:
        for sub in self._subscribers:
            self.unsubscribe(sub)

    async def _load(self) -> None:
        wait = self._last_reload + MIN_RELOAD_INTERVAL_S - time.monotonic()
        if wait > 0:
            await anyio.sleep(wait)
        self._last_reload = time.monotonic()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.snapshot)
            pipe.xrevrange(self.keys.updates, count=1)
            pipe.eval(TIME_SCRIPT, 1, self.keys.commands)  # the key its ACL user may write
            rows, last, now = await pipe.execute()
        self._sample_time(now)
        fresh = Replica.load(rows, last[0][0].decode() if last else None)
        old = self.replica
        self._set_connected(True)
        self._meta_due = time.monotonic() + META_POLL_S
        if old.meta is not None and fresh.meta is not None:
            if (old.gen, old.cursor) == (fresh.gen, fresh.cursor):
                old.merge_meta(fresh.meta)  # nothing was missed: keep the warm copy
                self._version += 1
                return
        if old.meta is None and fresh.meta is None:
            old.cursor = fresh.cursor
            return
        self.replica = fresh
        self.pos += 1
        self._version += 1
        self.ring.clear()
        self._ring_used = 0
        self.ring_base = fresh.cursor
        log.info("loaded %r", fresh)
        for sub in self._subscribers:
            sub.resync()
        self._notify()

    async def _tail(self) -> None:
        while True:
            if time.monotonic() >= self._meta_due:
                await self._poll_meta()
            reply: Any = await self.redis.xread(
                {self.keys.updates: self.replica.cursor}, count=READ_COUNT, block=self.block_ms
            )
            self._set_connected(True)
            self._apply_all(_entries(reply))

    async def _poll_meta(self) -> None:
        if await follow_master(self.redis):
            raise NeedReload("Sentinel named a new master")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.snapshot, "_meta")
            pipe.eval(TIME_SCRIPT, 1, self.keys.commands)  # the key its ACL user may write
            raw, now = await pipe.execute()
        self._sample_time(now)
        self._set_connected(True)
        self._meta_due = time.monotonic() + META_POLL_S
        meta = decode_meta(raw)
        if meta is None:
            if self.replica.meta is not None and raw is None:
                raise NeedReload("the snapshot hash is gone (Redis restarted empty?)")
            return
        if self.replica.meta is None:
            raise NeedReload("the first commit arrived")
        self.replica.merge_meta(meta)  # raises NeedReload on a new generation
        self._version += 1

    def _apply(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        self._deliver([self._record(entry_id, fields)])

    def _apply_all(self, rows: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Apply a whole read, then deliver it at once: a client behind by several entries
        (the fan-out of one took long) gets them in one write, not one write each."""
        entries: list[Entry] = []
        try:
            for raw_id, fields in rows:
                entries.append(self._record(raw_id.decode(), fields))
        finally:  # what was applied before an entry that needs a reload is still sent
            if entries:
                self._deliver(entries)

    def _record(self, entry_id: str, fields: dict[bytes, bytes]) -> Entry:
        update = _decode_update(fields)
        if update is None:
            raise NeedReload(f"updates entry {entry_id} is not a valid update")
        removed = self.replica.apply(entry_id, update)
        self.pos += 1
        self._version += 1
        entry = Entry(self.pos, entry_id, update, removed, len(fields.get(b"m", b"")))
        self._remember(entry)
        return entry

    def _deliver(self, entries: list[Entry]) -> None:
        # A dropped client's stream ends when its task next looks at its queue.
        self.dropped += len(self._subscribers.deliver(entries, self.kind_of))
        self._notify()

    def _remember(self, entry: Entry) -> None:
        self.ring.append(entry)
        self._ring_used += entry.size
        while len(self.ring) > 1 and (
            len(self.ring) > self.ring_size or self._ring_used > self.ring_bytes
        ):
            dropped = self.ring.popleft()
            self._ring_used -= dropped.size
            self.ring_base = dropped.id

    def _notify(self) -> None:
        self._advanced.set()
        self._advanced = anyio.Event()

    def _sample_time(self, reply: Any) -> None:
        seconds, micros = reply
        self._offset_ms = int(seconds) * 1000 + int(micros) / 1000 - self._clock() * 1000

    def _set_connected(self, value: bool) -> None:
        if value != self.connected:
            self.connected = value
            self._version += 1


def _decode_update(fields: dict[bytes, bytes]) -> Update | None:
    raw = fields.get(b"m")
    if raw is None:
        return None
    try:
        return _update_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


@asynccontextmanager
async def running_hub(
    redis: AsyncClient, config: Config, *, start_timeout: float = 2.0, **options: Any
) -> AsyncIterator[Hub]:
    """A hub whose reader runs for the duration of the block; waits (bounded) for the first
    load so the first requests see data when Redis is there."""
    hub = Hub(redis, config, **options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hub.run)
        tg.start_soon(hub.keep_alive)
        with anyio.move_on_after(start_timeout):
            await hub.started.wait()
        try:
            yield hub
        finally:
            hub.close()
            tg.cancel_scope.cancel()
