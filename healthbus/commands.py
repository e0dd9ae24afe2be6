"""Operator commands: what the web and CLI write to the commands stream, and silences.

The aggregator folds commands in stream order between the heartbeats (see
`aggregator/intake.py`), so what a silence marks depends only on the entries, never on
when the aggregator happened to read them. A silence marks the transitions of the
services it matches (a name or an fnmatch pattern) inside its window `silenced: true`:
they are still recorded and published, and a resolve is never swallowed.

    redis-cli XADD 'healthbus:{default}:commands' MAXLEN '~' 10000 '*' m \\
      '{"v":1,"op":"silence","id":"pg-upgrade","match":"postgres*","until":"2026-03-01T04:00:00Z"}'

Pure here: decoding, and the set of silences a sequence of commands leaves.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Annotated, Final

import msgspec

from healthbus.errors import InvalidMessage
from healthbus.schema import SCHEMA_VERSION

__all__ = [
    "COMMANDS_FIELD",
    "Command",
    "Commands",
    "Silence",
    "SilenceCommand",
    "Unsilence",
    "decode_command",
    "fold_command",
    "prune",
    "silenced",
]

#: The `state` hash field holding the commands the fold has applied (not a service).
COMMANDS_FIELD: Final = "_commands"
SilenceId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Pattern = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class SilenceCommand(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag="silence"):
    """Silence the services matching `match` from `starts` (default: the command's time)
    until `until`. Sending the same `id` again replaces that silence."""

    v: int = SCHEMA_VERSION
    id: SilenceId
    match: Pattern
    until: datetime
    starts: datetime | None = None
    comment: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    by: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class Unsilence(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag="unsilence"):
    """End silence `id` now."""

    v: int = SCHEMA_VERSION
    id: SilenceId


Command = SilenceCommand | Unsilence


class Silence(msgspec.Struct, frozen=True, kw_only=True):
    """A silence as the fold applies it (times in ms since the epoch)."""

    id: str
    match: str
    starts_ms: int
    ends_ms: int
    created_ms: int
    comment: str | None = None
    by: str | None = None

    def covers(self, service: str, at_ms: int) -> bool:
        return self.starts_ms <= at_ms < self.ends_ms and fnmatchcase(service, self.match)


class Commands(msgspec.Struct, kw_only=True):
    """What the fold keeps of the commands: its cursor and the silences still to come."""

    #: The last commands-stream id folded.
    cursor: str = "0-0"
    silences: dict[str, Silence] = msgspec.field(default_factory=dict)


_decoder: msgspec.json.Decoder[Command] = msgspec.json.Decoder(Command)


def decode_command(raw: bytes) -> Command:
    try:
        cmd = _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidMessage(f"invalid command: {exc}") from None
    if cmd.v != SCHEMA_VERSION:
        raise InvalidMessage(f"unknown major version v={cmd.v}")
    return cmd


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def fold_command(commands: Commands, cmd: Command, at_ms: int) -> None:
    """Apply one command whose stream entry time is `at_ms`; silences over by then go."""
    if isinstance(cmd, SilenceCommand):
        starts = at_ms if cmd.starts is None else _ms(cmd.starts)
        commands.silences[cmd.id] = Silence(
            id=cmd.id,
            match=cmd.match,
            starts_ms=starts,
            ends_ms=max(starts, _ms(cmd.until)),
            created_ms=at_ms,
            comment=cmd.comment,
            by=cmd.by,
        )
    else:
        commands.silences.pop(cmd.id, None)
    prune(commands, at_ms)


def prune(commands: Commands, now_ms: int) -> None:
    """Forget silences that ended at or before `now_ms`: they can mark nothing later."""
    over = [k for k, s in commands.silences.items() if s.ends_ms <= now_ms]
    for key in over:
        del commands.silences[key]


def silenced(silences: Iterable[Silence], service: str, at_ms: int) -> bool:
    """Whether a transition of `service` at `at_ms` falls in a silence."""
    return any(s.covers(service, at_ms) for s in silences)
