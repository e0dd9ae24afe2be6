"""Silences through the commands stream: they mark transitions and never change or hide one."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.fold import Folder
from aggregator.intake import Intake, order_key
from aggregator.persist import fold_rows, load_state
from aggregator.state import FoldState
from healthbus.commands import Command, SilenceCommand, Unsilence, decode_command
from healthbus.errors import InvalidMessage
from healthbus.schema import Heartbeat, Transition, encode

T0 = 1_767_225_600_000
PROPERTY = settings(max_examples=80, derandomize=True, deadline=None, database=None)


def hb(service: str, ok: bool = True) -> Heartbeat:
    return Heartbeat(v=1, service=service, interval_s=10.0, ok=ok, error=None if ok else "boom")


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def silence(match: str, until_ms: int, id: str = "s1", starts_ms: int | None = None) -> Command:
    return SilenceCommand(
        id=id, match=match, until=at(until_ms), starts=None if starts_ms is None else at(starts_ms)
    )


def test_commands_decode_from_redis_cli_json() -> None:
    raw = b'{"v":1,"op":"silence","id":"pg","match":"postgres*","until":"2026-03-01T04:00:00Z"}'
    cmd = decode_command(raw)
    assert isinstance(cmd, SilenceCommand) and cmd.match == "postgres*"
    assert isinstance(decode_command(b'{"v":1,"op":"unsilence","id":"pg"}'), Unsilence)
    for bad in (b"{", b'{"v":1,"op":"reboot"}', b'{"v":2,"op":"unsilence","id":"pg"}'):
        with pytest.raises(InvalidMessage):
            decode_command(bad)


def test_a_silence_marks_matching_transitions_inside_its_window_only() -> None:
    folder = Folder(FoldState())
    folder.apply(hb("postgres"), T0)
    folder.apply(hb("api"), T0)
    folder.command(silence("post*", T0 + 10_000), T0 + 1_000, "1-0")
    [pg] = folder.apply(hb("postgres", ok=False), T0 + 2_000)
    [api] = folder.apply(hb("api", ok=False), T0 + 2_000)
    assert (pg.silenced, api.silenced) == (True, False)
    [resolve] = folder.apply(hb("postgres"), T0 + 3_000)
    assert resolve.event.endswith("recovered") and resolve.silenced
    [after] = folder.apply(hb("postgres", ok=False), T0 + 10_000)
    assert not after.silenced
    assert folder.state.commands.cursor == "1-0"


def test_a_silence_window_may_start_later_and_be_lifted() -> None:
    folder = Folder(FoldState())
    folder.apply(hb("db"), T0)
    folder.command(silence("db", T0 + 60_000, starts_ms=T0 + 5_000), T0, "1-0")
    [early] = folder.apply(hb("db", ok=False), T0 + 1_000)
    [inside] = folder.apply(hb("db"), T0 + 6_000)
    assert (early.silenced, inside.silenced) == (False, True)
    folder.command(Unsilence(id="s1"), T0 + 7_000, "2-0")
    [lifted] = folder.apply(hb("db", ok=False), T0 + 8_000)
    assert not lifted.silenced and not folder.state.commands.silences


def test_silences_survive_a_reload_and_expire() -> None:
    folder = Folder(FoldState())
    folder.command(silence("*", T0 + 5_000), T0, "7-0")
    rows = {k.encode(): v for k, v in fold_rows(folder.state).items()}
    reloaded = load_state(rows)
    assert reloaded.commands.cursor == "7-0" and "s1" in reloaded.commands.silences
    folder.expire(T0 + 5_000)
    assert not folder.state.commands.silences


def test_intake_releases_commands_in_entry_order_whatever_the_reads() -> None:
    def cmd(entry_id: str) -> tuple[bytes, dict[bytes, bytes]]:
        return entry_id.encode(), {b"m": encode(silence("x", T0 + 10**6, id=entry_id[:1]))}

    folder = Folder(FoldState())
    intake = Intake("0-0")
    intake.add([cmd(f"{T0 + 5}-0"), cmd(f"{T0 + 9}-0")])
    dead: list[object] = []
    assert intake.release(folder, T0 + 5, dead) == []  # a heartbeat of the same ms comes first
    assert folder.state.commands.cursor == "0-0"
    intake.release(folder, T0 + 6, dead)
    assert folder.state.commands.cursor == f"{T0 + 5}-0" and intake
    intake.add([(b"%d-0" % (T0 + 10), {b"m": b"{not json"})])
    intake.release(folder, T0 + 11, dead)
    assert not intake and folder.state.commands.cursor == f"{T0 + 10}-0" and len(dead) == 1
    assert order_key("5-1", False) < order_key("5-0", True) < order_key("6-0", False)


# -- property (acceptance of issue #5): a silence never hides a resolve ---------------

steps = st.lists(
    st.tuples(st.integers(0, 20_000), st.sampled_from(["a", "b"]), st.booleans()),
    min_size=1,
    max_size=40,
)
windows = st.lists(
    st.tuples(st.integers(0, 400_000), st.integers(0, 400_000), st.sampled_from(["a", "*", "b"])),
    max_size=4,
)


def run(
    history: list[tuple[int, str, bool]], silences: list[tuple[int, int, str]]
) -> list[Transition]:
    folder = Folder(FoldState())
    commands = [
        (start, silence(m, T0 + start + length, id=f"s{i}"))
        for i, (start, length, m) in enumerate(silences)
    ]
    out: list[Transition] = []
    t = T0
    for dt, service, ok in history:
        t += dt
        for start, command in [c for c in commands if T0 + c[0] <= t]:
            out += folder.command(command, T0 + start, f"{T0 + start}-1")
            commands.remove((start, command))
        out += folder.apply(hb(service, ok), t)
    for service in ("a", "b"):
        out += folder.apply(hb(service), t + 1)
    return out + folder.expire(t + 1)


@PROPERTY
@given(steps, windows)
def test_a_silence_never_hides_a_resolve_nor_changes_a_status(
    history: list[tuple[int, str, bool]], silences: list[tuple[int, int, str]]
) -> None:
    plain = run(history, [])
    marked = run(history, silences)

    def unmarked(ts: list[Transition]) -> list[bytes]:
        return [encode(msgspec.structs.replace(t, silenced=False)) for t in ts]

    assert unmarked(marked) == unmarked(plain)
    opened = {t.incident for t in marked if t.incident}
    resolved = {t.incident for t in marked if t.incident and t.to in ("healthy", "unknown")}
    assert opened == resolved  # every incident ends in a resolve, silenced or not
