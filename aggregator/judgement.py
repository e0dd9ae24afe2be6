"""The judgement the fold adds to the plain status rules, over the same state.

Quorum rules, SLO burn, silence marks, the transitions that keep a status (`flapping`,
`stable`, `slo_burn`, `slo_ok`) and the SLA accounting rounds; `Folder` inherits them. The
pure logic of each lives in its own module (quorum.py, slo.py, commands, sla.py); this is
where it meets the fold's state. No I/O, no clock.
"""

from __future__ import annotations

from aggregator.quorum import quorum_for, quorum_status
from aggregator.rules import Rules
from aggregator.sla import MINUTE_MS, Retention, account
from aggregator.slo import judge_burn, target_for
from aggregator.state import FoldState, Service
from healthbus.commands import silenced
from healthbus.schema import Status, Transition, iso_ms

__all__ = ["EVENT_PREFIX", "Judgement"]

EVENT_PREFIX = "healthbus.service."


class Judgement:
    """Quorum, SLO, silences and SLA rounds over a FoldState (see the module doc)."""

    def __init__(self, state: FoldState, rules: Rules) -> None:
        self.state = state
        self.rules = rules
        #: Each service's quorum rule (None: worst-of) and SLO target, looked up once.
        self._quorums: dict[str, int | None] = {}
        self._targets: dict[str, float | None] = {}
        self.retention = Retention.of_rules(rules)
        state.ledger.retention = self.retention
        #: Services still to account in this round of `account` (a rotation).
        self._rotation: list[str] = []
        #: No service has a quorum rule, an SLO or hysteresis: `_plain` holds for all.
        self._all_plain = not (
            rules.quorum
            or rules.slo
            or rules.hysteresis_by_kind
            or rules.rise > 1
            or rules.fall > 1
        )

    def account(self, budget: int) -> None:
        """SLA: account up to `budget` services' time in state up to the watermark, in a
        rotation, so that each is accounted every so often whatever its transitions."""
        if not (self.retention.enabled or self.rules.slo):
            return
        state = self.state
        end = state.clock.to_wall(state.clock.now_v)
        for _ in range(min(budget, len(state.services))):
            if not self._rotation:
                self._rotation = list(state.services)
            svc = state.services.get(self._rotation.pop())
            if svc is None:
                continue
            slo = self._target(svc.name) is not None
            if account(svc, end, state.clock, state.ledger, slo):
                state.pending.state.add(svc.name)

    def _target(self, name: str) -> float | None:
        """The SLO target of service `name`, or None. Remembered per name, but only while
        SLO rules are configured: without, every service's None cost 19 bytes at 100k."""
        if not self.rules.slo:
            return None
        target = self._targets.get(name, -1.0)
        if target == -1.0:
            target = self._targets[name] = target_for(name, self.rules.slo)
        return target

    def _burn(self, svc: Service, target: float, at_v: int) -> list[Transition]:
        """SLO: account up to now, then say when the error budget starts or stops burning
        too fast. While it could, look again at every minute's turn."""
        state = self.state
        at_ms = state.clock.to_wall(at_v)
        if account(svc, at_ms, state.clock, state.ledger, slo=True):
            state.pending.state.add(svc.name)
        burning, why = judge_burn(svc, at_ms, target)
        out: list[Transition] = []
        if burning != svc.slo_burning:
            svc.slo_burning = burning
            state.pending.state.add(svc.name)
            out.append(self._event(svc, "slo_burn" if burning else "slo_ok", at_v, why))
        if svc.slo_burning or svc.status == "error" or svc.slo_minutes:
            turn = max(state.clock.to_v(at_ms - at_ms % MINUTE_MS + MINUTE_MS), at_v + 1)
            if svc.deadline_v is None or turn < svc.deadline_v:
                state.schedule(svc, turn)
        return out

    def _event(self, svc: Service, name: str, at_v: int, reason: str) -> Transition:
        """A transition that changes no status (`from` = `to`): flapping, stable."""
        at_ms = self.state.clock.to_wall(at_v)
        return Transition(
            id=f"{svc.name}:{name}:{at_ms}",
            event=EVENT_PREFIX + name,
            service=svc.name,
            from_=svc.status,
            to=svc.status,
            at=iso_ms(at_ms),
            at_ms=at_ms,
            reason=reason,
            incident=svc.incident,
            silenced=self._silenced(svc.name, at_ms),
            flapping=svc.flapping,
        )

    def _silenced(self, name: str, at_ms: int) -> bool:
        silences = self.state.commands.silences
        return bool(silences) and silenced(silences.values(), name, at_ms)

    def _quorum_k(self, name: str) -> int | None:
        k = self._quorums.get(name, -1)
        if k == -1:
            k = self._quorums[name] = quorum_for(name, self.rules.quorum)
        return k

    def _plain(self, svc: Service) -> bool:
        """Judged by the status rules alone: no quorum rule, no SLO target, rise and fall
        of 1 for its kind. A steady heartbeat of such a service cannot change its
        judgement (see Folder._refresh)."""
        if self._all_plain:
            return True
        rules = self.rules
        if rules.quorum and self._quorum_k(svc.name):
            return False
        if self._target(svc.name) is not None:
            return False
        return rules.counts(svc.kind) == (1, 1)

    def _quorum(
        self, svc: Service, status: Status, raw: Status, reason: str
    ) -> tuple[Status, Status, str]:
        """A quorum rule, if one matches, replaces worst-of (raw included)."""
        k = self._quorum_k(svc.name)
        found = quorum_status([i.status for i in svc.each()], k) if k else None
        if found is None or found[0] == status == "healthy":
            return status, raw, reason
        return found[0], found[0], found[1]
