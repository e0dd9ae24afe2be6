"""The fold: heartbeats in, derived status and transitions out.

`apply`, `reject`, `expire` and `grant` are pure of I/O and read no clock: the time is the
heartbeat's stream entry time, or the `now` the runner passes in. They mutate the
FoldState they are given and return the transitions they caused.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import datetime

from msgspec.structs import replace

from aggregator.dependencies import FAILING, relink, status_changed
from aggregator.flapping import HEALTHY_RUNS, HEALTHY_WINDOW, WINDOW, judge_flapping
from aggregator.grace import grace_ms, learn, learn_from
from aggregator.hysteresis import observe
from aggregator.judgement import EVENT_PREFIX, Judgement
from aggregator.rules import Rules, judge, judge_age, judge_content, next_change_ms
from aggregator.sla import MAX_GRANTS, account, record_duration
from aggregator.state import FoldState, Instance, Service
from healthbus.commands import Command, fold_command, prune
from healthbus.errors import InvalidMessage
from healthbus.schema import (
    STATUS_ORDER,
    Heartbeat,
    InstanceView,
    ServiceView,
    Status,
    Transition,
    iso_ms,
    worst,
)

__all__ = ["Folder", "event_name", "view"]


def event_name(from_: Status, to: Status) -> str:
    if to == "healthy":
        return EVENT_PREFIX + ("appeared" if from_ == "unknown" else "recovered")
    if to == "unknown":
        return EVENT_PREFIX + "left"
    return EVENT_PREFIX + to


class Folder(Judgement):
    """The fold's operations over one FoldState, with its rules and limits."""

    def __init__(
        self, state: FoldState, rules: Rules | None = None, max_services: int = 200_000
    ) -> None:
        super().__init__(state, rules or Rules())
        self.max_services = max_services
        self._flap = self.rules.flap_high_pct > 0

    # -- inputs -----------------------------------------------------------------------

    def apply(self, hb: Heartbeat, at_ms: int) -> list[Transition]:
        """Fold one valid heartbeat whose stream entry time is `at_ms`.

        Deadlines up to `at_ms` are folded first (their transitions come first), so the
        result does not depend on how the runner batches its reads and expire calls.
        """
        state = self.state
        if hb.service not in state.services:
            self._check_room()
        v = state.clock.to_v(at_ms)
        out = self._expire_to(v)
        svc = state.services.get(hb.service)
        if svc is not None and self._refresh(svc, hb, at_ms, v):
            return out
        hb = _interned(hb)
        # Judge at the watermark: an entry may be a few ms behind an extrapolated `now`.
        now = state.clock.now_v
        if svc is None:
            svc = self._new_service(hb.service, hb.kind, at_ms, v)
        key = hb.instance or ""
        pending = state.pending
        pending.state.add(svc.name)
        if hb.goodbye:
            if svc.drop(key) is not None:
                pending.urgent.add(svc.name)
            if not svc.each():
                svc.departed_v = v
            relink(state, svc)
            return out + self._rejudge(svc, now, observed=False)
        inst = svc.find(key)
        if hb.phase == "start":
            timeout_ms = int((hb.timeout_s or hb.interval_s) * 1000)
            if inst is None:
                inst = Instance(
                    hb=hb, last_ms=at_ms, last_v=v, completed=False, depends_on=hb.depends_on
                )
                svc.put(inst)
                pending.urgent.add(svc.name)
            inst.started_v, inst.start_timeout_ms = v, timeout_ms
        else:
            if inst is None or not inst.completed or _material(inst.hb, hb):
                pending.urgent.add(svc.name)
            elif inst.hb.details != hb.details or inst.hb.duration_ms != hb.duration_ms:
                pending.deferred.add(svc.name)
            else:
                pending.fresh.add(svc.name)
            fresh = Instance(hb=hb, last_ms=at_ms, last_v=v)
            if inst is not None:
                # Keep the last verdict, so that only a real change of it counts as urgent.
                fresh.status, fresh.reason = inst.status, inst.reason
            fresh.depends_on = hb.depends_on if hb.depends_on is not None else _deps(inst)
            learn(inst, fresh)
            if hb.duration_ms is not None and self.retention.day:
                record_duration(svc, at_ms, hb.duration_ms, state.ledger)
            rise, fall = self.rules.counts(hb.kind)
            if rise > 1 or fall > 1:
                status, reason = judge_content(hb, self.rules)
                fresh.held = observe(inst.held if inst else None, status, reason, rise, fall)
            svc.put(fresh)
        svc.kind, svc.interval_s, svc.last_v = hb.kind, hb.interval_s, v
        relink(state, svc)
        svc.departed_v = None
        if svc.invalid is not None:
            svc.invalid = None
            pending.urgent.add(svc.name)
        return out + self._rejudge(svc, now, observed=hb.phase != "start")

    def _refresh(self, svc: Service, hb: Heartbeat, at_ms: int, v: int) -> bool:
        """Fold a heartbeat that repeats what its healthy instance said, on time: most
        heartbeats. `_rejudge` would find the same status, reason and flap window, so it is
        not run, and the service's deadline stays where it is (never later than the true
        one: when it comes, `_rejudge` finds nothing changed and schedules the true one).
        A window of healthy observations only grows by one more.
        False, with nothing changed, when the heartbeat could change anything else."""
        inst = svc.find(hb.instance or "")
        flap = self._flap
        if (
            inst is None
            or svc.status != "healthy"
            or inst.status != "healthy"
            or inst.reason != "ok"
            or inst.held is not None
            or inst.started_v is not None
            or hb.phase is not None
            or hb.goodbye
            or hb.intent is not None
            or svc.flapping
            or (flap and not HEALTHY_WINDOW.startswith(svc.flap_window))
            or not (self._all_plain or self._plain(svc))
            or _material(inst.hb, hb)
            or svc.kind != hb.kind
            or svc.interval_s != hb.interval_s
        ):
            return False
        # Still healthy at the watermark, the service's deadline no later than the one
        # this heartbeat sets, and no change of any instance due before the watermark.
        limit = self.rules.degraded_after * hb.interval_s * 1000
        deadline = svc.deadline_v
        if deadline is None or not self.state.clock.now_v < deadline <= v + limit:
            return False
        old = inst.hb
        same_details = old.details == hb.details
        same = same_details and old.duration_ms == hb.duration_ms
        if not same and judge_content(hb, self.rules) != ("healthy", "ok"):
            return False
        # Kept with the instance's own copies of what it repeats: a fleet's steady
        # heartbeats would each hold new ones (names, interval and details, ~400 bytes).
        hb = replace(
            hb, service=old.service, kind=old.kind, instance=old.instance,
            interval_s=old.interval_s, details=old.details if same_details else hb.details,
        )  # fmt: skip
        # What a new Instance would hold (status, reason, dependencies the same): in place.
        old_v = inst.last_v
        inst.hb, inst.last_ms, inst.last_v = hb, at_ms, v
        learn_from(inst, old, old_v)
        if hb.duration_ms is not None and self.retention.day:
            record_duration(svc, at_ms, hb.duration_ms, self.state.ledger)
        svc.last_v = v
        if flap and len(svc.flap_window) < WINDOW:
            svc.flap_window = HEALTHY_RUNS[len(svc.flap_window) + 1]
        pending = self.state.pending
        pending.state.add(svc.name)
        (pending.fresh if same else pending.deferred).add(svc.name)
        return True

    def reject(self, service: str, reason: str, at_ms: int) -> list[Transition]:
        """A malformed entry named this (valid) service: its publisher is broken."""
        state = self.state
        if service not in state.services:
            self._check_room()
        v = state.clock.to_v(at_ms)
        out = self._expire_to(v)
        svc = state.services.get(service) or self._new_service(service, "perpetual", at_ms, v)
        if svc.invalid != reason:
            state.pending.urgent.add(svc.name)
        svc.invalid = reason
        state.pending.state.add(svc.name)
        return out + self._rejudge(svc, state.clock.now_v, observed=True)

    def expire(self, now_ms: int) -> list[Transition]:
        """Advance the watermark to `now_ms` and fold every deadline passed on the way.

        A transition caused by silence is stamped at its deadline, not when noticed.
        """
        out = self._expire_to(self.state.clock.to_v(now_ms))
        commands = self.state.commands
        if commands.silences:
            prune(commands, self.state.clock.to_wall(self.state.clock.now_v))
        return out

    def command(self, cmd: Command, at_ms: int, entry_id: str) -> list[Transition]:
        """Fold one operator command, commands-stream entry `entry_id` of time `at_ms`.

        Deadlines up to `at_ms` come first, as for a heartbeat, so a silence marks exactly
        the transitions stamped inside its window, however the runner batches its reads.
        """
        out = self._expire_to(self.state.clock.to_v(at_ms))
        fold_command(self.state.commands, cmd, at_ms)
        self.state.commands.cursor = entry_id
        return out

    def grant(self, blind_from_ms: int, blind_to_ms: int) -> int:
        """Declare [from, to) blind (Redis unreachable, or entries trimmed unread).

        That span counts toward no service's age. Returns the milliseconds granted.
        """
        clock = self.state.clock
        span = max(0, blind_to_ms - max(blind_from_ms, clock.to_wall(clock.now_v)))
        if span:
            end = clock.to_wall(clock.now_v) + span
            clock.grants = [*clock.grants[-MAX_GRANTS + 1 :], (end - span, end)]
            clock.offset_ms += span
            clock.floor_v = clock.now_v
        return span

    def next_deadline_ms(self) -> int | None:
        """Wall time of the next pending deadline, so the runner knows how long to wait:
        never later than the next change (see `_refresh`), perhaps earlier."""
        v = self.state.next_deadline_v()
        return None if v is None else self.state.clock.to_wall(v)

    # -- internals --------------------------------------------------------------------

    def _expire_to(self, target: int) -> list[Transition]:
        """Fold every deadline up to virtual time `target`, then advance the watermark."""
        state = self.state
        if not state.any_due(target):  # most calls: one comparison
            self._advance(target)
            return []
        out: list[Transition] = []
        while True:
            due = state.due(target)
            if not due:
                break
            for at, svc in due:
                self._advance(at)
                out.extend(self._rejudge(svc, at))
        self._advance(target)
        return out

    def _advance(self, v: int) -> None:
        clock = self.state.clock
        if v > clock.now_v:
            clock.now_v = v

    def _check_room(self) -> None:
        """Refuse a new name past max_services (before anything changes)."""
        if len(self.state.services) >= self.max_services:
            raise InvalidMessage(
                f"already tracking max_services={self.max_services} services; "
                "raise HEALTHBUS_MAX_SERVICES or split fleets into namespaces"
            )

    def _new_service(self, name: str, kind: str, at_ms: int, v: int) -> Service:
        self._check_room()
        # last_v starts at the first sighting, so that the forget deadline is never in the past.
        svc = Service(name=name, kind=kind, since_ms=at_ms, last_v=v, sla_ms=at_ms)
        svc.sla_off = self.state.clock.offset_ms
        self.state.add(svc)
        self.state.pending.urgent.add(name)
        return svc

    def _rejudge(self, svc: Service, at_v: int, *, observed: bool = False) -> list[Transition]:
        """Recompute `svc` as of virtual time `at_v`; a transition if its status changed.

        `observed`: a heartbeat (or reject) of it was just folded, which flap detection
        counts as an observation even when its status stays the same."""
        rules = self.rules
        status: Status = "unknown"
        raw: Status = "unknown"
        reason = "no live instance"
        deadline: int | None = None
        instances = svc.each()
        many = len(instances) > 1
        for inst in instances:
            inst_status, inst_reason, inst_deadline, inst_raw = self._judge_instance(inst, at_v)
            raw = worst(raw, inst_raw)
            if (inst.status, inst.reason) != (inst_status, inst_reason):
                inst.status, inst.reason = inst_status, inst_reason
                self.state.pending.urgent.add(svc.name)
            if STATUS_ORDER[inst_status] > STATUS_ORDER[status] or reason == "no live instance":
                status = inst_status
                reason = f"instance {inst.key}: {inst_reason}" if many and inst.key else inst_reason
            if inst_deadline > at_v:
                # Past the forget age an instance's age rule has no further deadline (and a
                # deadline not after `at_v` would make expire() fold it again forever).
                deadline = inst_deadline if deadline is None else min(deadline, inst_deadline)
        if rules.quorum and instances:
            status, raw, reason = self._quorum(svc, status, raw, reason)
        if svc.invalid is not None:
            status, reason, raw = "error", svc.invalid, "error"
        elif not instances:
            deadline = None
            if svc.departed_v is not None:
                # Planned stop: keep the last status for a grace period, then leave.
                status, reason = svc.status, "stopped (goodbye); waiting for an instance"
                grace = int(rules.error_after * svc.interval_s * 1000)
                if at_v >= svc.departed_v + grace:
                    return self._leave(svc, at_v, "all instances stopped (goodbye)")
                deadline = svc.departed_v + grace
        if at_v - svc.last_v >= rules.forget_after_ms:
            return self._leave(svc, at_v, "silent for more than the forget period")
        forget_at = svc.last_v + rules.forget_after_ms
        deadline = forget_at if deadline is None else min(deadline, forget_at)
        self.state.schedule(svc, deadline)
        out: list[Transition] = []
        if rules.flap_high_pct > 0:
            window, flapping = svc.flap_window, svc.flapping
            status, reason, news = judge_flapping(svc, status, raw, reason, observed, rules)
            if window != svc.flap_window:
                self.state.pending.state.add(svc.name)
            if flapping != svc.flapping:
                self.state.pending.urgent.add(svc.name)
                out.append(self._event(svc, "flapping" if svc.flapping else "stable", at_v, news))
        if reason != svc.reason:
            svc.reason = reason
            self.state.pending.urgent.add(svc.name)
        if status != svc.status:
            out.append(self._transition(svc, status, at_v))
        target = self._target(svc.name)
        if target is not None:
            out += self._burn(svc, target, at_v)
        return out

    def _judge_instance(self, inst: Instance, at_v: int) -> tuple[Status, str, int, Status]:
        """Status, reason, next deadline, and the status without hysteresis (what flap
        detection observes)."""
        hb = inst.hb
        anchor = inst.last_v
        intended = False
        if hb.intent is not None:
            until_v = self.state.clock.to_v(_epoch_ms(hb.intent.until))
            anchor = max(anchor, until_v)
            intended = at_v < until_v
        age = max(0, at_v - anchor)
        grace = grace_ms(inst, self.rules)
        if inst.completed and inst.held is not None:
            status, reason = inst.held.status, inst.held.reason
            late = judge_age(hb, age, self.rules, grace)
            if late is not None and STATUS_ORDER[late[0]] > STATUS_ORDER[status]:
                status, reason = late
            raw = judge(hb, age, self.rules, grace)[0]
        elif inst.completed:
            status, reason = judge(hb, age, self.rules, grace)
            raw = status
            if intended and status == "healthy" and hb.intent is not None:
                reason = f"{hb.intent.state} until {iso_ms(_epoch_ms(hb.intent.until))}"
        else:
            status = raw = "unknown"
            reason = "started; waiting for its first result"
        deadline = anchor + next_change_ms(hb, age, self.rules, grace)
        if inst.started_v is not None and inst.start_timeout_ms is not None:
            overdue_at = inst.started_v + inst.start_timeout_ms
            if at_v > overdue_at:
                status = raw = "error"
                reason = (
                    f"started {(at_v - inst.started_v) / 1000:.1f} s ago and has not finished "
                    f"(timeout {inst.start_timeout_ms / 1000:g} s)"
                )
            else:
                deadline = min(deadline, overdue_at + 1)
        return status, reason, deadline, raw

    def _transition(self, svc: Service, to: Status, at_v: int) -> Transition:
        state = self.state
        at_ms = state.clock.to_wall(at_v)
        from_ = svc.status
        duration_ms: int | None = None
        slo = self._target(svc.name) is not None
        account(svc, at_ms, state.clock, state.ledger, slo)
        if to in ("degraded", "error"):
            root = svc.affected_by[0] if svc.affected_by else None
            if svc.incident is None:
                svc.incident = f"{svc.name}:{at_ms}"
                svc.incident_ms, svc.incident_root = at_ms, root
                state.ledger.incident(svc.name, at_ms)
        else:
            root = svc.incident_root
            if svc.incident_ms is not None:
                duration_ms = at_ms - svc.incident_ms
        incident = svc.incident
        if to in ("healthy", "unknown"):
            svc.incident = svc.incident_ms = svc.incident_root = None
        state.set_status(svc, to)
        state.ledger.mark(svc.name, at_ms, to)
        svc.since_ms = at_ms
        state.pending.urgent.add(svc.name)
        state.pending.state.add(svc.name)
        if (from_ == FAILING) != (to == FAILING):
            status_changed(state, svc.name)
        event = event_name(from_, to)
        return Transition(
            id=f"{svc.name}:{event.rsplit('.', 1)[1]}:{at_ms}",
            event=event,
            service=svc.name,
            from_=from_,
            to=to,
            at=iso_ms(at_ms),
            at_ms=at_ms,
            reason=svc.reason,
            incident=incident,
            root_cause=root,
            suppressed=root is not None,
            silenced=self._silenced(svc.name, at_ms),
            flapping=svc.flapping,
            incident_duration_ms=duration_ms,
        )

    def _leave(self, svc: Service, at_v: int, reason: str) -> list[Transition]:
        svc.reason = reason
        transition = self._transition(svc, "unknown", at_v)
        pending = self.state.pending
        self.state.remove(svc)
        for bucket in (pending.urgent, pending.deferred, pending.fresh):
            bucket.discard(svc.name)
        pending.removed.add(svc.name)
        return [transition]


def _interned(hb: Heartbeat) -> Heartbeat:
    """`hb` with its kind and instance names interned: a fleet repeats a few kinds and hosts
    across thousands of services, and each kept heartbeat held copies of its own."""
    kind = sys.intern(hb.kind)
    instance = None if hb.instance is None else sys.intern(hb.instance)
    if kind is hb.kind and instance is hb.instance:
        return hb
    return replace(hb, kind=kind, instance=instance)


def _deps(inst: Instance | None) -> list[str] | None:
    return inst.depends_on if inst is not None else None


def _material(old: Heartbeat, new: Heartbeat) -> bool:
    """Changes a subscriber must see at once (everything but details, duration and time)."""
    return (
        old.ok != new.ok
        or old.status != new.status
        or old.error != new.error
        or old.hint != new.hint
        or old.kind != new.kind
        or old.interval_s != new.interval_s
        or old.depends_on != new.depends_on
        or old.intent != new.intent
    )


def _epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def view(svc: Service) -> ServiceView:
    """The snapshot's document for one service."""
    instances = list(svc.each())
    latest = bad = instances[0] if instances else None
    if len(instances) > 1:  # most services have one (rendered for each every second)
        instances.sort(key=lambda inst: inst.last_ms, reverse=True)
        latest = instances[0]
        bad = max(instances, key=lambda inst: STATUS_ORDER[inst.status])
    error = svc.invalid or (bad.hb.error if bad is not None and bad.status != "healthy" else None)
    hb = latest.hb if latest is not None else None
    # By position, in field order: msgspec's keyword path took most of a render.
    return ServiceView(
        svc.name,
        svc.kind,
        svc.status,
        svc.reason,
        iso_ms(svc.since_ms),
        iso_ms(latest.last_ms) if latest else None,
        latest.last_ms if latest else None,
        hb.duration_ms if hb else None,
        svc.interval_s,
        hb.details if hb else None,
        error,
        hb.hint if hb else None,
        list(svc.depends_on) or None,
        svc.incident,
        svc.flapping,
        [
            InstanceView(
                key,
                inst.status,
                iso_ms(inst.last_ms),
                inst.last_ms,
                inst.hb.duration_ms,
                inst.hb.error,
                inst.reason,
                inst.restarts,
                inst.lost,
            )
            for inst in instances
            if (key := inst.hb.instance or "") or len(instances) > 1
        ],
        svc.affected_by,
    )


def worst_status(counts: Iterable[tuple[Status, int]]) -> Status:
    status: Status = "unknown"
    for candidate, n in counts:
        if n and STATUS_ORDER[candidate] > STATUS_ORDER[status]:
            status = candidate
    return status
