"""Figures and how they are shown: a table per scenario, and the `--json` list."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import msgspec

__all__ = ["Figure", "percentile", "render_table", "to_json"]

Compare = Literal[">=", "<="]


class Figure(msgspec.Struct, frozen=True, kw_only=True):
    """One measured figure. With a target it says whether the target was met; without one
    it is context (absolute numbers: the machine is small and noisy, ratios carry)."""

    name: str
    value: float
    unit: str
    #: `">= 0.4"`, `"<= 2"`: the bound the value must keep, in `unit`.
    target: str | None = None
    met: bool | None = None
    note: str = ""

    @classmethod
    def check(
        cls, name: str, value: float, unit: str, compare: Compare, bound: float, note: str = ""
    ) -> Figure:
        met = value >= bound if compare == ">=" else value <= bound
        if math.isnan(value):
            met = False
        return cls(
            name=name, value=value, unit=unit, target=f"{compare} {bound:g}", met=met, note=note
        )


class _JsonFigure(msgspec.Struct, frozen=True):
    name: str
    value: float | None
    unit: str
    target: str
    met: bool


def to_json(figures: Sequence[Figure]) -> bytes:
    """The `--json` list: one object per figure that has a target."""
    out = [
        _JsonFigure(f.name, None if math.isnan(f.value) else f.value, f.unit, f.target, bool(f.met))
        for f in figures
        if f.target is not None
    ]
    return msgspec.json.encode(out)


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def render_table(title: str, figures: Sequence[Figure]) -> str:
    rows = [
        (
            f.name,
            _number(f.value),
            f.unit,
            f.target or "",
            "" if f.met is None else ("met" if f.met else "MISSED"),
            f.note,
        )
        for f in figures
    ]
    head = ("figure", "value", "unit", "target", "", "note")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"== {title} =="]
    for row in [head, *rows]:
        cells = [
            cell.rjust(widths[i]) if i == 1 else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
