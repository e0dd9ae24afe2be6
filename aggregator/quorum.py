"""Quorum rules for services run as several instances (optional; the default is worst-of).

A rule names the instances that must be healthy: with `k` of them the service is
healthy, with fewer it is degraded, with none it is in error. Instances still waiting for
their first result do not count. Pure: instance statuses in, a verdict out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from healthbus.schema import Status

__all__ = ["quorum_for", "quorum_status"]


def quorum_for(name: str, rules: Mapping[str, int]) -> int | None:
    """The quorum of the first pattern matching `name`, or None (worst-of)."""
    return next((k for pattern, k in rules.items() if fnmatchcase(name, pattern)), None)


def quorum_status(statuses: Sequence[Status], k: int) -> tuple[Status, str] | None:
    """The service's verdict from its instances' statuses, or None when none is live."""
    live = [s for s in statuses if s != "unknown"]
    if not live:
        return None
    healthy = sum(s == "healthy" for s in live)
    if healthy >= k:
        return "healthy", f"{healthy} of {len(live)} instances healthy (quorum {k})"
    if healthy == 0:
        return "error", f"none of {len(live)} instances healthy (quorum {k})"
    return "degraded", f"{healthy} of {len(live)} instances healthy, fewer than {k}"
