"""Time in state per UTC day and incident grouping, by hand-computed examples."""

from __future__ import annotations

from healthbus.schema import Status, Transition, iso_ms
from healthbus.web.incidents import Grouper
from healthbus.web.uptime import DAY_MS, summarize, tally_transitions, totals, window

DAY0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000


def t(to: Status, at_ms: int, from_: Status, incident: str | None = "svc:1") -> Transition:
    return Transition(
        id=f"svc:{to}:{at_ms}",
        event=f"healthbus.service.{to}",
        service="svc",
        from_=from_,
        to=to,
        at=iso_ms(at_ms),
        at_ms=at_ms,
        reason="",
        incident=incident,
    )


def test_time_in_state_splits_at_midnight_and_leaves_unknown_time_out() -> None:
    history = [
        t("error", DAY0 + 22 * HOUR, "healthy"),  # 2 h of error across midnight
        t("degraded", DAY0 + DAY_MS, "error"),
        t("healthy", DAY0 + DAY_MS + 2 * HOUR, "degraded"),
        t("unknown", DAY0 + DAY_MS + 12 * HOUR, "healthy", incident=None),
    ]
    tallies = tally_transitions(history, "healthy", DAY0, DAY0 + 2 * DAY_MS)
    day1, day2 = (summarize(d, tallies.get(d)) for d in (DAY0, DAY0 + DAY_MS))
    assert (day1.date, day1.healthy_s, day1.error_s, day1.incidents) == (
        "2026-01-01",
        22 * 3600,
        2 * 3600,
        1,
    )
    assert day1.uptime_pct == round(100 * 22 / 24, 4) and day1.availability_pct == day1.uptime_pct
    assert (day2.degraded_s, day2.healthy_s, day2.unknown_s, day2.known_s) == (
        2 * 3600,
        10 * 3600,
        12 * 3600,
        12 * 3600,
    )
    assert day2.uptime_pct == round(100 * 10 / 12, 4)
    assert day2.availability_pct == 100.0
    both = totals([day1, day2])
    assert both.known_s == 36 * 3600 and both.incidents == 1
    assert both.uptime_pct == round(100 * 32 / 36, 4)
    assert both.availability_pct == round(100 * 34 / 36, 4)


def test_a_day_with_nothing_known_has_no_percentages() -> None:
    day = summarize(DAY0, None)
    assert (day.known_s, day.uptime_pct, day.availability_pct) == (0, None, None)
    assert window(DAY0 + DAY_MS + 5, 3) == [DAY0 - DAY_MS, DAY0, DAY0 + DAY_MS]


def test_incidents_complete_when_their_opening_is_read() -> None:
    newest_first = [
        ("5-0", t("healthy", 5000, "error", "svc:2")),
        ("4-0", t("error", 4000, "healthy", "svc:2")),
        ("3-0", t("healthy", 3000, "degraded", "svc:1")),
        ("2-0", t("degraded", 2000, "error", "svc:1")),
        ("1-0", t("error", 1000, "degraded", "svc:0")),  # opened before the stream's start
    ]
    grouper = Grouper(now_ms=9000)
    done = [i for sid, tr in newest_first if (i := grouper.add(sid, tr))]
    assert [i.id for i in done] == ["svc:2"]
    assert (done[0].status, done[0].duration_s, done[0].worst) == ("resolved", 1.0, "error")
    rest = grouper.leftovers()
    assert [(sid, i.id, i.opened, i.status) for sid, i in rest] == [
        ("2-0", "svc:1", None, "resolved"),
        ("1-0", "svc:0", None, "open"),
    ]
