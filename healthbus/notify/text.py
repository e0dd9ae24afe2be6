"""Message text a person understands at 3 a.m.: what, since when, why, the root cause, a link.

Pure: the lines of a plan and the time in, a title and a body out. The idempotency keys end
the body (`ref:`), so a receiver or a person can tell a repeat from a new message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Literal

import msgspec

from healthbus.notify.plan import Line

__all__ = ["MAX_DETAILED", "Message", "duration", "render", "when"]

#: Lines past this many are listed by name only.
MAX_DETAILED = 10
MAX_NAMES = 20

Level = Literal["info", "success", "warning", "failure"]

_STATE = {"error": "in error", "degraded": "degraded", "healthy": "healthy", "unknown": "unknown"}


class Message(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    body: str
    level: Level
    #: The idempotency keys this message covers.
    keys: tuple[str, ...]


def render(lines: Sequence[Line], now_ms: int, dashboard_url: str | None = None) -> Message:
    body: list[str] = []
    alerts = [line for line in lines if line.kind == "alert"]
    affected = [line for line in lines if line.kind == "affected"]
    for line in (*alerts, *_others(lines))[:MAX_DETAILED]:
        body.extend(_describe(line, now_ms))
        body.append("")
    rest = [line.service for line in (*alerts, *_others(lines))[MAX_DETAILED:]]
    if rest:
        body.extend([f"… and {len(rest)} more: {_names(rest)}", ""])
    for root, names in _by_root(affected).items():
        body.extend([f"Affected because {root} is failing: {_names(names)}", ""])
    if dashboard_url:
        body.append(f"Dashboard: {dashboard_url}")
    body.append("ref: " + ", ".join(line.key for line in lines))
    return Message(
        title=_title(lines, now_ms),
        body="\n".join(body),
        level=_level(lines),
        keys=tuple(line.key for line in lines),
    )


def _others(lines: Sequence[Line]) -> list[Line]:
    return [line for line in lines if line.kind not in ("alert", "affected")]


def _describe(line: Line, now_ms: int) -> list[str]:
    state = _STATE[line.status]
    if line.kind == "resolve":
        outage = duration(line.at_ms - line.since_ms)
        verb = "recovered" if line.status == "healthy" else f"left ({state})"
        head = f"RESOLVED {line.service} {verb} at {when(line.at_ms)} after {outage}"
        return [head + (f" ({line.reason})" if line.status != "healthy" else ".")]
    if line.kind == "reminder":
        head = f"STILL {state.upper()}: {line.service} since {when(line.since_ms)}"
        out = [f"{head} ({duration(now_ms - line.since_ms)})."]
    elif line.kind == "info":
        out = [f"{line.service}: {line.event} at {when(line.at_ms)}, now {state}."]
    else:
        head = f"{line.status.upper()}: {line.service} is {state} since {when(line.at_ms)}"
        was = "first seen so" if line.previous == "unknown" else f"was {_STATE[line.previous]}"
        if line.since_ms < line.at_ms:
            was += f"; failing since {when(line.since_ms)}"
        out = [f"{head} ({duration(now_ms - line.at_ms)} ago, {was})."]
    out.append(f"  Why: {line.reason}")
    if line.error:
        out.append(f"  Error: {line.error}")
    if line.root_cause and line.root_cause != line.service:
        out.append(f"  Root cause: {line.root_cause}")
    if line.hint:
        out.append(f"  Hint: {line.hint}")
    return out


def _title(lines: Sequence[Line], now_ms: int) -> str:
    """The gist, worst news first: what failed (a blip that already ended says so), what is
    still failing, what recovered."""
    resolved = [line for line in lines if line.kind == "resolve"]
    over = {line.service for line in resolved}
    failing = [line for line in lines if line.kind in ("alert", "affected")]
    brief = [line for line in failing if line.service in over]
    failing = [line for line in failing if line.service not in over]
    resolved = [line for line in resolved if line.service not in {b.service for b in brief}]
    reminders = [line for line in lines if line.kind == "reminder"]
    info = [line for line in lines if line.kind == "info"]
    parts: list[str] = []
    if brief:
        one = f"{brief[0].service} was {_STATE[brief[0].status]} briefly and recovered"
        parts.append(_gist(brief, one, "failed briefly and recovered"))
    if failing:
        parts.append(_failing_title(failing))
    if reminders:
        r = reminders[0]
        one = f"{r.service} still {_STATE[r.status]} ({duration(now_ms - r.since_ms)})"
        parts.append(_gist(reminders, one, "still failing", alone=not parts))
    if resolved:
        r = resolved[0]
        one = f"{r.service} recovered after {duration(r.at_ms - r.since_ms)}"
        parts.append(_gist(resolved, one, "recovered", alone=not parts))
    if not parts and info:
        parts.append(_gist(info, f"{info[0].service}: {info[0].event}", "changes"))
    return "; ".join(parts)


def _gist(lines: Sequence[Line], one: str, many: str, alone: bool = True) -> str:
    """`one` for a single line said alone, else `<n> <many>: <names>`."""
    if len(lines) == 1 and alone:
        return one
    return f"{len(lines)} {many}: {_names(line.service for line in lines)}"


def _failing_title(failing: Sequence[Line]) -> str:
    roots = Counter(line.root_cause for line in failing if line.root_cause)
    if roots:
        root, _ = roots.most_common(1)[0]
        dependants = sum(1 for line in failing if line.service != root)
        own = next((line for line in failing if line.service == root), None)
        state = _STATE[own.status] if own else "failing"
        plural = "s" if dependants != 1 else ""
        return f"{root} is {state}: {dependants} dependant{plural} affected"
    if len(failing) == 1:
        return f"{failing[0].service} is {_STATE[failing[0].status]}"
    return f"{len(failing)} services failing: {_names(line.service for line in failing)}"


def _level(lines: Sequence[Line]) -> Level:
    statuses = {line.status for line in lines if line.kind != "resolve"}
    if "error" in statuses:
        return "failure"
    if "degraded" in statuses:
        return "warning"
    return "success" if all(line.kind == "resolve" for line in lines) else "info"


def _by_root(affected: Sequence[Line]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in affected:
        out.setdefault(line.root_cause or "?", []).append(line.service)
    return out


def _names(names: Iterable[str]) -> str:
    items = list(dict.fromkeys(names))
    shown = ", ".join(items[:MAX_NAMES])
    return shown + (f" and {len(items) - MAX_NAMES} more" if len(items) > MAX_NAMES else "")


def when(ms: int) -> str:
    """`2026-02-17 21:59:30 UTC`: a time a person reads without converting."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: int) -> str:
    """`45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`: the two largest units."""
    seconds = max(0, ms) // 1000
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {seconds} s" if seconds and minutes < 10 else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")
