"""`healthbus silence …`: list, add and remove silences from a shell.

The same commands as `POST|DELETE /api/silences` (see `web/silences.py`), written straight to
the commands stream, for operators with Redis access and no web token at hand.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

import msgspec

from healthbus.commands import Unsilence
from healthbus.config import Config
from healthbus.connection import connect
from healthbus.errors import ConfigError
from healthbus.schema import iso_ms
from healthbus.web.selection import BadQuery
from healthbus.web.silences import (
    NewSilence,
    current_silences,
    new_command,
    redis_now_ms,
    send_command,
)

__all__ = ["parse_duration", "silence"]

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION: Final = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `30m`, `2h`, `1d` as seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"--for {text!r}: give a duration such as 90s, 30m, 2h or 1d")
    return float(match[1]) * _UNITS[match[2] or "s"]


def _time(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give an ISO time such as 2026-03-01T04:00Z") from None
    if value.tzinfo is None:
        raise ConfigError(f"{flag} {text!r}: give a zone (Z or +01:00)")
    return value


async def silence(
    config: Config,
    action: str,
    target: str | None,
    *,
    duration: str | None = None,
    until: str | None = None,
    starts: str | None = None,
    comment: str | None = None,
    silence_id: str | None = None,
    as_json: bool = False,
) -> int:
    """Run one `healthbus silence` action; the exit status."""
    assert config.redis_url
    client = connect(config.redis_url, name="healthbus-silence")
    try:
        keys = config.keys
        now_ms = await redis_now_ms(client, keys)
        if action == "add":
            if not target:
                raise ConfigError("silence add needs a service name or pattern")
            body = NewSilence(
                match=target,
                duration_s=parse_duration(duration) if duration else None,
                until=_time(until, "--until"),
                starts=_time(starts, "--starts"),
                comment=comment,
                id=silence_id,
            )
            try:
                cmd = new_command(body, now_ms, by="cli")
            except BadQuery as exc:
                raise ConfigError(str(exc)) from None
            await send_command(client, config, cmd)
            print(f"silenced {cmd.match!r} until {cmd.until.isoformat()} (id {cmd.id})")
            return 0
        found = await current_silences(client, keys, now_ms)
        if action == "remove":
            if not any(s.id == target for s in found):
                print(f"no silence {target!r} in force or to come")
                return 1
            await send_command(client, config, Unsilence(id=str(target)))
            print(f"removed silence {target}")
            return 0
        if as_json:
            print(msgspec.json.encode(found).decode())
            return 0
        print(f"{'ID':14} {'MATCH':30} {'STARTS':25} {'ENDS':25} COMMENT")
        for s in found:
            print(
                f"{s.id[:14]:14} {s.match[:30]:30} {iso_ms(s.starts_ms):25} "
                f"{iso_ms(s.ends_ms):25} {s.comment or ''}"
            )
        return 0
    finally:
        await client.aclose()
