"""Loading the fold's committed state back: what a new leader starts from."""

from __future__ import annotations

import msgspec

from aggregator.sla import MAX_BUCKET
from aggregator.state import Clock, FoldState, Service
from healthbus.commands import COMMANDS_FIELD, Commands
from healthbus.schema import RESERVED_NAMES, encode, parse_stream_id

__all__ = ["CLOCK_FIELD", "Replay", "fold_rows", "load_replay", "load_state", "service_row"]

CLOCK_FIELD = "_fold"


class Replay(msgspec.Struct, kw_only=True):
    """Where a new leader reads from, in the `_fold` row beside the clock.

    A service whose only change is its freshness has its row written with the 1-second
    flush, not with every commit; so a commit's cursor (`_meta.as_of`) can be ahead of
    some rows. Every row is its service's state at `cursor` or later, and `clock` is the
    fold's clock at `cursor`: re-reading from there, and skipping each entry already in its
    service's row (at or before `Service.applied`) or of a service removed since (at or
    before `gone[name]`), folds the rest exactly once, which reproduces only freshness.
    """

    cursor: str
    #: The encoded Clock at `cursor`.
    clock: msgspec.Raw
    #: Services removed after `cursor`, with the cursor of the commit that removed them.
    gone: dict[str, str] = msgspec.field(default_factory=dict)

    @classmethod
    def at(cls, cursor: str, clock: Clock, gone: dict[str, str] | None = None) -> Replay:
        """The position `cursor`, where the fold's clock is `clock`."""
        return cls(cursor=cursor, clock=msgspec.Raw(encode(clock)), gone=gone or {})

    def pruned(self) -> Replay:
        """Without the removals at or before `cursor` (never re-read)."""
        at = _key(self.cursor)
        gone = {n: c for n, c in self.gone.items() if _key(c) > at}
        return Replay(cursor=self.cursor, clock=self.clock, gone=gone)


class _FoldRow(Clock, kw_only=True):
    """The `_fold` row: the clock's fields, and the replay position beside them."""

    replay: Replay | None = None


_service_decoder = msgspec.json.Decoder(Service)
_clock_decoder = msgspec.json.Decoder(Clock)
_commands_decoder = msgspec.json.Decoder(Commands)
_fold_row_decoder = msgspec.json.Decoder(_FoldRow)


class _SparseHistogram(msgspec.Struct):
    """The day's durations as rows written before 2026-12-03 hold them (bucket -> count)."""

    sla_hist: dict[int, int] = {}


_sparse_decoder = msgspec.json.Decoder(_SparseHistogram)


def _key(stream_id: str) -> tuple[int, int]:
    return parse_stream_id(stream_id) or (0, 0)


def service_row(svc: Service) -> bytes:
    """`svc`'s row of the `state` hash. A sole instance is written by name in `instances`,
    as aggregators before 2026-12-03 wrote (and read) it: one of those may lead again."""
    sole = svc.sole
    if sole is None:
        return encode(svc)
    svc.sole, svc.several = None, {sole.key: sole}
    try:
        return encode(svc)
    finally:
        svc.sole, svc.several = sole, None


def fold_rows(state: FoldState, replay: Replay | None = None) -> dict[str, bytes]:
    """The fold's own fields of the `state` hash (not services), written with the cursor."""
    clock = state.clock
    row = clock if replay is None else _FoldRow(**msgspec.structs.asdict(clock), replay=replay)
    return {CLOCK_FIELD: encode(row), COMMANDS_FIELD: encode(state.commands)}


def load_replay(rows: dict[bytes, bytes]) -> Replay | None:
    """The replay position of the `state` hash (None: rows written before it existed)."""
    raw = rows.get(CLOCK_FIELD.encode())
    return None if raw is None else _fold_row_decoder.decode(raw).replay


def load_state(rows: dict[bytes, bytes]) -> FoldState:
    """Rebuild a FoldState from the `state` hash, deadlines included; its clock is the one
    at the replay position when there is one (see Replay)."""
    state = FoldState()
    clock_raw = rows.get(CLOCK_FIELD.encode())
    if clock_raw is not None:
        replay = _fold_row_decoder.decode(clock_raw).replay
        state.clock = _clock_decoder.decode(clock_raw if replay is None else replay.clock)
    commands_raw = rows.get(COMMANDS_FIELD.encode())
    if commands_raw is not None:
        state.commands = _commands_decoder.decode(commands_raw)
    for name, raw in rows.items():
        if name.decode() in RESERVED_NAMES:
            continue
        svc = _service_decoder.decode(raw)
        svc.settle()
        if b'"sla_hist"' in raw:
            _adopt_sparse_histogram(svc, raw)
        deadline = svc.deadline_v
        svc.deadline_v = None
        state.add(svc)
        state.schedule(svc, deadline)
    return state


def _adopt_sparse_histogram(svc: Service, raw: bytes) -> None:
    """Carry an older row's day histogram over into the dense one (sla.record_duration)."""
    sparse = {b: n for b, n in _sparse_decoder.decode(raw).sla_hist.items() if 0 <= b <= MAX_BUCKET}
    if sparse:
        lo = min(sparse)
        svc.sla_lo = lo
        svc.sla_counts = [sparse.get(bucket, 0) for bucket in range(lo, max(sparse) + 1)]
