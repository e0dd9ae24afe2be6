"""`healthbus bench` end to end at a twentieth of `--quick`: every scenario still runs and
reports its figures. Speed is never asserted here (BENCHMARKS.md records real runs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from healthbus.bench import SCENARIOS

#: The figures with targets that the issue asks for, by the start of their names.
TARGETED = (
    "fold: ",
    "healthbus / upsert per heartbeat",
    "healthbus / batched upsert",
    "publish: p50, Redis up",
    "publish: slowest call, Redis down",
    "latency: heartbeat to SSE at 10k/s, p99",
    "fan-out: healthbus, ",
    "memory: aggregator RSS per service",
    "detection: degraded after the rule, max",
)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_scenario_reports_its_figures() -> None:
    command = [sys.executable, "-m", "healthbus.cli", "bench", "--quick", "--scale", "0.05"]
    result = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, timeout=280, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in SCENARIOS:
        assert f"== {name} ==" in result.stderr, f"no table for {name}: {result.stderr[-2000:]}"
    figures = json.loads(result.stdout)
    for figure in figures:
        assert set(figure) == {"name", "value", "unit", "target", "met"}
        assert isinstance(figure["met"], bool)
    # The publish scenario's outage is its own doing, not a warning for the reader.
    assert "lost Redis" not in result.stderr, result.stderr[-3000:]
    # Each fold ratio divides by the ceiling measured right around its own drain.
    assert result.stderr.count(" XADD/s before, ") == 3, result.stderr[-3000:]
    names = [f["name"] for f in figures]
    for start in TARGETED:
        assert any(n.startswith(start) for n in names), f"{start!r} missing from {names}"
