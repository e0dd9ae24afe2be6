"""Server-Sent Events as bytes: framing, the `snapshot` event and one updates entry's events.

Every `data:` is one line of JSON (msgspec escapes control characters inside strings), so no
value a publisher chooses can end an event or start another. Renderings are cached per
selection: a hundred dashboards with the same filters cost one encoding per entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

import msgspec

from healthbus.schema import Meta, ServiceView, Update, encode
from healthbus.web.replica import Replica
from healthbus.web.selection import Selection, redact_transition, redact_view

__all__ = ["EVERYTHING", "Entry", "frame", "render_snapshot"]

EVERYTHING: Final = Selection()
#: Distinct selections whose rendering one entry keeps; others are rendered each time.
CACHE_PER_ENTRY: Final = 16

KindOf = Callable[[str], str | None]


def frame(event: bytes, data: bytes, event_id: str | None = None) -> bytes:
    """One SSE event. `data` is JSON; a raw line break would still be framed correctly."""
    if b"\n" in data or b"\r" in data:  # never from msgspec; kept so framing cannot break
        data = b"\ndata: ".join(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"))
    head = b"event: " + event + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.replace("\n", "").replace("\r", "").encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


class _UpdateData(msgspec.Struct):
    seq: int
    status: str
    services: list[ServiceView]
    removed: list[str]
    fresh: dict[str, int]


class _SnapshotData(msgspec.Struct):
    gen: str | None
    seq: int
    status: str
    #: True when this worker cannot reach Redis or the aggregator stopped refreshing `_meta`.
    stale: bool
    meta: Meta | None
    services: msgspec.Raw
    counts: dict[str, int]
    total: int
    truncated: bool


class Entry:
    """One updates-stream entry as applied by the hub: its position and its renderings."""

    __slots__ = ("_cache", "gen", "id", "pos", "removed_kinds", "size", "update")

    def __init__(
        self,
        pos: int,
        entry_id: str,
        update: Update,
        removed_kinds: dict[str, str] | None = None,
        size: int = 0,
    ) -> None:
        #: The hub's position after applying it (0 for entries read back for a resume).
        self.pos = pos
        self.id = entry_id
        self.gen = update.gen
        self.update = update
        self.removed_kinds = removed_kinds or {}
        #: Bytes of the entry as stored (what the hub's ring budget counts).
        self.size = size
        self._cache: dict[Selection, bytes] = {}

    @property
    def event_id(self) -> str:
        return f"{self.gen}-{self.id}"

    def render(self, sel: Selection, kind_of: KindOf) -> bytes:
        """The `update` and `transition` events this selection sees; only the last has an id."""
        cached = self._cache.get(sel)
        if cached is None:
            cached = self._render(sel, kind_of)
            if len(self._cache) < CACHE_PER_ENTRY:
                self._cache[sel] = cached
        return cached

    def _render(self, sel: Selection, kind_of: KindOf) -> bytes:
        u = self.update
        services, removed, fresh, transitions = u.services, u.removed, u.fresh, u.transitions
        if sel.filters or sel.status_only:
            kinds = {s.name: s.kind for s in services}

            def kind(name: str) -> str | None:
                return kinds.get(name) or self.removed_kinds.get(name) or kind_of(name)

            changed = {t.service for t in transitions}
            services = [
                s
                for s in services
                if sel.keeps(s.name, s.kind) and (not sel.status_only or s.name in changed)
            ]
            removed = [n for n in removed if sel.keeps(n, self.removed_kinds.get(n))]
            fresh = {} if sel.status_only else _select_fresh(fresh, sel, kind)
            transitions = [t for t in transitions if sel.keeps(t.service, kind(t.service))]
        if sel.redact:
            errors = {s.name: s.error for s in services if s.error}
            services = [redact_view(s) for s in services]
            transitions = [redact_transition(t, errors.get(t.service)) for t in transitions]
        events: list[tuple[bytes, bytes]] = []
        if not (sel.filters or sel.status_only) or services or removed or fresh:
            data = _UpdateData(u.seq, u.status, services, removed, fresh)
            events.append((b"update", encode(data)))
        events.extend((b"transition", encode(t)) for t in transitions)
        return _join(events, self.event_id)

    def __repr__(self) -> str:
        return f"Entry(pos={self.pos}, id={self.id!r}, seq={self.update.seq})"


def _select_fresh(fresh: dict[str, int], sel: Selection, kind: KindOf) -> dict[str, int]:
    if sel.names is not None and len(sel.names) < len(fresh):
        candidates: Iterable[str] = (n for n in sel.names if n in fresh)
    else:
        candidates = fresh
    return {n: fresh[n] for n in candidates if sel.keeps(n, kind(n))}


def _join(events: list[tuple[bytes, bytes]], event_id: str) -> bytes:
    last = len(events) - 1
    return b"".join(
        frame(name, data, event_id if i == last else None) for i, (name, data) in enumerate(events)
    )


def render_snapshot(replica: Replica, sel: Selection, *, limit: int, stale: bool) -> bytes:
    """The `snapshot` event: the whole state this selection sees, as of `replica.cursor`.

    Above `limit` matching services it carries the counts and only the services that are
    not healthy (at most `limit` of them), with `truncated: true`.
    """
    meta = replica.meta
    if meta is None:
        empty = _SnapshotData(None, 0, "unknown", stale, None, msgspec.Raw(b"[]"), {}, 0, False)
        return frame(b"snapshot", encode(empty))
    views = replica.views
    if not sel.filters:
        matching = replica.ordered()
        counts = replica.counts_present()
    else:
        if sel.names is not None and sel.kinds is None:
            matching = sorted(n for n in sel.names if n in views)
        else:
            matching = [n for n in replica.ordered() if sel.keeps(n, views[n].kind)]
        counts = {}
        for name in matching:
            status = views[name].status
            counts[status] = counts.get(status, 0) + 1
    truncated = len(matching) > limit
    if not truncated:
        shown = matching
    elif not sel.filters:
        shown = sorted(replica.unhealthy)[:limit]
    else:
        shown = [n for n in matching if views[n].status != "healthy"][:limit]
    if sel.redact:
        services = encode([redact_view(views[n]) for n in shown])
        meta = msgspec.structs.replace(meta, leader="")
    else:
        services = b"[" + b",".join([replica.raw(n) for n in shown]) + b"]"
    data = _SnapshotData(
        gen=meta.gen,
        seq=meta.seq,
        status=meta.status,
        stale=stale,
        meta=meta,
        services=msgspec.Raw(services),
        counts=counts,
        total=len(matching),
        truncated=truncated,
    )
    return frame(b"snapshot", encode(data), f"{meta.gen}-{replica.cursor}")
