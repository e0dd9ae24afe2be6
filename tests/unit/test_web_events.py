"""SSE framing, per-selection rendering and detail withholding, without a server."""

from __future__ import annotations

import json

import msgspec
import pytest
from starlette.datastructures import QueryParams

from healthbus.config import Config
from healthbus.schema import Meta, Update, encode
from healthbus.web.events import Entry, frame, render_snapshot
from healthbus.web.replica import Replica
from healthbus.web.selection import (
    BadQuery,
    Selection,
    authorized,
    redact_view,
    withholds_details,
)
from tests.webserver import instance, transition, view


def parse(raw: bytes) -> list[dict[str, str]]:
    """Events as the SSE spec reads them (LF only here: that is what we send)."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = fields[name] + "\n" + value if name in fields else value
        events.append(fields)
    return events


def test_frame_is_one_event_whatever_the_data() -> None:
    assert frame(b"update", b'{"a":1}', "g-1-0") == b'event: update\nid: g-1-0\ndata: {"a":1}\n\n'
    assert frame(b"x", b"{}") == b"event: x\ndata: {}\n\n"
    broken = frame(b"x", b"a\n\nevent: y\r\ndata: z\rw", "i\nd")
    assert parse(broken) == [{"event": "x", "id": "id", "data": "a\n\nevent: y\ndata: z\nw"}]


def test_json_data_never_holds_a_line_break() -> None:
    text = "\n\nevent: injected\r\ndata: x\r\r\u2028"
    data = encode(view("a", details={"k": text}, error=text, reason=text))
    assert b"\n" not in data and b"\r" not in data
    assert msgspec.json.decode(data)["details"]["k"] == text


def entry(**fields: object) -> Entry:
    u = Update(
        seq=7,
        gen="g1",
        status="error",
        services=[view("a", "error", error="boom"), view("b", kind="consumer")],
        removed=["c"],
        transitions=[transition("a", "healthy", "error"), transition("b", "error", "healthy")],
        fresh={"d": 5, "a": 6},
        **fields,  # type: ignore[arg-type]
    )
    return Entry(1, "100-1", u, {"c": "probe"})


def no_kind(name: str) -> str | None:
    return {"d": "consumer"}.get(name)


def test_an_entry_is_update_then_transitions_and_only_the_last_has_the_id() -> None:
    events = parse(entry().render(Selection(), no_kind))
    assert [e["event"] for e in events] == ["update", "transition", "transition"]
    assert ["id" in e for e in events] == [False, False, True]
    assert events[-1]["id"] == "g1-100-1"
    data = json.loads(events[0]["data"])
    assert set(data) == {"seq", "status", "services", "removed", "fresh"}
    assert (data["seq"], data["removed"], data["fresh"]) == (7, ["c"], {"d": 5, "a": 6})


def test_an_entry_with_no_transitions_carries_the_id_on_its_update() -> None:
    u = Update(seq=1, gen="g", status="healthy", fresh={"a": 1})
    events = parse(Entry(1, "5-0", u).render(Selection(), no_kind))
    assert [(e["event"], e["id"]) for e in events] == [("update", "g-5-0")]


def test_renderings_are_cached_per_selection() -> None:
    e = entry()
    assert e.render(Selection(), no_kind) is e.render(Selection(), no_kind)
    by_name = Selection(names=frozenset({"a"}))
    assert e.render(by_name, no_kind) is e.render(Selection(names=frozenset({"a"})), no_kind)


def test_selection_by_name() -> None:
    events = parse(entry().render(Selection(names=frozenset({"a"})), no_kind))
    assert [e["event"] for e in events] == ["update", "transition"]
    data = json.loads(events[0]["data"])
    assert ([s["name"] for s in data["services"]], data["removed"], data["fresh"]) == (
        ["a"],
        [],
        {"a": 6},
    )
    assert events[-1]["id"] == "g1-100-1"


def test_selection_by_kind_uses_the_removed_and_current_kinds() -> None:
    events = parse(entry().render(Selection(kinds=frozenset({"consumer"})), no_kind))
    data = json.loads(events[0]["data"])
    assert [s["name"] for s in data["services"]] == ["b"]
    assert (data["removed"], data["fresh"]) == ([], {"d": 5})
    assert [json.loads(e["data"])["service"] for e in events[1:]] == ["b"]
    probes = json.loads(
        parse(entry().render(Selection(kinds=frozenset({"probe"})), no_kind))[0]["data"]
    )
    assert probes["removed"] == ["c"] and probes["services"] == []


def test_status_changes_only_drop_fresh_and_detail_updates() -> None:
    sel = Selection(status_only=True)
    data = json.loads(parse(entry().render(sel, no_kind))[0]["data"])
    assert data["fresh"] == {} and [s["name"] for s in data["services"]] == ["a", "b"]
    fresh_only = Entry(2, "6-0", Update(seq=1, gen="g", status="healthy", fresh={"a": 1}))
    assert fresh_only.render(sel, no_kind) == b""
    detail_only = Entry(3, "7-0", Update(seq=1, gen="g", status="healthy", services=[view("a")]))
    assert detail_only.render(sel, no_kind) == b""


def test_redaction_removes_details_errors_and_instance_names() -> None:
    secret = "token=abc"
    v = view(
        "a",
        "error",
        details={"x": 1},
        error=secret,
        reason=f"failed: {secret}",
        instances=[instance("host-1:9", "error", error=secret, reason=f"failed: {secret}")],
    )
    r = redact_view(v)
    assert (r.details, r.error, r.reason) == (None, None, "failed: [redacted]")
    assert (r.instances[0].instance, r.instances[0].error) == ("#1", None)
    assert r.instances[0].reason == "failed: [redacted]"
    assert secret not in encode(r).decode()
    rendered = entry().render(Selection(redact=True), no_kind)
    assert b"boom" not in rendered


def snapshot_replica() -> Replica:
    meta = Meta(
        seq=3, status="error", as_of="1-0", update_id="9-0", gen="g", leader="me", epoch=1,
        updated_at="x", updated_at_ms=1, started_at="x", version="t",
    )  # fmt: skip
    rows = {b"_meta": encode(meta)}
    for v in (view("a"), view("b", "error"), view("c"), view("d", "degraded", kind="probe")):
        rows[v.name.encode()] = encode(v)
    return Replica.load(rows, None)


def test_snapshot_event() -> None:
    (event,) = parse(render_snapshot(snapshot_replica(), Selection(), limit=10, stale=False))
    assert (event["event"], event["id"]) == ("snapshot", "g-9-0")
    data = json.loads(event["data"])
    assert [s["name"] for s in data["services"]] == ["a", "b", "c", "d"]
    assert (data["gen"], data["seq"], data["status"], data["total"]) == ("g", 3, "error", 4)
    assert (data["truncated"], data["stale"], data["meta"]["leader"]) == (False, False, "me")


def test_snapshot_above_the_limit_lists_the_unhealthy() -> None:
    replica = snapshot_replica()
    data = json.loads(parse(render_snapshot(replica, Selection(), limit=3, stale=True))[0]["data"])
    assert [s["name"] for s in data["services"]] == ["b", "d"]
    assert (data["truncated"], data["total"], data["stale"]) == (True, 4, True)
    assert data["counts"] == {"healthy": 2, "error": 1, "degraded": 1}
    probes = Selection(kinds=frozenset({"probe"}))
    data = json.loads(parse(render_snapshot(replica, probes, limit=3, stale=False))[0]["data"])
    assert ([s["name"] for s in data["services"]], data["counts"]) == (["d"], {"degraded": 1})


def test_snapshot_without_data_has_no_id() -> None:
    (event,) = parse(render_snapshot(Replica(), Selection(), limit=3, stale=True))
    assert "id" not in event
    assert json.loads(event["data"])["meta"] is None


def test_selection_from_query() -> None:
    q = QueryParams("service=a&service=b,c&kind=probe&changes=status")
    sel = Selection.from_query(q, redact=True)
    assert sel == Selection(frozenset("abc"), frozenset({"probe"}), True, True)
    assert Selection.from_query(QueryParams(""), redact=False) == Selection()
    with pytest.raises(BadQuery, match="changes"):
        Selection.from_query(QueryParams("changes=fresh"), redact=False)
    with pytest.raises(BadQuery, match="at most"):
        Selection.from_query(
            QueryParams("service=" + ",".join(map(str, range(1001)))), redact=False
        )


def test_kind_filter_matches_unknown_kinds_as_perpetual() -> None:
    sel = Selection(kinds=frozenset({"perpetual"}))
    assert sel.keeps("x", "perpetual") and sel.keeps("x", "cron") and not sel.keeps("x", "probe")
    assert sel.keeps("x", None)


@pytest.mark.parametrize(
    ("token", "show", "header", "authorized_", "withheld"),
    [
        (None, "when-authorized", "", True, False),
        ("t", "when-authorized", "", False, True),
        ("t", "when-authorized", "Bearer t", True, False),
        ("t", "when-authorized", "bearer t", True, False),
        ("t", "when-authorized", "Basic t", False, True),
        ("t", "when-authorized", "Bearer tt", False, True),
        ("t", "always", "", False, False),
        (None, "never", "", True, True),
    ],
)
def test_who_sees_details(
    token: str | None, show: str, header: str, authorized_: bool, withheld: bool
) -> None:
    config = Config(token=token, show_details=show)  # type: ignore[arg-type]
    headers = {"authorization": header} if header else {}
    assert authorized(config, headers) is authorized_
    assert withholds_details(config, headers) is withheld
