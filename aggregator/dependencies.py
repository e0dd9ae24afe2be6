"""Dependencies: `depends_on` builds a graph; a failing dependency explains its dependants.

A dependency fails when it is in `error`. The root cause of a service is the deepest
dependency at the end of a chain of failing dependencies (postgres under api under web):
that is what a person should look at first, and the dependants' own transitions are marked
`suppressed` so automations may ignore them. Cycles are cut where they close. Pure: the
graph and the statuses in, names out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from healthbus.schema import Status

if TYPE_CHECKING:
    from aggregator.state import FoldState, Service

__all__ = ["FAILING", "Graph", "relink", "roots", "status_changed"]

#: The status in which a dependency explains its dependants' failures.
FAILING: Status = "error"


class Graph:
    """The reverse edges (dependency -> dependants), kept as services come and go."""

    __slots__ = ("_dependants",)

    def __init__(self) -> None:
        self._dependants: dict[str, set[str]] = {}

    def link(self, name: str, old: Iterable[str], new: Iterable[str]) -> None:
        """`name` used to depend on `old` and now depends on `new`."""
        for dep in old:
            users = self._dependants.get(dep)
            if users is not None:
                users.discard(name)
                if not users:
                    del self._dependants[dep]
        for dep in new:
            self._dependants.setdefault(dep, set()).add(name)

    def dependants(self, name: str) -> set[str]:
        return self._dependants.get(name, set())

    def upstream_of(self, name: str, failing: Callable[[str], bool]) -> set[str]:
        """Services whose root causes may change when `name` starts or stops failing: its
        dependants, and theirs for as long as the chain keeps failing."""
        out: set[str] = set()
        todo = list(self.dependants(name))
        while todo:
            user = todo.pop()
            if user in out:
                continue
            out.add(user)
            if failing(user):
                todo.extend(self.dependants(user))
        return out


def roots(
    name: str,
    depends_on: Callable[[str], Iterable[str]],
    status: Callable[[str], Status | None],
) -> list[str]:
    """The deepest failing dependencies of `name`, deepest first (then by name); empty when
    none of its dependencies fails."""
    depth: dict[str, tuple[int, list[str]]] = {}

    def walk(node: str, path: frozenset[str]) -> tuple[int, list[str]]:
        """(depth, deepest names) below `node`, itself failing; a leaf is depth 0."""
        known = depth.get(node)
        if known is not None:
            return known
        best: tuple[int, list[str]] = (0, [node])
        for dep in sorted(set(depends_on(node))):
            if dep in path or status(dep) != FAILING:
                continue
            d, names = walk(dep, path | {dep})
            if d + 1 > best[0]:
                best = (d + 1, list(names))
            elif d + 1 == best[0] and best[0] > 0:
                best = (best[0], sorted({*best[1], *names}))
        depth[node] = best
        return best

    found: dict[str, int] = {}
    for dep in sorted(set(depends_on(name))):
        if dep == name or status(dep) != FAILING:
            continue
        d, names = walk(dep, frozenset({name, dep}))
        for root in names:
            found[root] = max(found.get(root, -1), d)
    return sorted(found, key=lambda root: (-found[root], root))


def relink(state: FoldState, svc: Service) -> None:
    """Keep `svc`'s dependencies (its live instances' `depends_on`) and the graph current."""
    lists = [i.depends_on for i in svc.each() if i.depends_on]
    if not lists and not svc.depends_on:
        return  # most services: none before, none now
    deps = tuple(sorted({d for names in lists for d in names}))
    if deps == svc.depends_on:
        return
    state.graph.link(svc.name, svc.depends_on, deps)
    svc.depends_on = deps
    names = {svc.name}
    if svc.status == FAILING:
        names |= _upstream(state, svc.name)
    _refresh(state, sorted(names))


def status_changed(state: FoldState, name: str) -> None:
    """`name` started or stopped failing: its dependants' root causes change with it."""
    _refresh(state, sorted(_upstream(state, name)))


def _upstream(state: FoldState, name: str) -> set[str]:
    def failing(user: str) -> bool:
        svc = state.services.get(user)
        return svc is not None and svc.status == FAILING

    return state.graph.upstream_of(name, failing)


def _refresh(state: FoldState, names: Iterable[str]) -> None:
    """Recompute the root causes these services are affected by."""
    services = state.services

    def depends_on(name: str) -> tuple[str, ...]:
        dep = services.get(name)
        return dep.depends_on if dep is not None else ()

    def status(name: str) -> Status | None:
        dep = services.get(name)
        return dep.status if dep is not None else None

    for name in names:
        svc = services.get(name)
        if svc is None:
            continue
        found = roots(name, depends_on, status) or None
        if found != svc.affected_by:
            svc.affected_by = found
            state.pending.urgent.add(name)
            state.pending.state.add(name)
