"""One destination's loop: read transitions through its own consumer group, group them,
send, and only then ack.

Delivery is at least once, and neither a restart nor a second notifier sends a
notification twice:
1. Each destination reads through a consumer group of its own (`<group>.<url hash>`), so a
   destination that is down holds back only itself, and resumes where it stopped. Entries
   are acked only once their message was sent (or dead-lettered). What a dead process was
   handling stays pending: it is read again first when the same consumer restarts, and any
   notifier takes it over (XAUTOCLAIM) once it was idle `notify_claim_idle_s`. A live
   notifier keeps the entries it still works on fresh (XCLAIM to itself) between retries,
   so nobody takes over work in hand.
2. Before a send, the message's idempotency keys (transition ids, `<incident>:repeat:<n>`)
   are claimed in one script: a key already `sent` drops its transition and the message is
   planned again; a key another notifier holds (a lock that expires) makes this one wait.
3. After the send, one script marks the keys `sent` and writes the open-incident records.

The crash windows, in order:
- before the send: nothing was sent; the entries are pending and the lock expires, so
  they are sent once, by this consumer on restart or by another after the idle time;
- between the send and step 3 (the time of one Redis round trip): the message was sent but
  not marked, so it is sent again, once. This is the one duplicate at-least-once allows;
  every message ends with `ref:` and its keys so a receiver can drop it;
- between step 3 and the ack: redelivered, found `sent`, acked without a send.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import anyio

from healthbus.client import Entry, HealthBus
from healthbus.config import Config, NotifyRoute
from healthbus.connection import Backoff
from healthbus.notify.plan import Plan, plan_batch, plan_reminders, wants_service
from healthbus.notify.send import Sender
from healthbus.notify.store import NotifyStore
from healthbus.notify.text import render
from healthbus.schema import Transition

__all__ = ["BATCH_MAX", "RouteRunner", "route_group"]

log = logging.getLogger("healthbus.notify")

#: Transitions in one message at most; a larger burst becomes several.
BATCH_MAX: Final = 500
BLOCK_MS: Final = 5000
#: Consumers idle this long with nothing pending are gone processes (one per restart).
FORGET_IDLE_MS: Final = 3_600_000
#: Reminders are checked this often at most (and twice per repeat interval at least).
REMINDER_CHECK_S: Final = 30.0

Build = Callable[[int, frozenset[str]], Awaitable[Plan]]


def route_group(prefix: str, url: str) -> str:
    """The consumer group (and state key part) of a destination: stable for its URL,
    without revealing it."""
    return f"{prefix}.{hashlib.sha256(url.encode()).hexdigest()[:12]}"


class RouteRunner:
    def __init__(
        self, bus: HealthBus, config: Config, route: NotifyRoute, sender: Sender, consumer: str
    ) -> None:
        self.bus = bus
        self.route = route
        self.sender = sender
        self.consumer = consumer
        self.group = route_group(config.notify_group, route.url)
        self.group_wait_s = config.notify_group_wait_s
        self.repeat_ms = int(config.notify_repeat_s * 1000)
        self.retry_max_s = min(config.notify_retry_max_s, config.notify_claim_idle_s / 3)
        self.give_up_s = config.notify_give_up_s
        self.claim_idle_ms = int(config.notify_claim_idle_s * 1000)
        self.dashboard_url = config.dashboard_url
        self.store = NotifyStore(
            bus,
            self.group,
            token=f"lock:{consumer}:{uuid.uuid4().hex[:8]}",
            lock_ms=self.claim_idle_ms,
            deadletters_maxlen=config.deadletters_maxlen,
        )
        #: When this destination started failing (monotonic); None while it works.
        self.failing_since: float | None = None
        self.ready = anyio.Event()

    async def run(self) -> None:
        """Until cancelled; Redis errors propagate (the caller reconnects and calls again)."""
        await self.bus.ensure_group(self.group, "$")
        await self.bus.forget_consumers(self.group, FORGET_IDLE_MS)
        for _ in range(1_000_000 // BATCH_MAX):  # our own pending entries first
            entries = await self.bus.read_transitions(
                self.group, self.consumer, pending=True, count=BATCH_MAX
            )
            if not entries:
                break
            await self._handle(entries)
        self.ready.set()
        next_claim = next_reminder = 0.0
        reminder_every = min(REMINDER_CHECK_S, self.repeat_ms / 2000) if self.repeat_ms else None
        while True:
            now = time.monotonic()
            if now >= next_claim:
                entries = await self.bus.claim_transitions(
                    self.group, self.consumer, self.claim_idle_ms, count=BATCH_MAX
                )
                if entries:
                    log.info("%s: took over %d pending transitions", self.group, len(entries))
                    await self._handle(entries)
                    continue
                next_claim = now + self.claim_idle_ms / 2000
            if reminder_every is not None and now >= next_reminder:
                await self._deliver(self._reminders, ids=())
                next_reminder = time.monotonic() + reminder_every
            wake = next_claim if reminder_every is None else min(next_claim, next_reminder)
            entries = await self._collect(min(BLOCK_MS, int((wake - time.monotonic()) * 1000)))
            if entries:
                await self._handle(entries)

    async def _collect(self, block_ms: int) -> list[Entry]:
        """New entries: the first wait up to `block_ms`, then whatever else arrives within
        the group wait (the transitions of a cascade arrive together)."""
        entries = await self.bus.read_transitions(
            self.group, self.consumer, block_ms=max(1, block_ms), count=BATCH_MAX
        )
        if not entries:
            return []
        deadline = time.monotonic() + self.group_wait_s
        for _ in range(BATCH_MAX):
            left = deadline - time.monotonic()
            if left <= 0 or len(entries) >= BATCH_MAX:
                break
            entries += await self.bus.read_transitions(
                self.group,
                self.consumer,
                block_ms=max(1, int(left * 1000)),
                count=BATCH_MAX - len(entries),
            )
        return entries

    async def _handle(self, entries: Sequence[Entry]) -> None:
        ids = [entry_id for entry_id, _ in entries]
        batch = [t for _, t in entries if t is not None and wants_service(self.route, t.service)]
        if batch:

            async def build(now_ms: int, sent: frozenset[str]) -> Plan:
                return await self._batch_plan(batch, now_ms, sent)

            await self._deliver(build, ids)
        await self.bus.ack(self.group, ids)

    async def _batch_plan(
        self, batch: Sequence[Transition], now_ms: int, sent: frozenset[str]
    ) -> Plan:
        fresh = [t for t in batch if t.id not in sent]
        views = await self.bus.services(t.service for t in fresh)
        records = await self.store.open_incidents(t.incident or t.service for t in fresh)
        items = [(t, views.get(t.service)) for t in fresh]
        return plan_batch(items, records, self.route, now_ms)

    async def _reminders(self, now_ms: int, sent: frozenset[str]) -> Plan:
        records = await self.store.open_incidents()
        return plan_reminders(records, self.repeat_ms, now_ms, skip=sent)

    async def _deliver(self, build: Build, ids: Sequence[str]) -> None:
        """Send what `build` plans, retrying with backoff until it is sent, or until this
        destination has been failing for `give_up_s`: then it is dead-lettered."""
        backoff = Backoff(base=0.2, cap=self.retry_max_s)
        sent: frozenset[str] = frozenset()
        for attempt in itertools.count(1):
            now_ms = await self.store.now_ms()
            plan = await build(now_ms, sent)
            if not plan.lines:
                if plan.changes_state:
                    await self.store.commit(plan, ())
                return
            already, busy = await self.store.claim(plan.keys)
            if already:
                sent |= already  # sent before a crash, or by another notifier
                continue
            if busy:
                log.info("%s: another notifier is sending %s; waiting", self.group, busy)
            elif await self._send(plan, now_ms, attempt):
                return
            await self.bus.touch(self.group, self.consumer, ids)
            await anyio.sleep(backoff.next_delay())

    async def _send(self, plan: Plan, now_ms: int, attempt: int) -> bool:
        """One attempt; True when done with the plan: sent, or given up and dead-lettered."""
        message = render(plan.lines, now_ms, self.dashboard_url)
        where = self.sender.destination
        reason = await self.sender.send(message)
        if reason is None:
            await self.store.commit(plan, plan.keys)
            if self.failing_since is not None:
                log.warning("%s: delivering again", where)
            self.failing_since = None
            log.info("%s: sent %r", where, message.title)
            return True
        first = self.failing_since is None
        self.failing_since = self.failing_since or time.monotonic()
        if time.monotonic() - self.failing_since < self.give_up_s:
            level = logging.WARNING if first else logging.INFO
            log.log(level, "%s: sending %r failed (%s); retrying", where, message.title, reason)
            return False
        log.error(
            "%s: dead-lettered %r after %d attempts: %s", where, message.title, attempt, reason
        )
        await self.store.dead_letter(message, where, reason, attempt)
        # It counts as told: the resolve of an alert still goes out, and reminders too.
        await self.store.commit(plan, ())
        return True
