"""`GET /api/health`: the snapshot as one document, paged and filtered, from the replica.

Shape (the source discussion's): overall `status` and `seq`, `server` (this web process),
`bus` (the aggregator's leader, generation, freshness), `services` grouped by kind
(`perpetual`, `consumer`, `probe`; other kinds go with `perpetual`), the `counts` by status
and the `total` of the services matching the filters, of which `limit` from `offset` are
listed, in name order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec
from starlette.datastructures import QueryParams

from healthbus.schema import STATUS_ORDER, encode, iso_ms
from healthbus.web.replica import Replica
from healthbus.web.selection import KIND_GROUPS, BadQuery, int_param, kind_group, redact_view

__all__ = ["HealthDocument", "HealthQuery", "ServerInfo", "health_document"]

DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 50_000


@dataclass(frozen=True, slots=True)
class ServerInfo:
    version: str
    started_ms: int
    now_ms: int
    #: Open SSE streams of this worker process.
    sse_clients: int = 0


@dataclass(frozen=True, slots=True)
class HealthQuery:
    statuses: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    name: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    @property
    def filters(self) -> bool:
        return bool(self.statuses or self.kinds or self.name)

    @classmethod
    def from_query(cls, query: QueryParams) -> HealthQuery:
        statuses = frozenset(v for raw in query.getlist("status") for v in raw.split(",") if v)
        unknown = statuses - set(STATUS_ORDER)
        if unknown:
            raise BadQuery(
                f"status={','.join(sorted(unknown))} is not a status: use {', '.join(STATUS_ORDER)}"
            )
        kinds = frozenset(v for raw in query.getlist("kind") for v in raw.split(",") if v)
        return cls(
            statuses=statuses or None,
            kinds=kinds or None,
            name=query.get("name") or None,
            limit=int_param(query, "limit", DEFAULT_LIMIT, MAX_LIMIT),
            offset=int_param(query, "offset", 0, None),
        )


class HealthServer(msgspec.Struct):
    version: str
    started_at: str
    uptime_seconds: float
    sse_clients: int


class BusInfo(msgspec.Struct):
    leader: str | None
    epoch: int | None
    gen: str | None
    update_id: str | None
    updated_at: str | None
    lag_ms: int | None
    buffer_s: float | None
    stale: bool


class HealthDocument(msgspec.Struct):
    status: str
    seq: int
    as_of: str | None
    server: HealthServer
    bus: BusInfo
    services: dict[str, msgspec.Raw]
    counts: dict[str, int]
    total: int
    limit: int
    offset: int


def health_document(
    replica: Replica, query: HealthQuery, *, server: ServerInfo, stale: bool, redact: bool
) -> bytes:
    meta = replica.meta
    views = replica.views
    names = replica.ordered()
    if query.filters:
        needle = query.name.lower() if query.name else None
        matching = [
            n
            for n in names
            if (query.statuses is None or views[n].status in query.statuses)
            and (query.kinds is None or _kind_matches(views[n].kind, query.kinds))
            and (needle is None or needle in n.lower())
        ]
        counts: dict[str, int] = {}
        for n in matching:
            counts[views[n].status] = counts.get(views[n].status, 0) + 1
    else:
        matching = names
        counts = replica.counts_present()
    page = matching[query.offset : query.offset + query.limit]
    groups: dict[str, list[bytes]] = {group: [] for group in KIND_GROUPS}
    for n in page:
        view = views[n]
        raw = encode(redact_view(view)) if redact else replica.raw(n)
        groups[kind_group(view.kind)].append(raw)
    document = HealthDocument(
        status=replica.status,
        seq=replica.seq,
        as_of=meta.as_of if meta else None,
        server=HealthServer(
            version=server.version,
            started_at=iso_ms(server.started_ms),
            uptime_seconds=round(max(0, server.now_ms - server.started_ms) / 1000, 3),
            sse_clients=server.sse_clients,
        ),
        bus=BusInfo(
            leader=(meta.leader if not redact else "") if meta else None,
            epoch=meta.epoch if meta else None,
            gen=meta.gen if meta else None,
            update_id=replica.cursor if meta else None,
            updated_at=meta.updated_at if meta else None,
            lag_ms=meta.lag_ms if meta else None,
            buffer_s=meta.buffer_s if meta else None,
            stale=stale,
        ),
        services={g: msgspec.Raw(b"[" + b",".join(items) + b"]") for g, items in groups.items()},
        counts=counts,
        total=len(matching),
        limit=query.limit,
        offset=query.offset,
    )
    return encode(document)


def _kind_matches(kind: str, kinds: frozenset[str]) -> bool:
    return kind in kinds or kind_group(kind) in kinds
