"""Loading the fold's committed state back: what a new leader starts from."""

from __future__ import annotations

import msgspec

from aggregator.state import Clock, FoldState, Service
from healthbus.commands import COMMANDS_FIELD, Commands
from healthbus.schema import RESERVED_NAMES, encode

__all__ = ["CLOCK_FIELD", "fold_rows", "load_state"]

CLOCK_FIELD = "_fold"

_service_decoder = msgspec.json.Decoder(Service)
_clock_decoder = msgspec.json.Decoder(Clock)
_commands_decoder = msgspec.json.Decoder(Commands)


def fold_rows(state: FoldState) -> dict[str, bytes]:
    """The fold's own fields of the `state` hash (not services), written with the cursor."""
    return {CLOCK_FIELD: encode(state.clock), COMMANDS_FIELD: encode(state.commands)}


def load_state(rows: dict[bytes, bytes]) -> FoldState:
    """Rebuild a FoldState from the `state` hash, deadlines included."""
    state = FoldState()
    clock_raw = rows.get(CLOCK_FIELD.encode())
    if clock_raw is not None:
        state.clock = _clock_decoder.decode(clock_raw)
    commands_raw = rows.get(COMMANDS_FIELD.encode())
    if commands_raw is not None:
        state.commands = _commands_decoder.decode(commands_raw)
    for name, raw in rows.items():
        if name.decode() in RESERVED_NAMES:
            continue
        svc = _service_decoder.decode(raw)
        deadline = svc.deadline_v
        svc.deadline_v = None
        state.add(svc)
        state.schedule(svc, deadline)
    return state
