"""`healthbus bench`: how fast and how big, side by side with the ceiling and the alternatives.

Every scenario runs against one private Redis started for the run (never a shared one), so
its figures are ratios measured together on the same machine; absolute numbers are context.
Scenarios import the aggregator and publishers inside their functions: `healthbus` itself
depends on neither (its CLI is the composition root).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Final

from healthbus.bench.context import Bench
from healthbus.bench.report import Figure, render_table, to_json
from healthbus.embedded import RedisServer

__all__ = ["DEFAULT_POSTGRES_URL", "SCENARIOS", "run_bench"]

#: Scenario names in the order they run; each is a module of this package with `run(bench)`.
SCENARIOS: Final = (
    "ceiling",
    "fold",
    "alternatives",
    "publish",
    "latency",
    "fanout",
    "memory",
    "detection",
)
#: Scenarios whose figures others divide by: run first when a later one needs them.
NEEDS: Final = {"alternatives": ("fold",)}
DEFAULT_POSTGRES_URL: Final = "postgresql://127.0.0.1:5432/test"


def plan(names: Sequence[str]) -> list[str]:
    """The scenarios to run, in order, with those the asked ones are compared to."""
    wanted = set(names or SCENARIOS)
    for name in list(wanted):
        wanted |= set(NEEDS.get(name, ()))
    return [name for name in SCENARIOS if name in wanted]


def run_bench(
    names: Sequence[str] = (),
    *,
    quick: bool = False,
    as_json: bool = False,
    postgres_url: str = DEFAULT_POSTGRES_URL,
    scale: float = 1.0,
) -> int:
    """Run the scenarios, print a table each (to stderr with `as_json`) and, with `as_json`,
    the JSON list of figures with targets to stdout. Returns 0: a missed target is a finding,
    not a failure."""
    tables = sys.stderr if as_json else sys.stdout
    figures: list[Figure] = []
    with RedisServer() as server:
        bench = Bench(server, quick=quick, postgres_url=postgres_url, scale=scale)
        bench.progress(f"bench: private Redis on {server.url} ({'quick' if quick else 'full'})")
        for name in plan(names):
            scenario: Callable[[Bench], list[Figure]] = importlib.import_module(
                f"healthbus.bench.{name}"
            ).run
            found = scenario(bench)
            bench.record(found)
            figures += found
            print(render_table(name, found), file=tables, flush=True)
            print(file=tables, flush=True)
    if as_json:
        sys.stdout.write(to_json(figures).decode() + "\n")
    return 0
