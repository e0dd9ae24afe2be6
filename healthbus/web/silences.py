"""`GET|POST|DELETE /api/silences`: operators silence a service or a pattern for a window.

Writes are commands on the commands stream (see `healthbus/commands.py`), folded by the
aggregator in order, so the web never changes derived state itself. A listing is the
aggregator's committed silences plus the commands it has not folded yet, replayed with
the same pure function, as of Redis time: what it shows is what the fold will apply.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from healthbus.commands import (
    COMMANDS_FIELD,
    Commands,
    Pattern,
    Silence,
    SilenceCommand,
    SilenceId,
    Unsilence,
    decode_command,
    fold_command,
    prune,
)
from healthbus.config import Config
from healthbus.connection import TIME_SCRIPT, AsyncClient
from healthbus.errors import InvalidMessage
from healthbus.keys import Keys
from healthbus.schema import encode, iso_ms
from healthbus.web.api import api_route
from healthbus.web.routes import NO_STORE
from healthbus.web.selection import BadQuery

__all__ = [
    "NewSilence",
    "SilenceList",
    "SilenceView",
    "current_silences",
    "delete_silence",
    "get_silences",
    "post_silence",
    "send_command",
]

MAX_BODY: Final = 4096
#: Commands not folded yet that a listing replays (the aggregator folds them in ms).
MAX_UNFOLDED: Final = 1000


class NewSilence(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A POST body: `match` and either `duration_s` or `until`."""

    match: Pattern
    duration_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86400)] | None = None
    until: datetime | None = None
    starts: datetime | None = None
    comment: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    #: Reusing an id replaces that silence.
    id: SilenceId | None = None


class SilenceView(msgspec.Struct, kw_only=True):
    id: str
    match: str
    starts: str
    ends: str
    starts_ms: int
    ends_ms: int
    #: In force now (rather than still to come).
    active: bool
    comment: str | None = None
    by: str | None = None


class SilenceList(msgspec.Struct, kw_only=True):
    silences: list[SilenceView]
    now: str


_new_decoder = msgspec.json.Decoder(NewSilence)
_commands_decoder = msgspec.json.Decoder(Commands)


async def redis_now_ms(redis: AsyncClient, keys: Keys) -> int:
    reply: Any = await redis.eval(TIME_SCRIPT, 1, keys.commands)
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


async def current_silences(redis: AsyncClient, keys: Keys, now_ms: int) -> list[Silence]:
    """Silences in force or still to come at `now_ms`, soonest first."""
    raw: Any = await redis.hget(keys.state, COMMANDS_FIELD)
    commands = _commands_decoder.decode(raw) if raw else Commands()
    rows: Any = await redis.xrange(keys.commands, f"({commands.cursor}", "+", count=MAX_UNFOLDED)
    for entry_id, fields in rows:
        try:
            cmd = decode_command(fields.get(b"m", b""))
        except InvalidMessage:
            continue  # the aggregator dead-letters it
        fold_command(commands, cmd, int(entry_id.split(b"-")[0]))
    prune(commands, now_ms)
    return sorted(commands.silences.values(), key=lambda s: (s.starts_ms, s.id))


async def send_command(redis: AsyncClient, config: Config, cmd: SilenceCommand | Unsilence) -> str:
    """Append one command for the aggregator; its stream id."""
    entry: Any = await redis.xadd(
        config.keys.commands,
        {"m": encode(cmd)},
        maxlen=config.commands_maxlen,
        approximate=True,
    )
    return str(entry.decode())


def _view(s: Silence, now_ms: int) -> SilenceView:
    return SilenceView(
        id=s.id,
        match=s.match,
        starts=iso_ms(s.starts_ms),
        ends=iso_ms(s.ends_ms),
        starts_ms=s.starts_ms,
        ends_ms=s.ends_ms,
        active=s.starts_ms <= now_ms,
        comment=s.comment,
        by=s.by,
    )


def new_command(body: NewSilence, now_ms: int, by: str) -> SilenceCommand:
    """The command a POST (or `healthbus silence add`) sends; BadQuery when it cannot be."""
    if (body.duration_s is None) == (body.until is None):
        raise BadQuery("give either duration_s or until")
    starts = body.starts
    if body.until is not None:
        until = body.until
    else:
        assert body.duration_s is not None
        base = starts or datetime.fromtimestamp(now_ms / 1000, UTC)
        until = base + timedelta(seconds=body.duration_s)
    if until.tzinfo is None or (starts is not None and starts.tzinfo is None):
        raise BadQuery("times need a zone, e.g. 2026-03-01T04:00:00Z")
    if until.timestamp() * 1000 <= now_ms:
        raise BadQuery(f"until {until.isoformat()} is already past")
    return SilenceCommand(
        id=body.id or uuid.uuid4().hex[:12],
        match=body.match,
        until=until,
        starts=starts,
        comment=body.comment,
        by=by,
    )


def _json(body: Any, status: int = 200) -> Response:
    return Response(encode(body), status, media_type="application/json", headers=NO_STORE)


@api_route
async def get_silences(request: Request) -> Response:
    """The silences in force or to come, soonest first."""
    redis: AsyncClient = request.state.redis
    keys = request.state.config.keys
    now_ms = await redis_now_ms(redis, keys)
    found = await current_silences(redis, keys, now_ms)
    return _json(SilenceList(silences=[_view(s, now_ms) for s in found], now=iso_ms(now_ms)))


@api_route
async def post_silence(request: Request) -> Response:
    """Silence `match` (a service name or an fnmatch pattern) for a window."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise BadQuery(f"the body is over {MAX_BODY} bytes")
    try:
        new = _new_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadQuery(f"invalid silence: {exc}") from None
    redis: AsyncClient = request.state.redis
    config: Config = request.state.config
    now_ms = await redis_now_ms(redis, config.keys)
    cmd = new_command(new, now_ms, by="api")
    entry = await send_command(redis, config, cmd)
    starts_ms = int(cmd.starts.timestamp() * 1000) if cmd.starts else int(entry.split("-")[0])
    silence = Silence(
        id=cmd.id,
        match=cmd.match,
        starts_ms=starts_ms,
        ends_ms=max(starts_ms, int(cmd.until.timestamp() * 1000)),
        created_ms=now_ms,
        comment=cmd.comment,
        by=cmd.by,
    )
    return _json(_view(silence, now_ms), 201)


@api_route
async def delete_silence(request: Request) -> Response:
    """End silence `?id=` now (404 when no such silence is in force or to come)."""
    silence_id = request.query_params.get("id", "")
    redis: AsyncClient = request.state.redis
    config: Config = request.state.config
    now_ms = await redis_now_ms(redis, config.keys)
    if not any(s.id == silence_id for s in await current_silences(redis, config.keys, now_ms)):
        return _json({"error": f"no silence {silence_id[:64]!r} in force or to come"}, 404)
    entry = await send_command(redis, config, Unsilence(id=silence_id))
    return _json({"id": silence_id, "deleted": True, "entry": entry})
