"""Turning what the fold changed into commit parts, and a part into the script's ARGV.

A part holds at most MAX_SERVICES services or about MAX_BYTES; each service's transitions
travel in the same part as its state, so a crash between parts never loses or repeats one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Final

from aggregator.fold import view
from aggregator.persist import service_row
from aggregator.sla import RollupWrite
from aggregator.state import FoldState
from healthbus.schema import Transition, encode

__all__ = ["MAX_BYTES", "MAX_SERVICES", "DeadLetter", "Part", "build_parts", "commit_args"]

MAX_SERVICES: Final = 1000
#: KEYS of the commit script before the rollup hashes (see scripts.COMMIT).
FIXED_KEYS: Final = 7
MAX_BYTES: Final = 512 * 1024
DEADLETTER_FIELD_BYTES: Final = 1024
DEADLETTER_MAX_FIELDS: Final = 16


@dataclass(slots=True)
class DeadLetter:
    id: str
    reason: str
    fields: dict[bytes, bytes]

    def flat(self) -> list[bytes | str]:
        out: list[bytes | str] = ["reason", self.reason, "id", self.id]
        for name, value in list(self.fields.items())[:DEADLETTER_MAX_FIELDS]:
            out += [b"f:" + name[:128], value[:DEADLETTER_FIELD_BYTES]]
            out += [b"len:" + name[:128], str(len(value))]
        return out


@dataclass(slots=True)
class Part:
    """One commit: rows to write, the transitions they caused, and what subscribers see."""

    names: set[str] = field(default_factory=set)
    views: dict[str, bytes] = field(default_factory=dict)
    state: dict[str, bytes] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    fresh: dict[str, int] = field(default_factory=dict)
    published: list[bytes] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    rollups: list[RollupWrite] = field(default_factory=list)
    size: int = 0

    def rollup_keys(self) -> list[tuple[str, str]]:
        """The (resolution, service) of each rollup hash this part writes, in KEYS order
        after the FIXED_KEYS."""
        return list(dict.fromkeys((w.resolution, w.service) for w in self.rollups))

    @property
    def publishes(self) -> bool:
        """Whether this part changes what subscribers see (an updates entry, a seq bump)."""
        return bool(self.published or self.removed or self.transitions or self.fresh)


def build_parts(
    state: FoldState,
    transitions: Iterable[Transition],
    *,
    cursor: str,
    flush: Collection[str] = (),
    all_rows: bool = False,
) -> list[Part]:
    """Drain what the fold owes into parts, each row stamped `applied` = `cursor` (every
    entry up to it is folded into it).

    Status changes, transitions, removals and SLA writes go at once. The rows and views
    of services whose only change is freshness wait (in `pending.state`, `.deferred`,
    `.fresh`) for the flush share `flush` that names them, or for `all_rows`.
    """
    pending = state.pending
    transitions = list(transitions)
    names = pending.urgent | pending.removed | {t.service for t in transitions}
    names |= state.ledger.services()
    names.update(flush)
    if all_rows:
        names |= pending.state
    now_ms = state.clock.to_wall(state.clock.now_v)
    parts = [Part()]
    for name in sorted(names):
        part = parts[-1]
        if len(part.names) >= MAX_SERVICES or part.size >= MAX_BYTES:
            part = Part()
            parts.append(part)
        part.names.add(name)
        writes = state.ledger.take(name, now_ms)
        if writes:
            part.rollups += writes
            part.size += sum(len(w.delta) + 64 for w in writes)
        svc = state.services.get(name)
        pending.state.discard(name)
        if svc is None:
            part.removed.append(name)
            continue
        svc.applied = cursor
        row = service_row(svc)
        part.state[name] = row
        part.size += len(row)
        if name in pending.urgent or (name in pending.deferred and name in flush):
            rendered = encode(view(svc))
            part.views[name] = rendered
            part.published.append(rendered)
            part.size += 2 * len(rendered)
            # Published whole, so nothing of it waits for a flush any more.
            pending.deferred.discard(name)
            pending.fresh.discard(name)
        elif name in pending.fresh and name in flush:
            rendered = encode(view(svc))
            part.views[name] = rendered
            instances = svc.each()
            if instances:
                part.fresh[name] = max(i.last_ms for i in instances)
            pending.fresh.discard(name)
    # In fold order, each with its service's part; one pass, as a commit may carry a
    # transition for every service (100k falling silent together: 318 parts).
    part_of = {name: part for part in parts for name in part.names}
    for t in transitions:
        part_of[t.service].transitions.append(t)
    pending.urgent.clear()
    pending.removed.clear()
    pending.shrink()
    return parts


def commit_args(
    token: str,
    expect_meta: bool,
    meta: bytes,
    update: bytes | None,
    part: Part,
    *,
    transitions_maxlen: int,
    updates_maxlen: int,
    updates_minid: str,
    heartbeats_minid: str | None,
    deadletters_maxlen: int,
) -> list[bytes | str | int]:
    args: list[bytes | str | int] = [
        token,
        "1" if expect_meta else "0",
        meta,
        update or b"",
        transitions_maxlen,
        updates_maxlen,
        updates_minid,
        heartbeats_minid or "",
        deadletters_maxlen,
        len(part.views),
    ]
    for name, rendered in part.views.items():
        args += [name, rendered]
    args.append(len(part.removed))
    args += part.removed
    args.append(len(part.state))
    for name, row in part.state.items():
        args += [name, row]
    args.append(len(part.transitions))
    args += [encode(t) for t in part.transitions]
    args.append(len(part.deadletters))
    for dead in part.deadletters:
        flat = dead.flat()
        args.append(len(flat) // 2)
        args += flat
    index = {key: FIXED_KEYS + 1 + i for i, key in enumerate(part.rollup_keys())}
    args.append(len(part.rollups))
    for w in part.rollups:
        args += [index[(w.resolution, w.service)], w.field, w.delta, w.absolute, w.ttl_ms, w.cutoff]
    return args
