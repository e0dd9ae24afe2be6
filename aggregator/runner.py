"""The aggregator's runner: reads heartbeats from the committed cursor, folds, commits.

It only moves bytes: the judgement is the fold's. One runner leads at a time (a lease with a
fencing epoch); the others wait as hot standbys. Commits follow the reads: when idle, a
heartbeat is committed at once; under load many share one commit.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final

import anyio
import redis.asyncio as aioredis

from aggregator import scripts
from aggregator.bus import STREAM_CAP, BusMeter
from aggregator.commit import MAX_BYTES, MAX_SERVICES, DeadLetter, Part, build_parts, commit_args
from aggregator.flush import Flush
from aggregator.fold import Folder, worst_status
from aggregator.intake import Intake
from aggregator.persist import Replay, fold_rows, load_replay, load_state
from aggregator.rules import Rules
from aggregator.state import FoldState
from healthbus import __version__
from healthbus.config import Config
from healthbus.connection import (
    CONNECTION_ERRORS,
    TIME_SCRIPT,
    AsyncClient,
    Backoff,
    connect,
    follow_master,
)
from healthbus.errors import InvalidMessage, NotLeader
from healthbus.schema import (
    Meta,
    Transition,
    decode_heartbeat,
    decode_meta,
    encode,
    iso_ms,
    parse_stream_id,
)

__all__ = ["Aggregator", "read_block"]

log = logging.getLogger("healthbus.aggregator")

TICK_S: Final = 1.0
#: How long a stopping aggregator may spend releasing its lease and closing connections.
SHUTDOWN_S: Final = 5.0
#: A Redis call answering this much later than expected means Redis was not there.
STALL_MS: Final = 1000
MAX_BLOCK_MS: Final = 1000
#: Redis ends a blocked XREAD on its timer tick (every 100 ms at the default `hz 10`), so it
#: may answer that much after the BLOCK time: a nearer deadline is waited for here instead,
#: in naps of NAP_MS between reads that do not block.
REDIS_TICK_MS: Final = 100
NAP_MS: Final = 2
#: A read whose first entry is this much newer than the cursor checks that nothing between
#: them was trimmed unread; shorter jumps are too short to matter to any status.
GAP_CHECK_MS: Final = 50
#: A stream entry as Redis sends it: its id and its fields as a flat list (name, value, …).
Entry = tuple[bytes, list[bytes]]


def _ms(stream_id: bytes | str) -> int:
    raw = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(raw.split("-", 1)[0])


def read_block(until_deadline_ms: int | None, until_tick_ms: float) -> tuple[int, bool]:
    """How long the next read may block (ms), and whether a deadline is near: then nap
    towards it and read without blocking. A blocked read ends on Redis's timer tick, up to
    REDIS_TICK_MS after its block time, so it must end that long before a deadline."""
    block = MAX_BLOCK_MS
    near = until_deadline_ms is not None and until_deadline_ms < REDIS_TICK_MS
    if until_deadline_ms is not None:
        block = min(block, max(1, until_deadline_ms if near else until_deadline_ms - REDIS_TICK_MS))
    return int(min(block, max(1.0, until_tick_ms))), near


def _raw_reply(response: Any, **options: Any) -> Any:
    """XREAD's reply as Redis sent it: redis-py's dict per entry cost about a tenth of the
    aggregator's CPU, more than the decoding of the heartbeats."""
    return response


def _entries(reply: Any, key: str) -> Sequence[Entry]:
    """Stream `key`'s entries in an XREAD reply."""
    if not reply:
        return ()
    # RESP3 (redis-py's default): {stream: entries}; RESP2: [[stream, entries]].
    pairs = reply.items() if isinstance(reply, dict) else reply
    wanted = key.encode()
    entries: Sequence[Entry] = next((e for s, e in pairs if s in (wanted, key)), ())
    return entries


def _message(fields: list[bytes]) -> bytes | None:
    if len(fields) == 2 and fields[0] == b"m":
        return fields[1]
    return _as_dict(fields).get(b"m")


def _as_dict(fields: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(fields[::2], fields[1::2], strict=False))


def _id_key(stream_id: str) -> tuple[int, int]:
    pair = parse_stream_id(stream_id)
    assert pair is not None, stream_id
    return pair


def _later(a: str, b: str) -> str:
    return max(a, b, key=_id_key)


class Aggregator:
    """One aggregator process. `await run()` until cancelled."""

    def __init__(self, config: Config, *, name: str | None = None) -> None:
        self.config = config
        self.keys = config.keys
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.rules = Rules.from_config(config)
        self.started_ms = int(time.time() * 1000)
        # Leadership and the committed position; kept across reconnects, dropped on takeover.
        self.token = ""
        self.epoch = 0
        #: Until then (monotonic) the lease is surely ours; past it, renew before a commit.
        self._lease_sure_until = 0.0
        self.folder: Folder | None = None
        #: Operator commands read and not folded yet (see intake.py).
        self.intake = Intake("0-0")
        self.gen = ""
        #: Where the next read starts; `as_of` is what `_meta` says was read (never behind
        #: what an earlier leader committed, while this one re-reads from `replay`).
        self.cursor = "0-0"
        self.as_of = "0-0"
        #: The committed replay position (persist.Replay), and the flush in progress.
        self.replay = Replay.at("0-0", FoldState().clock)
        self._flush: Flush | None = None
        #: Entries up to this were read by an earlier leader and may be in a row already
        #: (checked one by one); None once the reads are past it. Dead letters of entries
        #: up to `_dead_until` were committed already.
        self._replaying: tuple[int, int] | None = None
        self._dead_until = (0, 0)
        #: Blind time was granted: the replay position's clock lacks it, so the next commit
        #: writes every row and moves the replay position to its own cursor.
        self._all_rows = False
        self.seq = 0
        self.update_id = "0-0"
        self.invalid = 0
        #: Times entries were found trimmed past the cursor before they were read, and
        #: the cursor of the last such report (a tick and a read may both see one gap).
        self.gaps = 0
        #: The bus's own health, reported as a heartbeat of its own (bus.py).
        self.bus = BusMeter(config.bus_interval_s)
        self._gap_at = ""
        self.committed_meta = False
        #: The fold holds changes not yet committed: after a failed commit, reload from Redis.
        self.dirty = False
        # Redis server time, extrapolated between samples with the monotonic clock.
        self._time_base = (0, 0.0)
        self._blind_since_ms: int | None = None
        #: Blind spans granted since the last commit. A state reloaded from Redis lacks them:
        #: then they are queued, and granted again as its fold reaches each one's start.
        self._granted: list[tuple[int, int]] = []
        self._queued: list[tuple[int, int]] = []
        #: Transitions of a commit that did not go through: sent again with the next one
        #: unless the state is reloaded from Redis (which then holds what did go through).
        self._unsent: list[Transition] = []
        self._lag_ms = 0
        self._buffer_s = 0.0
        self.is_leader = anyio.Event()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        assert self.config.redis_url, "the aggregator needs a Redis URL"
        backoff = Backoff()
        client = connect(self.config.redis_url, block_ms=MAX_BLOCK_MS, name="healthbus-aggregator")
        client.set_response_callback("XREAD", _raw_reply)
        try:
            self._commit_script = client.register_script(scripts.COMMIT)
            self._acquire_script = client.register_script(scripts.ACQUIRE)
            self._renew_script = client.register_script(scripts.RENEW)
            self._release_script = client.register_script(scripts.RELEASE)
            while True:
                try:
                    if await self._try_lead(client):
                        backoff.reset()
                        await self._lead(client)
                    else:
                        await anyio.sleep(min(1.0, self.config.lease_ttl_s / 5))
                except NotLeader as exc:
                    log.warning("lost the leader lease (%s); standing by", exc)
                    self._drop_leadership()
                except CONNECTION_ERRORS as exc:
                    if self._blind_since_ms is None and self.folder is not None:
                        clock = self.folder.state.clock
                        self._blind_since_ms = clock.to_wall(clock.now_v)
                    log.warning("Redis unavailable (%s); retrying", exc)
                    await anyio.sleep(backoff.next_delay())
        finally:
            # Shielded so a cancelled aggregator still releases its lease; bounded so a Redis
            # that stopped answering cannot hold the shutdown forever.
            with anyio.move_on_after(SHUTDOWN_S, shield=True):
                await self._step_down(client)
                await client.aclose()

    async def _try_lead(self, client: AsyncClient) -> bool:
        if self.token:
            try:
                await self._renew()
                return True
            except NotLeader:
                self._drop_leadership()
        token = f"{self.name}:{uuid.uuid4().hex[:12]}"
        sent = time.monotonic()
        epoch = int(
            await self._acquire_script(
                keys=[self.keys.leader, self.keys.epoch], args=[token, self._ttl_ms]
            )
        )
        if not epoch:
            return False
        self.token, self.epoch = token, epoch
        self._lease_sure_until = sent + self.config.lease_ttl_s / 2
        log.info("leading namespace %s as epoch %d", self.keys.namespace, epoch)
        return True

    async def _renew(self) -> None:
        """Extend the lease, or raise NotLeader when another aggregator holds it now."""
        sent_ms, sent = self._redis_now(), time.monotonic()
        renewed = await self._renew_script(keys=[self.keys.leader], args=[self.token, self._ttl_ms])
        self._grant_stall(sent_ms, sent, 0)
        if not renewed:
            raise NotLeader("the lease expired before it was renewed")
        self._lease_sure_until = sent + self.config.lease_ttl_s / 2

    async def _lead(self, client: AsyncClient) -> None:
        await self._sample_time(client)
        await self._load(client)
        folder = self.folder
        assert folder is not None
        if self._blind_since_ms is not None:
            granted = self._grant(self._blind_since_ms, self._redis_now())
            log.info("granted %d ms of blind time after a Redis outage", granted)
            self._blind_since_ms = None
        self.is_leader.set()
        self._flush = None
        next_tick = 0.0
        backlog = False
        while True:
            if time.monotonic() >= next_tick:
                await self._tick(client)
                next_tick = time.monotonic() + self._tick_s
            # With a backlog the read answers at once: no need to look for the next deadline.
            deadline = None if backlog else folder.next_deadline_ms()
            block, near = read_block(
                None if deadline is None else deadline - self._redis_now(),
                (next_tick - time.monotonic()) * 1000,
            )
            # Held commands wait for a read that begins after them (intake.py): soon.
            if self.intake or near:
                await anyio.sleep(min(block, NAP_MS) / 1000)
                block = 0
            if self._flush is not None:  # more parts to commit after this read
                block = 0
            # Redis time no later than the read: entries added after it are not behind `now`.
            sent_ms, sent_mono = self._redis_now(), time.monotonic()
            reply: Any = await client.xread(
                {self.keys.heartbeats: self.cursor, self.keys.commands: self.intake.read},
                count=self.config.read_count,
                block=block or None,
            )
            entries = _entries(reply, self.keys.heartbeats)
            commands = _entries(reply, self.keys.commands)
            self.intake.add(commands)
            backlog = len(entries) >= self.config.read_count
            first_ms = _ms(entries[0][0]) if entries else None
            self._grant_stall(sent_ms, sent_mono, block, until_ms=first_ms)
            # A command ends the read early: then Redis time is only known to be past sent_ms.
            await self._fold_entries(client, entries, sent_ms, 0 if commands else block)
            if self._flush is not None:  # a share of it, a read after the tick's own calls
                await self._flush_step(client, self._flush)

    # -- folding and committing -------------------------------------------------------

    async def _fold_entries(
        self, client: AsyncClient, entries: Sequence[Entry], sent_ms: int, block_ms: int
    ) -> None:
        folder = self.folder
        assert folder is not None
        self.dirty = True
        started = time.monotonic()
        if entries and _ms(entries[0][0]) - _ms(self.cursor) >= GAP_CHECK_MS:
            await self._check_gap(client, entries[0][0].decode())
        transitions: list[Transition] = []
        dead: list[DeadLetter] = []
        size = 0
        count = len(entries)
        tracked = folder.state.services  # names the decoder need not check or remember
        for i, (raw_id, fields) in enumerate(entries, 1):
            at_ms = int(raw_id.partition(b"-")[0])
            if self._queued:
                transitions += self._grant_reached(at_ms, dead)
            if self.intake:
                transitions += self.intake.release(folder, at_ms, dead)
            raw = _message(fields)
            key = None
            if self._replaying is not None:
                key = _id_key(raw_id.decode())
                if key > self._replaying:
                    key = self._replaying = None
            try:
                if raw is None:
                    raise InvalidMessage("entry has no field 'm'")
                hb = decode_heartbeat(raw, tracked)
                if key is None or self._unseen(hb.service, key):
                    transitions += folder.apply(hb, at_ms)
            except InvalidMessage as exc:
                if key is None or key > self._dead_until:
                    self.invalid += 1
                    dead.append(DeadLetter(raw_id.decode(), exc.reason, _as_dict(fields)))
                if exc.service is not None and (key is None or self._unseen(exc.service, key)):
                    transitions += self._mark_broken(exc, at_ms)
            size += len(raw or b"")
            last = i == count
            if last or len(folder.state.pending.urgent) >= MAX_SERVICES or size >= MAX_BYTES // 2:
                now = self._watermark(entries, at_ms, sent_ms) if last else at_ms
                if self._queued:
                    transitions += self._grant_reached(now, dead)
                if last and self.intake and count < self.config.read_count:
                    transitions += self.intake.release(folder, sent_ms - 1, dead)
                transitions += folder.expire(self.intake.first_ms(now))
                await self._commit_parts(client, transitions, dead, cursor=raw_id.decode())
                transitions, dead, size = [], [], 0
        if not entries:
            # The read waited `block_ms` and nothing came: Redis time passed at least that far.
            folded = folder.state.commands.cursor
            expired = self._grant_reached(sent_ms + block_ms, dead) if self._queued else []
            expired += self.intake.release(folder, sent_ms - 1, dead) if self.intake else []
            expired += folder.expire(self.intake.first_ms(sent_ms + block_ms))
            changed = folded != folder.state.commands.cursor
            if expired or changed or folder.state.pending.urgent:
                await self._commit_parts(client, expired, dead, cursor=self.cursor)
        self.bus.folded(time.monotonic() - started)

    def _unseen(self, service: str, key: tuple[int, int]) -> bool:
        """False for an entry (re-read from the replay position) already folded into
        `service`'s committed row, or of a service removed after it."""
        assert self.folder is not None
        svc = self.folder.state.services.get(service)
        applied = self.replay.gone.get(service, "") if svc is None else svc.applied
        return not applied or key > _id_key(applied)

    def _grant(self, blind_from_ms: int, blind_to_ms: int) -> int:
        """Declare blind time (Folder.grant); the replay position must then move past it."""
        assert self.folder is not None
        granted = self.folder.grant(blind_from_ms, blind_to_ms)
        if granted:
            self._granted.append((blind_from_ms, blind_to_ms))
        self._all_rows = self._all_rows or granted > 0
        return granted

    def _grant_reached(self, upto_ms: int, dead: list[DeadLetter]) -> list[Transition]:
        """Grant the queued blind spans that begin by `upto_ms`, each with the fold standing
        at its start: what came before it is folded first, as when it was first granted."""
        assert self.folder is not None
        out: list[Transition] = []
        while self._queued and self._queued[0][0] <= upto_ms:
            start, end = self._queued.pop(0)
            if self.intake:
                out += self.intake.release(self.folder, start, dead)
            out += self.folder.expire(self.intake.first_ms(start))
            self._grant(start, end)
        return out

    def _mark_broken(self, exc: InvalidMessage, at_ms: int) -> list[Transition]:
        """A reject naming a valid service sets it to error (its publisher is broken)."""
        assert self.folder is not None
        if exc.service is None:
            return []
        try:
            return self.folder.reject(exc.service, exc.reason, at_ms)
        except InvalidMessage:  # a new name past max_services: dead-lettered, nothing more
            return []

    def _watermark(self, entries: Sequence[Entry], last_ms: int, sent_ms: int) -> int:
        """While a backlog remains, the time of the last entry read; once caught up, the
        Redis time when the read was sent (never ahead of an entry still unread)."""
        if len(entries) >= self.config.read_count:
            self._lag_ms = max(0, self._redis_now() - last_ms)
            return last_ms
        self._lag_ms = 0
        return max(last_ms, sent_ms)

    async def _tick(self, client: AsyncClient) -> None:
        """Once a second: lease, clock, gap check, freshness flush and the `_meta` refresh.

        It folds no deadlines: only a read knows how far Redis time has safely passed.
        """
        tick_ms, tick_mono = self._redis_now(), time.monotonic()
        if await follow_master(client):
            # A Sentinel failover: commits to the old master since then are lost. Reconnect
            # as after an outage; `_load` starts again from what the new master holds.
            raise aioredis.ConnectionError("Sentinel named a new master; reconnecting")
        await self._renew()
        await self._sample_time(client)
        await self._check_stream(client)
        await self._report(client)
        # Before the flush: its commits check their own calls, and rendering the views of a
        # large fleet is this process's CPU, not Redis being away.
        self._grant_stall(tick_ms, tick_mono, 0)
        folder = self.folder
        assert folder is not None
        self.dirty = True
        # SLA: a share of the services each tick, so each is accounted every sla_flush_s.
        share = self._tick_s / max(self.config.sla_flush_s, self._tick_s)
        folder.account(math.ceil(len(folder.state.services) * share))
        if self._flush is None:
            start = Replay.at(self.cursor, folder.state.clock)
            self._flush = Flush(folder.state, start)

    async def _flush_step(self, client: AsyncClient, flush: Flush) -> None:
        """Commit the flush's next share (the last one also trims the stream)."""
        assert self.folder is not None
        for _ in range(flush.per_round):
            names = flush.take(self.folder.state)
            done = None if flush else flush
            await self._commit_parts(client, [], [], cursor=self.cursor, flush=names, done=done)
            if done is not None:
                self._flush = None
                return

    async def _report(self, client: AsyncClient) -> None:
        """When due, publish the bus's own heartbeat (`healthbus.aggregator`, see bus.py)."""
        if self.folder is None or not self.bus.due(time.monotonic()):
            return
        body = self.bus.report(
            leader=self.name,
            lag_ms=self._lag_ms,
            invalid=self.invalid,
            gaps=self.gaps,
            blind_ms=self.folder.state.clock.offset_ms,
            buffer_s=self._buffer_s,
        )
        await client.xadd(self.keys.heartbeats, {"m": body}, maxlen=STREAM_CAP, approximate=True)

    async def _check_stream(self, client: AsyncClient) -> None:
        """Measure the buffer; detect entries trimmed past the cursor before they were read."""
        try:
            info: Any = await client.xinfo_stream(self.keys.heartbeats)
        except aioredis.ResponseError:
            self._buffer_s = 0.0
            return
        self.bus.stream_length = int(info.get("length", 0))
        first, last = info.get("first-entry"), info.get("last-entry")
        if not first or not last:
            self._buffer_s = 0.0
            return
        first_id = first[0].decode()
        self._buffer_s = (_ms(last[0]) - _ms(first_id)) / 1000
        if self.cursor != "0-0" and _id_key(first_id) > _id_key(self.cursor):
            self._trimmed_unread(first_id)

    async def _check_gap(self, client: AsyncClient, first_id: str) -> None:
        """A read jumped from the cursor to `first_id`. When the stream's head is now past
        the cursor, what lay between was trimmed before it was read (the aggregator stalled
        past the stream's cap, or an XTRIM): the read itself cannot tell, and the cursor is
        about to move past the evidence, so look before folding."""
        if self.cursor == "0-0":
            return
        head: Any = await client.xrange(self.keys.heartbeats, count=1)
        # A head past `first_id` was trimmed after this read (which still got `first_id`):
        # the reply predates that trim, which then took nothing unread.
        if head and _id_key(self.cursor) < _id_key(head[0][0].decode()) <= _id_key(first_id):
            self._trimmed_unread(first_id)

    def _trimmed_unread(self, first_id: str) -> None:
        """Heartbeats after the cursor and before `first_id` are gone unread: that span is
        blind time, not the services' silence (design.md, "Time")."""
        assert self.folder is not None
        if self._gap_at == self.cursor:
            return
        self._gap_at = self.cursor
        granted = self._grant(_ms(self.cursor), _ms(first_id))
        self.gaps += 1
        log.warning(
            "heartbeats between %s and %s were trimmed before they were read; "
            "%d ms counted as blind",
            self.cursor,
            first_id,
            granted,
        )

    async def _commit_parts(
        self,
        client: AsyncClient,
        transitions: list[Transition],
        dead: list[DeadLetter],
        *,
        cursor: str,
        flush: set[str] | frozenset[str] = frozenset(),
        done: Flush | None = None,
    ) -> None:
        """Commit what the fold owes as of `cursor`; `flush`: a share of the flush `done`
        is the last of."""
        folder = self.folder
        assert folder is not None
        state = folder.state
        if self._unsent:
            transitions = [*self._unsent, *transitions]
        self._unsent = transitions
        parts = build_parts(state, transitions, cursor=cursor, flush=flush, all_rows=self._all_rows)
        replay = self.replay
        if not state.pending.state:  # every row written: re-read from here
            replay = Replay.at(cursor, state.clock)
        elif done is not None and _id_key(done.replay.cursor) > _id_key(replay.cursor):
            replay = Replay(cursor=done.replay.cursor, clock=done.replay.clock)
        gone = {**self.replay.gone, **{n: cursor for p in parts for n in p.removed}}
        replay = Replay(cursor=replay.cursor, clock=replay.clock, gone=gone).pruned()
        # The clock, the cursor, the replay position and the dead letters of the entries
        # read go with the last part, after every service's own part: re-read after a
        # crash, none is written twice. A part that removes services says so at once.
        early = Replay(cursor=self.replay.cursor, clock=self.replay.clock, gone=gone)
        for part in parts[:-1]:
            if part.removed:
                part.state.update(fold_rows(state, early))
        parts[-1].state.update(fold_rows(state, replay))
        parts[-1].deadletters = dead
        trim = replay.cursor if done is not None else None
        for part in parts[:-1]:
            await self._commit(client, part, self.cursor, None)
        await self._commit(client, parts[-1], cursor, trim)
        self.replay = replay
        self._unsent, self._granted = [], []
        self._all_rows = False
        self.dirty = False

    async def _commit(self, client: AsyncClient, part: Part, cursor: str, trim: str | None) -> None:
        if time.monotonic() >= self._lease_sure_until:
            # Paused (SIGSTOP, a VM freeze) or starved since the last renewal: the lease may
            # be another's by now. Find out before sending anything; the script checks too.
            await self._renew()
        folder = self.folder
        assert folder is not None
        state = folder.state
        status = worst_status(state.counts.items())
        seq = self.seq + 1 if part.publishes else self.seq
        update = self._render_update(part, seq, status) if part.publishes else None
        now = self._redis_now()
        as_of = _later(cursor, self.as_of)
        meta = Meta(
            seq=seq,
            status=status,
            as_of=as_of,
            update_id=self.update_id,
            gen=self.gen,
            leader=self.name,
            epoch=self.epoch,
            updated_at=iso_ms(now),
            updated_at_ms=now,
            started_at=iso_ms(self.started_ms),
            version=__version__,
            services=len(state.services),
            counts={k: v for k, v in state.counts.items() if v},
            lag_ms=self._lag_ms,
            buffer_s=self._buffer_s,
            invalid=self.invalid,
            gaps=self.gaps,
            blind_ms=state.clock.offset_ms,
        )
        window_ms = int(self.config.replay_window_s * 1000)
        trim_id: str | None = None
        if trim is not None and trim != "0-0":
            # Never past the replay position: a new leader reads again from there.
            trim_id = min(trim, f"{now - window_ms}-0", key=_id_key)
        args = commit_args(
            self.token,
            self.committed_meta,
            encode(meta),
            update,
            part,
            transitions_maxlen=self.config.transitions_maxlen,
            updates_maxlen=self.config.updates_maxlen,
            updates_minid=f"{now - int(self.config.updates_retention_s * 1000)}-0",
            heartbeats_minid=trim_id,
            deadletters_maxlen=self.config.deadletters_maxlen,
        )
        k = self.keys
        sent_mono = time.monotonic()
        reply: list[Any] = await self._commit_script(
            keys=[k.leader, k.snapshot, k.state, k.transitions, k.updates, k.heartbeats,
                  k.deadletters, *(k.rollup(r, s) for r, s in part.rollup_keys())],
            args=args,
        )  # fmt: skip
        self._grant_stall(now, sent_mono, 0)
        verdict = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if verdict == "NOTLEADER":
            raise NotLeader("another aggregator holds the lease")
        if verdict == "RESET":
            self._redis_emptied()
            raise NotLeader("Redis lost the committed state (restarted empty); rewriting it")
        self.committed_meta = True
        self.cursor, self.as_of = cursor, as_of
        self.seq = seq
        if reply[1]:
            self.update_id = reply[1].decode()

    def _render_update(self, part: Part, seq: int, status: str) -> bytes:
        # The views are already encoded for the hash: splice them rather than encode twice.
        return b"".join(
            (
                b'{"v":1,"seq":',
                str(seq).encode(),
                b',"gen":',
                encode(self.gen),
                b',"status":',
                encode(status),
                b',"services":[',
                b",".join(part.published),
                b'],"removed":',
                encode(part.removed),
                b',"transitions":',
                encode(part.transitions),
                b',"fresh":',
                encode(part.fresh),
                b"}",
            )
        )

    def _grant_stall(
        self, sent_ms: int, sent_mono: float, expected_ms: int, until_ms: int | None = None
    ) -> None:
        """A call that answered far later than it should: Redis was frozen or unreachable.

        That span is blind time (design.md, "Time"): a bus outage is never a service outage.
        Entries that came back with the answer prove Redis was live again from their time on.
        """
        stalled_ms = (time.monotonic() - sent_mono) * 1000 - expected_ms
        if stalled_ms < STALL_MS or self.folder is None:
            return
        blind_from = sent_ms + expected_ms
        blind_to = self._redis_now() if until_ms is None else min(until_ms, self._redis_now())
        granted = self._grant(blind_from, blind_to)
        log.warning(
            "Redis did not answer for %.1f s; %d ms counted as blind", stalled_ms / 1000, granted
        )

    # -- leadership and state ---------------------------------------------------------

    async def _load(self, client: AsyncClient) -> None:
        """Start from what Redis holds, unless our own memory is exactly that or newer."""
        raw_meta: Any = await client.hget(self.keys.snapshot, "_meta")
        meta = decode_meta(raw_meta)
        if meta is None:
            if self.folder is None:
                self.folder = self._new_folder(FoldState())
                self._start_new_dataset()
            elif self.committed_meta:
                self._redis_emptied()
            return
        mine = (self.gen, self.seq, self.as_of)
        if self.folder is not None and not self.dirty and (meta.gen, meta.seq, meta.as_of) == mine:
            return
        rows: Any = await client.hgetall(self.keys.state)
        self.folder = self._new_folder(load_state(rows))
        self._unsent = []
        self.gen, self.seq, self.as_of = meta.gen, meta.seq, meta.as_of
        self.update_id, self.invalid, self.gaps = meta.update_id, meta.invalid, meta.gaps
        replay = load_replay(rows)
        if replay is None or _id_key(replay.cursor) >= _id_key(meta.as_of):
            gone = replay.gone if replay else None
            replay = Replay.at(meta.as_of, self.folder.state.clock, gone)
        self.replay, self.cursor = replay, replay.cursor
        self._dead_until = _id_key(meta.as_of)
        self._replay_from_rows()
        self._all_rows = False
        self.committed_meta = True
        # Blind time seen and not committed: the loaded state lacks it (design.md, "Time").
        lost = [*self._queued, *self._granted]
        if self._blind_since_ms is not None:
            lost.append((self._blind_since_ms, self._redis_now()))
        self._queued, self._granted, self._blind_since_ms = sorted(lost), [], None
        log.info(
            "loaded %d services from %s, reading again from %s",
            len(self.folder.state.services),
            meta.as_of,
            self.cursor,
        )

    def _replay_from_rows(self) -> None:
        """Check the entries up to the newest one a committed row (or removal) holds."""
        assert self.folder is not None
        marks = [s.applied for s in self.folder.state.services.values() if s.applied]
        newest = max((_id_key(m) for m in (*marks, *self.replay.gone.values())), default=None)
        self._replaying = newest if newest is not None and newest > _id_key(self.cursor) else None

    def _new_folder(self, state: FoldState) -> Folder:
        self.intake = Intake(state.commands.cursor)
        return Folder(state, self.rules, max_services=self.config.max_services)

    def _redis_emptied(self) -> None:
        """Redis lost what we committed (restarted empty, flushed): keep what we know and
        write it all again, transitions not yet sent included. The heartbeats it held past
        our watermark are gone unread: blind time (design.md, "Time"), granted on leading
        again, or the fleet would read as silent for as long as we could not read it."""
        assert self.folder is not None
        clock = self.folder.state.clock
        since = clock.to_wall(clock.now_v)
        if self._blind_since_ms is None or since < self._blind_since_ms:
            self._blind_since_ms = since
        self._start_new_dataset()

    def _start_new_dataset(self) -> None:
        """A new generation: everything we hold is written again, the stream read from 0."""
        self.gen = uuid.uuid4().hex[:12]
        self.cursor = self.as_of = "0-0"
        self.update_id = "0-0"
        self.committed_meta = False
        self.intake = Intake("0-0")
        self._dead_until = (0, 0)
        self._flush = None
        if self.folder is not None:
            self.folder.state.commands.cursor = "0-0"
            pending = self.folder.state.pending
            pending.urgent |= set(self.folder.state.services)
            pending.state |= set(self.folder.state.services)
            self.replay = Replay.at("0-0", self.folder.state.clock)
            self._replay_from_rows()

    def _drop_leadership(self) -> None:
        self.token = ""
        self.is_leader = anyio.Event()

    async def _step_down(self, client: AsyncClient) -> None:
        if not self.token:
            return
        try:
            with anyio.fail_after(2):
                await self._release_script(keys=[self.keys.leader], args=[self.token])
        except CONNECTION_ERRORS:
            log.info("could not release the lease; it expires by itself")
        self._drop_leadership()

    # -- time ---------------------------------------------------------------------------

    @property
    def _tick_s(self) -> float:
        """Renew the lease well within its TTL; refresh `_meta` at least once a second."""
        return min(TICK_S, self.config.lease_ttl_s / 3)

    @property
    def _ttl_ms(self) -> int:
        return int(self.config.lease_ttl_s * 1000)

    async def _sample_time(self, client: AsyncClient) -> None:
        reply: Any = await client.eval(TIME_SCRIPT, 1, self.keys.heartbeats)
        seconds, micros = reply
        self._time_base = (int(seconds) * 1000 + int(micros) // 1000, time.monotonic())

    def _redis_now(self) -> int:
        base_ms, at = self._time_base
        return base_ms + int((time.monotonic() - at) * 1000)
