"""Message text: what, since when, why, root cause and a link, in words."""

from __future__ import annotations

from typing import Any

import pytest

from healthbus.notify.plan import Line
from healthbus.notify.text import MAX_DETAILED, duration, render

AT = 1_771_365_570_000  # 2026-02-17 21:59:30 UTC


def line(service: str = "db", kind: Any = "alert", **fields: Any) -> Line:
    values: dict[str, Any] = {
        "key": f"{service}:{kind}:{AT}",
        "event": "error",
        "status": "error",
        "previous": "healthy",
        "at_ms": AT,
        "since_ms": AT,
        "reason": "failed: connection refused",
    }
    return Line(kind=kind, service=service, **{**values, **fields})


def test_an_alert_says_what_since_when_why_and_where_to_look() -> None:
    hint = "check max_connections"
    message = render([line(error="FATAL: too many clients", hint=hint)], AT + 42_000, "https://h/")
    assert (message.title, message.level) == ("db is in error", "failure")
    assert message.body.splitlines() == [
        "ERROR: db is in error since 2026-02-17 21:59:30 UTC (42 s ago, was healthy).",
        "  Why: failed: connection refused",
        "  Error: FATAL: too many clients",
        f"  Hint: {hint}",
        "",
        "Dashboard: https://h/",
        f"ref: db:alert:{AT}",
    ]


def test_a_cascade_is_titled_by_its_root_cause() -> None:
    lines = [line("postgres")] + [
        line(name, "affected", root_cause="postgres") for name in ("api", "worker", "web")
    ]
    message = render(lines, AT)
    assert message.title == "postgres is in error: 3 dependants affected"
    assert "Affected because postgres is failing: api, worker, web" in message.body
    assert message.keys == tuple(x.key for x in lines)


def test_resolves_say_how_long_it_lasted() -> None:
    resolve = line(kind="resolve", status="healthy", previous="error", at_ms=AT + 222_000)
    message = render([resolve], AT + 223_000)
    assert (message.title, message.level) == ("db recovered after 3 min 42 s", "success")
    assert message.body.startswith("RESOLVED db recovered at 2026-02-17 22:03:12 UTC after 3 min")


def test_a_blip_that_is_already_over_says_so() -> None:
    resolve = line(kind="resolve", status="healthy", previous="error", at_ms=AT + 20)
    assert render([line(), resolve], AT).title == "db was in error briefly and recovered"


def test_reminders_say_for_how_long() -> None:
    reminder = line(kind="reminder", previous="error")
    message = render([reminder], AT + 4 * 3_600_000)
    assert message.title == "db still in error (4 h)"
    assert message.body.startswith("STILL IN ERROR: db since 2026-02-17 21:59:30 UTC (4 h).")


def test_a_storm_is_one_readable_message() -> None:
    lines = [line(f"svc{i:03}") for i in range(300)]
    message = render(lines, AT)
    assert message.title.startswith("300 services failing: svc000, svc001")
    assert message.title.endswith("and 280 more")
    assert message.body.count("ERROR: ") == MAX_DETAILED
    assert f"… and {300 - MAX_DETAILED} more: svc010" in message.body


@pytest.mark.parametrize(
    ("ms", "text"),
    [(-5, "0 s"), (59_999, "59 s"), (61_000, "1 min 1 s"), (3_600_000 * 3 + 300_000, "3 h 5 min"),
     (86_400_000 * 2, "2 d")],
)  # fmt: skip
def test_durations_read_like_a_person_says_them(ms: int, text: str) -> None:
    assert duration(ms) == text
