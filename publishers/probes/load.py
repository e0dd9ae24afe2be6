"""Reading and validating a probes file before anything starts.

The file holds one `[[probe]]` table per target. Every problem is reported at once, each as
`file:line: probe "name": key: what is wrong and the fix` (a misspelt key gets "did you mean
…?"). tomllib reports lines only for syntax errors, so the line of a key is found by scanning
the text: the n-th `[[probe]]` header, then the key below it. `${NAME}` in any string value
is replaced by the environment variable NAME, so secrets stay out of the file.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from healthbus.errors import ConfigError
from publishers.probes.base import ProbeSpec
from publishers.probes.custom_probe import CustomProbe
from publishers.probes.docket_probe import DocketProbe
from publishers.probes.http_probe import HttpProbe
from publishers.probes.postgres_probe import PostgresProbe
from publishers.probes.prefect_preset import PrefectPreset
from publishers.probes.redis_probe import RedisProbe
from publishers.probes.tcp_probe import TcpProbe

__all__ = ["PROBE_TYPES", "load_probes", "parse_probes"]

PROBE_TYPES: Final[dict[str, type[ProbeSpec]]] = {
    cls.type: cls
    for cls in (
        HttpProbe,
        TcpProbe,
        RedisProbe,
        PostgresProbe,
        DocketProbe,
        PrefectPreset,
        CustomProbe,
    )
}
#: Top-level keys a probes file may have; [healthbus] is the Config table of the same file.
TOP_LEVEL: Final = ("probe", "healthbus")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATH_IN_ERROR = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_PATH_PART = re.compile(r"\.(\w+)|\[(\d+)\]")

KeyPath = tuple[str | int, ...]
#: Number-valued keys, their unit and an example, for messages about them.
UNITS: Final = {
    "interval": ("seconds", "30"),
    "timeout": ("seconds", "5"),
    "degraded_ms": ("milliseconds", "500"),
    "error_ms": ("milliseconds", "2000"),
}


def load_probes(
    path: str | Path, environ: Mapping[str, str] | None = None, *, allow_empty: bool = False
) -> list[ProbeSpec]:
    """The probes of a TOML file, every one valid, or ConfigError listing all problems."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"probes file {path} does not exist") from None
    return parse_probes(text, str(path), os.environ if environ is None else environ, allow_empty)


def parse_probes(
    text: str, path: str, environ: Mapping[str, str], allow_empty: bool = False
) -> list[ProbeSpec]:
    """`load_probes` without the file: `path` only names it in messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    lines = text.splitlines()
    problems: list[str] = []
    for key in data:
        if key not in TOP_LEVEL:
            line = _find_key(lines, 0, len(lines), key, header=True) or 0
            problems.append(
                f"{path}:{line + 1}: unknown table or key `{key}`{_suggest(key, TOP_LEVEL)}"
            )
    tables = data.get("probe", [])
    if isinstance(tables, dict):
        line = _find_key(lines, 0, len(lines), "probe", header=True) or 0
        problems.append(f"{path}:{line + 1}: write [[probe]] (double brackets), one per target")
        tables = []
    if not tables and not problems:
        if allow_empty:
            return []
        raise ConfigError(
            f"{path}: no probes: add a [[probe]] table per target, e.g.\n"
            '[[probe]]\nname = "postgres"\ntype = "postgres"\nurl = "${DATABASE_URL}"'
        )
    starts = [n for n, line in enumerate(lines) if re.match(r"\s*\[\[\s*probe\s*\]\]", line)]
    probes: list[ProbeSpec] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        start = starts[index] if index < len(starts) else 0
        end = _table_end(lines, start)
        found = _probe(table, environ)
        where = _Where(path, lines, start, end, table)
        if isinstance(found, ProbeSpec):
            expanded = found.expand()
            taken = [probe.name for probe in expanded if probe.name in seen]
            if taken:
                found = [(("name",), f"another probe is already named {taken[0]!r}; rename one")]
            else:
                seen.update(probe.name for probe in expanded)
                probes.extend(expanded)
                continue
        found.sort(key=lambda problem: where.line(problem[0]))
        problems.extend(where.message(key, why) for key, why in found)
    if problems:
        count = f"{len(problems)} problems" if len(problems) > 1 else "a problem"
        raise ConfigError(
            f"{count} in the probes file; nothing was started:\n" + "\n".join(problems)
        )
    return probes


def _probe(table: object, environ: Mapping[str, str]) -> ProbeSpec | list[tuple[KeyPath, str]]:
    """The probe of one table, or its problems as (key path, message)."""
    if not isinstance(table, dict):
        return [((), "each [[probe]] must be a table")]
    kind = table.get("type")
    if kind not in PROBE_TYPES:
        known = ", ".join(PROBE_TYPES)
        if kind is None:
            return [(("type",), f"missing key `type`: one of {known}")]
        hint = _suggest(str(kind), PROBE_TYPES) or f": use one of {known}"
        return [(("type",), f"unknown type {kind!r}{hint}")]
    cls = PROBE_TYPES[kind]
    absent = [name for name in cls.requires if importlib.util.find_spec(name) is None]
    if absent:
        needs = f"a {kind} probe needs {', '.join(absent)}"
        return [(("type",), f"{needs}: pip install 'healthbus[probes]'")]
    fields = {k: v for k, v in table.items() if k != "type"}
    problems = list(_unknown_keys(fields, cls, ()))
    expanded: dict[str, Any] = {}
    for key, value in fields.items():
        expanded[key], missing = _expand(value, environ)
        problems.extend(
            ((key,), f"environment variable {name} is not set: export it, or write the value")
            for name in missing
        )
    if problems:
        return problems
    try:
        spec = msgspec.convert({**cls.defaults_for(expanded), **expanded}, cls)
    except msgspec.ValidationError as exc:
        return [_from_validation(str(exc))]
    return [((key,), why) for key, why in spec.problems()] or spec


def _unknown_keys(
    table: Mapping[str, Any], cls: type[msgspec.Struct], at: KeyPath
) -> Iterator[tuple[KeyPath, str]]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.encode_name: f for f in info.fields}
    known = [*fields, "type"] if not at else list(fields)
    for key, value in table.items():
        field = fields.get(key)
        if field is None:
            where = f"a {getattr(cls, 'type', '')} probe" if not at else f"`{at[-2]}`"
            listed = f"; known keys of {where}: {', '.join(sorted(known))}"
            yield (*at, key), f"unknown key `{key}`{_suggest(key, known) or listed}"
            continue
        item = getattr(field.type, "item_type", None)
        if isinstance(item, msgspec.inspect.StructType) and isinstance(value, list):
            for n, entry in enumerate(value):
                if isinstance(entry, dict):
                    yield from _unknown_keys(entry, item.cls, (*at, key, n))


def _expand(value: Any, environ: Mapping[str, str]) -> tuple[Any, list[str]]:
    """`value` with every `${NAME}` replaced, and the names that are not set."""
    missing: list[str] = []
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            if match[1] not in environ:
                missing.append(match[1])
                return ""
            return environ[match[1]]

        return _ENV_REF.sub(lookup, value), missing
    if isinstance(value, list):
        items = [_expand(v, environ) for v in value]
        return [v for v, _ in items], [m for _, ms in items for m in ms]
    if isinstance(value, dict):
        pairs = {k: _expand(v, environ) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, [m for _, ms in pairs.values() for m in ms]
    return value, missing


def _from_validation(message: str) -> tuple[KeyPath, str]:
    """msgspec's "Expected `float`, got `str` - at `$.interval`" as (("interval",), text)."""
    match = _PATH_IN_ERROR.search(message)
    if not match:
        missing = re.search(r"missing required field `(\w+)`", message)
        return ((missing[1],) if missing else ()), message
    path: KeyPath = tuple(
        int(index) if index else name for name, index in _PATH_PART.findall(match["path"])
    )
    text = message[: match.start()]
    if len(path) == 1 and str(path[0]) in UNITS:
        unit, example = UNITS[str(path[0])]
        text += f"; write {path[0]} as a number of {unit}, e.g. `{path[0]} = {example}`"
    return path, text


def _suggest(key: str, known: Sequence[str] | Mapping[str, object]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f": did you mean `{close[0]}`?" if close else ""


class _Where:
    """Names a problem's place: file, line, probe and key."""

    def __init__(self, path: str, lines: list[str], start: int, end: int, table: object) -> None:
        self.path, self.lines, self.start, self.end = path, lines, start, end
        name = table.get("name") if isinstance(table, dict) else None
        self.probe = (
            f"probe {name!r}" if isinstance(name, str) else f"[[probe]] at line {start + 1}"
        )

    def line(self, key: KeyPath) -> int:
        return _key_line(self.lines, self.start, self.end, key)

    def message(self, key: KeyPath, why: str) -> str:
        line = self.line(key)
        shown = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in key).lstrip(".")
        return f"{self.path}:{line + 1}: {self.probe}: " + (f"{shown}: {why}" if shown else why)


def _table_end(lines: list[str], start: int) -> int:
    """Where the table at `start` ends: the next header that is not one of its sub-tables."""
    for n in range(start + 1, len(lines)):
        if re.match(r"\s*\[", lines[n]) and not re.match(r"\s*\[\[?\s*probe\.", lines[n]):
            return n
    return len(lines)


def _key_line(lines: list[str], start: int, end: int, path: KeyPath) -> int:
    """The line of `path` (e.g. ("streams", 1, "key")) in the table spanning [start, end)."""
    line = start
    parts = list(path)
    while parts:
        key = parts.pop(0)
        if isinstance(key, int):
            continue
        if parts and isinstance(parts[0], int):
            header = rf"\s*\[\[\s*probe\.{re.escape(key)}\s*\]\]"
            subs = [n for n in range(start, end) if re.match(header, lines[n])]
            if parts[0] < len(subs):
                start = line = subs[parts[0]]
                end = next((n for n in range(start + 1, end) if re.match(r"\s*\[", lines[n])), end)
                continue
        found = _find_key(lines, start, end, key)
        if found is None:  # a sub-table: [probe.tasks]
            table = rf"\s*\[\s*probe\.{re.escape(key)}\s*\]"
            found = next((n for n in range(start, end) if re.match(table, lines[n])), None)
        return line if found is None else found
    return line


def _find_key(lines: list[str], start: int, end: int, key: str, header: bool = False) -> int | None:
    name = re.escape(key)
    pattern = rf"\s*(?:([\"']?){name}\1\s*[=.]" + (rf"|\[+\s*{name}\s*[\].])" if header else ")")
    return next((n for n in range(start, end) if re.match(pattern, lines[n])), None)
