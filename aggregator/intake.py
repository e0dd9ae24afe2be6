"""Operator commands between the heartbeats, in an order that does not depend on reads.

The fold's order is by stream entry time: a command comes after every heartbeat of the
same millisecond or earlier, and before every later one. Reads cannot see that order
directly (two streams, batches, backlogs), so the runner keeps commands it has read here
until it knows no heartbeat can still come before them: a later heartbeat was read, or a
read that was not cut short by its COUNT began after the command's millisecond (stream
ids never go back, so anything added afterwards is later). A pure replay that merges the
two streams by `order_key` therefore folds exactly what the live aggregator folded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from aggregator.commit import DeadLetter
from aggregator.fold import Folder
from healthbus.commands import decode_command
from healthbus.errors import InvalidMessage
from healthbus.schema import Transition, parse_stream_id

__all__ = ["Entry", "Intake", "order_key"]

#: A commands entry: its id and its fields (a mapping, or flat as Redis sends them).
Entry = tuple[bytes, dict[bytes, bytes] | list[bytes]]


def order_key(entry_id: str, command: bool) -> tuple[int, int, int]:
    """Where an entry of the heartbeats (or commands) stream falls in the fold's order."""
    ms, seq = parse_stream_id(entry_id) or (0, 0)
    return ms, int(command), seq


class Intake:
    """Commands read but not folded yet; `read` is where the next read of them starts."""

    def __init__(self, cursor: str) -> None:
        self.read = cursor
        self._held: deque[tuple[str, dict[bytes, bytes]]] = deque()

    def __bool__(self) -> bool:
        return bool(self._held)

    def first_ms(self, default: int) -> int:
        """The time of the oldest held command (the fold's watermark may not pass it
        before that command is folded), or `default` when none is held."""
        return order_key(self._held[0][0], True)[0] if self._held else default

    def add(self, entries: Sequence[Entry]) -> None:
        for raw_id, fields in entries:
            self.read = raw_id.decode()
            if isinstance(fields, list):
                fields = dict(zip(fields[::2], fields[1::2], strict=False))
            self._held.append((self.read, fields))

    def release(self, folder: Folder, before_ms: int, dead: list[DeadLetter]) -> list[Transition]:
        """Fold every held command older than `before_ms` (a heartbeat's time, or the
        time a complete read began); a malformed one is dead-lettered and skipped."""
        out: list[Transition] = []
        while self._held and order_key(self._held[0][0], True)[0] < before_ms:
            entry_id, fields = self._held.popleft()
            at_ms = order_key(entry_id, True)[0]
            try:
                raw = fields.get(b"m")
                if raw is None:
                    raise InvalidMessage("entry has no field 'm'")
                out += folder.command(decode_command(raw), at_ms, entry_id)
            except InvalidMessage as exc:
                dead.append(DeadLetter(entry_id, exc.reason, fields))
                folder.state.commands.cursor = entry_id
        return out
