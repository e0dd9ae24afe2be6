"""The web worker's in-memory copy and the hub's bookkeeping, without Redis."""

from __future__ import annotations

from typing import Any, cast

import msgspec
import pytest

from healthbus.config import Config
from healthbus.schema import Meta, ServiceView, Update, encode, parse_stream_id
from healthbus.web.events import Entry
from healthbus.web.hub import Hub
from healthbus.web.replica import NeedReload, Replica, stream_entries
from healthbus.web.selection import Selection
from healthbus.web.subscriber import RESYNC, Subscriber, parse_event_id
from tests.webserver import transition, view

pytestmark = pytest.mark.anyio


def meta(seq: int = 1, update_id: str = "10-0", gen: str = "g1", **fields: Any) -> Meta:
    values: dict[str, Any] = {
        "seq": seq,
        "status": "healthy",
        "as_of": "5-0",
        "update_id": update_id,
        "gen": gen,
        "leader": "l",
        "epoch": 1,
        "updated_at": "2026-01-01T00:00:00.000Z",
        "updated_at_ms": 1_767_225_600_000,
        "started_at": "2026-01-01T00:00:00.000Z",
        "version": "t",
    }
    values.update(fields)
    return Meta(**values)


def loaded(*views: ServiceView, m: Meta | None = None) -> Replica:
    rows = {v.name.encode(): encode(v) for v in views}
    rows[b"_meta"] = encode(m or meta())
    rows[b"_fold"] = b"{not a view}"
    return Replica.load(rows, "99-0")


def update(seq: int, *views: ServiceView, gen: str = "g1", **fields: Any) -> Update:
    return Update(seq=seq, gen=gen, status="error", services=list(views), **fields)


def test_load_keeps_services_and_counts_and_starts_at_the_update_id() -> None:
    replica = loaded(view("a"), view("b", "error"), view("c", "degraded"))
    assert sorted(replica.views) == ["a", "b", "c"]
    assert replica.counts_present() == {"healthy": 1, "error": 1, "degraded": 1}
    assert replica.unhealthy == {"b", "c"}
    assert (replica.gen, replica.seq, replica.cursor) == ("g1", 1, "10-0")
    assert replica.ordered() == ["a", "b", "c"]
    assert msgspec.json.decode(replica.raw("a"), type=ServiceView) == view("a")


def test_load_without_meta_is_no_data_yet_at_the_stream_end() -> None:
    replica = Replica.load({}, "42-1")
    assert (replica.meta, replica.gen, replica.cursor, replica.status) == (
        None,
        None,
        "42-1",
        "unknown",
    )
    assert Replica.load({}, None).cursor == "0-0"


def test_apply_replaces_removes_and_refreshes() -> None:
    replica = loaded(view("a"), view("b"), view("c"))
    before = replica.raw("a")
    removed = replica.apply("11-0", update(2, view("a", "error"), view("d"), removed=["b", "zz"]))
    assert removed == {"b": "perpetual"}
    assert sorted(replica.views) == ["a", "c", "d"] and replica.ordered() == ["a", "c", "d"]
    assert replica.counts_present() == {"healthy": 2, "error": 1}
    assert replica.unhealthy == {"a"}
    assert replica.raw("a") != before
    assert replica.meta is not None
    assert (replica.seq, replica.status, replica.cursor) == (2, "error", "11-0")
    assert (replica.meta.update_id, replica.meta.services) == ("11-0", 3)

    replica.apply("12-0", update(3, fresh={"c": 1_700_000_123_456, "gone": 1}))
    assert replica.views["c"].last_heartbeat_ms == 1_700_000_123_456
    assert replica.views["c"].last_heartbeat == "2023-11-14T22:15:23.456Z"
    assert b"1700000123456" in replica.raw("c")


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (update(2, gen="g2"), "generation"),
        (update(3), "missed"),
        (update(1), "missed"),
    ],
)
def test_apply_refuses_what_it_cannot_apply_exactly(entry: Update, why: str) -> None:
    with pytest.raises(NeedReload, match=why):
        loaded(view("a")).apply("11-0", entry)


def test_apply_without_data_needs_a_load() -> None:
    with pytest.raises(NeedReload):
        Replica.load({}, None).apply("1-0", update(1))


def test_merge_meta_takes_the_bus_fields_only() -> None:
    replica = loaded(view("a"))
    replica.apply("11-0", update(2, view("a", "error")))
    replica.merge_meta(meta(seq=1, update_id="10-0", updated_at_ms=5, leader="other"))
    assert replica.meta is not None
    assert (replica.meta.updated_at_ms, replica.meta.leader) == (5, "other")
    assert (replica.seq, replica.status, replica.meta.update_id) == (2, "error", "11-0")
    with pytest.raises(NeedReload):
        replica.merge_meta(meta(gen="g2"))


@pytest.mark.parametrize(
    ("value", "pair"),
    [("1-0", (1, 0)), ("1700000000000-12", (1700000000000, 12)), ("0-0", (0, 0))],
)
def test_parse_stream_id(value: str, pair: tuple[int, int]) -> None:
    assert parse_stream_id(value) == pair


@pytest.mark.parametrize(
    "value", ["", "1", "1-", "-1", "a-1", "1-1-1", "1 -1", "$", "9" * 50 + "-0"]
)
def test_parse_stream_id_refuses(value: str) -> None:
    assert parse_stream_id(value) is None


def test_parse_event_id_allows_dashes_in_the_generation() -> None:
    assert parse_event_id("g-1-2-3-4") == ("g-1-2", "3-4", (3, 4))
    assert parse_event_id("abc-5-0") == ("abc", "5-0", (5, 0))
    for bad in (None, "", "5-0", "-5-0", "g-5", "g-5-x", "x" * 300):
        assert parse_event_id(bad) is None


def test_stream_entries_reads_resp2_and_resp3_replies() -> None:
    entries = [(b"1-0", {b"m": b"x"}), (b"2-0", {b"m": b"y"})]
    assert stream_entries([[b"key", entries]]) == entries
    assert stream_entries({b"key": [entries]}) == entries
    assert stream_entries({b"key": entries}) == entries
    assert stream_entries(None) == [] and stream_entries([]) == []


# -- the hub, without its reader ------------------------------------------------------------


def hub_with(
    *views: ServiceView, ring_size: int = 8, ring_bytes: int = 1 << 20, queue: int = 4
) -> Hub:
    config = Config(sse_queue_size=queue)
    hub = Hub(cast(Any, None), config, ring_size=ring_size, ring_bytes=ring_bytes)
    hub.replica = loaded(*views)
    hub.ring_base = hub.replica.cursor
    return hub


def apply(hub: Hub, n: int, seq: int) -> list[str]:
    ids = []
    for i in range(n):
        entry_id = f"{20 + seq + i}-0"
        hub._apply(entry_id, {b"m": encode(update(seq + i, view(f"s{seq + i}")))})
        ids.append(entry_id)
    return ids


async def test_plans_resume_from_the_ring_or_redis_or_a_snapshot() -> None:
    hub = hub_with(view("a"), ring_size=3)
    ids = apply(hub, 5, 2)  # the ring keeps the last three
    assert [e.id for e in hub.ring] == ids[2:] and hub.ring_base == ids[1]
    sel = Selection()

    def plan(last: str | None) -> Any:
        return hub.subscribe(sel, last)[1]

    assert plan(f"g1-{ids[-1]}").snapshot is False and plan(f"g1-{ids[-1]}").entries == []
    assert [e.id for e in plan(f"g1-{ids[2]}").entries] == ids[3:]
    assert [e.id for e in plan(f"g1-{ids[1]}").entries] == ids[2:]  # the ring's base
    assert plan(f"g1-{ids[0]}").fetch == (ids[0], ids[-1])
    assert plan("g1-10-0").fetch == ("10-0", ids[-1])
    for unusable in (None, "nonsense", f"g2-{ids[2]}", "g1-99-0", "g1-23-5"):
        assert plan(unusable).snapshot is True


async def test_the_ring_is_bounded_by_bytes_too() -> None:
    hub = hub_with(view("a"), ring_bytes=1000)
    ids = apply(hub, 6, 2)
    size = hub.ring[-1].size
    assert 300 < size < 1000
    assert [e.id for e in hub.ring] == ids[-(1000 // size) :]
    assert hub.ring_base == ids[-(1000 // size) - 1]
    assert [e.id for e in hub.subscribe(Selection(), f"g1-{hub.ring_base}")[1].entries] == [
        e.id for e in hub.ring
    ]


async def test_fan_out_drops_a_full_queue_and_resync_replaces_the_backlog() -> None:
    hub = hub_with(view("a"), queue=2)
    slow, _ = hub.subscribe(Selection())
    fast, _ = hub.subscribe(Selection())
    apply(hub, 1, 2)
    assert len(await fast.take() or []) == 1
    apply(hub, 1, 3)
    assert not slow.closed and hub.subscribers == 2
    apply(hub, 1, 4)  # a third entry for a queue of two
    assert slow.closed and hub.subscribers == 1
    assert await slow.take() is None
    assert [e.pos for e in await fast.take() or [] if isinstance(e, Entry)] == [2, 3]
    fast.push(hub.ring[-1])
    fast.resync()
    assert await fast.take() == [RESYNC]


def test_a_subscriber_queue_is_bounded() -> None:
    sub = Subscriber(Selection(), 1, 0)
    entry = Entry(1, "1-0", update(1))
    assert sub.push(entry) is True
    assert sub.push(entry) is False and sub.closed
    assert sub.push(entry) is False


async def test_the_snapshot_is_rendered_once_per_state() -> None:
    hub = hub_with(view("a"))
    hub.connected = True
    first = hub.snapshot(Selection())
    assert hub.snapshot(Selection()) is first
    apply(hub, 1, 2)
    second = hub.snapshot(Selection())
    assert second is not first and b'"seq":2' in second
    hub.connected = False  # staleness is part of what is cached
    assert b'"stale":true' in hub.snapshot(Selection())


def test_transitions_of_removed_services_keep_their_kind_for_filters() -> None:
    hub = hub_with(view("a", kind="consumer"), view("b"))
    raw = update(2, removed=["a"], transitions=[transition("a", "healthy", "unknown")])
    hub._apply("30-0", {b"m": encode(raw)})
    entry = hub.ring[-1]
    assert entry.removed_kinds == {"a": "consumer"}
    consumers = Selection(kinds=frozenset({"consumer"}))
    rendered = entry.render(consumers, hub.kind_of)
    assert b'"removed":["a"]' in rendered and b"event: transition" in rendered
    assert entry.render(Selection(kinds=frozenset({"probe"})), hub.kind_of) == b""
