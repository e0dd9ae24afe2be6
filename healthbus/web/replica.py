"""The in-memory copy of the snapshot hash that one web worker serves from.

Loaded from one consistent `HGETALL` (plus the updates stream's last id), then kept current
by applying updates entries in stream order. Pure: no I/O, no clock. An entry that cannot be
applied exactly (another generation, a gap in `seq`, no data to apply it to) raises
`NeedReload`, and the hub loads a fresh copy instead of guessing.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from healthbus.schema import STATUS_ORDER, Meta, ServiceView, Update, decode_meta, encode, iso_ms

__all__ = ["NeedReload", "Replica", "stream_entries"]

#: Fields of the snapshot hash that are not services.
_NOT_SERVICES: Final = frozenset({b"_meta", b"_fold"})
_view_decoder = msgspec.json.Decoder(ServiceView)


class NeedReload(Exception):
    """The copy can no longer be kept current entry by entry; load it again."""


class Replica:
    """Services by name, their counts by status, and the `_meta` they are consistent with.

    `cursor` is the id of the last updates entry reflected here: `_meta.update_id` after a
    load, then each applied entry's id. With no data yet (`meta` is None) it is the stream's
    last id at load time, so the hub wakes up on the first commit.
    """

    def __init__(self, meta: Meta | None = None, cursor: str = "0-0") -> None:
        self.meta = meta
        self.cursor = meta.update_id if meta is not None else cursor
        self.views: dict[str, ServiceView] = {}
        self.counts: dict[str, int] = dict.fromkeys(STATUS_ORDER, 0)
        #: Names whose status is not healthy: the truncated snapshot of a large fleet.
        self.unhealthy: set[str] = set()
        self._raw: dict[str, bytes] = {}
        self._order: list[str] | None = None

    @classmethod
    def load(cls, rows: dict[bytes, bytes], stream_last_id: str | None) -> Replica:
        """Build from `HGETALL snapshot` (a missing hash is `{}`: no data yet)."""
        meta = decode_meta(rows.get(b"_meta"))
        replica = cls(meta, stream_last_id or "0-0")
        if meta is None:
            return replica
        for field, raw in rows.items():
            if field in _NOT_SERVICES:
                continue
            try:
                view = _view_decoder.decode(raw)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue  # not ours to judge: the aggregator writes only valid views
            replica._put(view)
            replica._raw[view.name] = raw
        return replica

    # -- reading ------------------------------------------------------------------------

    @property
    def gen(self) -> str | None:
        return self.meta.gen if self.meta is not None else None

    @property
    def seq(self) -> int:
        return self.meta.seq if self.meta is not None else 0

    @property
    def status(self) -> str:
        return self.meta.status if self.meta is not None else "unknown"

    def raw(self, name: str) -> bytes:
        """The service's JSON, encoded once per change."""
        raw = self._raw.get(name)
        if raw is None:
            raw = self._raw[name] = encode(self.views[name])
        return raw

    def ordered(self) -> list[str]:
        """Every name, sorted; recomputed only when a service comes or goes."""
        if self._order is None:
            self._order = sorted(self.views)
        return self._order

    def counts_present(self) -> dict[str, int]:
        return {status: n for status, n in self.counts.items() if n}

    # -- changing -----------------------------------------------------------------------

    def apply(self, entry_id: str, update: Update) -> dict[str, str]:
        """Apply one updates entry; returns the kinds of the services it removed."""
        meta = self.meta
        if meta is None:
            raise NeedReload("the first commit arrived")
        if update.gen != meta.gen:
            raise NeedReload(f"a new generation {update.gen!r} replaced {meta.gen!r}")
        if update.seq != meta.seq + 1:
            raise NeedReload(f"updates were missed (seq {meta.seq} then {update.seq})")
        for view in update.services:
            self._put(view)
        removed: dict[str, str] = {}
        for name in update.removed:
            old = self._drop(name)
            if old is not None:
                removed[name] = old.kind
        for name, ms in update.fresh.items():
            current = self.views.get(name)
            if current is not None and current.last_heartbeat_ms != ms:
                self.views[name] = msgspec.structs.replace(
                    current, last_heartbeat=iso_ms(ms), last_heartbeat_ms=ms
                )
                self._raw.pop(name, None)
        self.meta = msgspec.structs.replace(
            meta,
            seq=update.seq,
            status=update.status,
            update_id=entry_id,
            services=len(self.views),
            counts=self.counts_present(),
        )
        self.cursor = entry_id
        return removed

    def merge_meta(self, fresh: Meta) -> None:
        """Take the bus fields of a newer `_meta` (leader, `updated_at`, lag, buffer) while
        keeping what this copy is consistent with (seq, status, update id, counts)."""
        if self.meta is None or fresh.gen != self.meta.gen:
            raise NeedReload("the snapshot's generation changed")
        self.meta = msgspec.structs.replace(
            fresh,
            seq=self.meta.seq,
            status=self.meta.status,
            update_id=self.meta.update_id,
            services=len(self.views),
            counts=self.counts_present(),
        )

    def _put(self, view: ServiceView) -> None:
        old = self.views.get(view.name)
        if old is None:
            self._order = None
        else:
            self.counts[old.status] -= 1
        self.views[view.name] = view
        self._raw.pop(view.name, None)
        self.counts[view.status] = self.counts.get(view.status, 0) + 1
        if view.status == "healthy":
            self.unhealthy.discard(view.name)
        else:
            self.unhealthy.add(view.name)

    def _drop(self, name: str) -> ServiceView | None:
        old = self.views.pop(name, None)
        if old is not None:
            self.counts[old.status] -= 1
            self._raw.pop(name, None)
            self.unhealthy.discard(name)
            self._order = None
        return old

    def __repr__(self) -> str:
        return f"Replica(gen={self.gen!r}, cursor={self.cursor!r}, services={len(self.views)})"


def stream_entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of a one-stream `XREAD` reply, in either RESP2 or RESP3 shape."""
    if not reply:
        return []
    groups = list(reply.values()) if isinstance(reply, dict) else [item[1] for item in reply]
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    for group in groups:
        if group and isinstance(group[0], list):  # RESP3 wraps each stream's list once more
            group = group[0]
        out.extend(group or [])
    return out
