"""Probe workers: they watch from outside what services depend on (HTTP, TCP, Redis,
PostgreSQL, or a custom async function) and publish each check as a heartbeat of kind
`probe`, so a degrading database or a queue piling up in Redis shows before it breaks things.

    probes = load_probes("probes.toml")          # validated whole, before anything starts
    await serve_probes(config, probes)           # check and publish until cancelled

A custom probe's function returns a `ProbeResult` (or None for healthy).
"""

from __future__ import annotations

from publishers.probes.base import ProbeSpec
from publishers.probes.load import PROBE_TYPES, load_probes, parse_probes
from publishers.probes.result import ProbeResult
from publishers.probes.runner import check_all, check_once, run_probes, serve_probes

__all__ = [
    "PROBE_TYPES",
    "ProbeResult",
    "ProbeSpec",
    "check_all",
    "check_once",
    "load_probes",
    "parse_probes",
    "run_probes",
    "serve_probes",
]
