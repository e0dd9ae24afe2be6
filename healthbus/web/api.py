"""The read API beyond `/api/health`: one service's detail, history and SLA, the
transitions and the incidents, paged. All of it needs the token when one is configured.

Services come from this worker's replica; the past from the transitions stream (newest
first; `before=<stream id>` pages back) or from the SLA rollups (see `history.py`).
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from healthbus.config import Config
from healthbus.schema import SERVICE_PATTERN, ServiceView, Transition, encode, parse_stream_id
from healthbus.web.history import MAX_DAYS, SCAN_BUDGET, History, read_history
from healthbus.web.hub import Hub
from healthbus.web.incidents import Grouper, Incident
from healthbus.web.routes import NO_STORE, REDIS_ERRORS
from healthbus.web.selection import (
    BadQuery,
    int_param,
    redact_transition,
    redact_view,
    withholds_details,
)
from healthbus.web.session import Endpoint, protected
from healthbus.web.transitions import Scan, page_transitions
from healthbus.web.uptime import Totals, totals

__all__ = [
    "IncidentPage",
    "ServiceDetail",
    "Sla",
    "TransitionPage",
    "api_route",
    "incidents",
    "service_detail",
    "service_history",
    "service_sla",
    "transitions",
]

log = logging.getLogger("healthbus.web")

#: Transitions in a service's detail.
RECENT: Final = 20
MAX_PAGE: Final = 1000
_NAME: Final = re.compile(SERVICE_PATTERN)


class ServiceDetail(msgspec.Struct, kw_only=True):
    service: ServiceView
    #: The service's latest transitions, newest first; `next` pages on at /api/transitions.
    transitions: list[Transition]
    next: str | None


class TransitionPage(msgspec.Struct, kw_only=True):
    transitions: list[Transition]
    #: Pass as `before=` for the next (older) page; null at the start of the stream.
    next: str | None


class IncidentPage(msgspec.Struct, kw_only=True):
    #: Newest opened first.
    incidents: list[Incident]
    next: str | None


class Sla(Totals, kw_only=True):
    service: str
    source: str
    from_: str = msgspec.field(name="from")
    to: str
    days: int
    note: str | None = None


def _json(body: msgspec.Struct) -> Response:
    return Response(encode(body), media_type="application/json", headers=NO_STORE)


def _api(endpoint: Endpoint) -> Endpoint:
    """Protected; a bad query answers 400 and Redis trouble 503, each saying why."""

    @functools.wraps(endpoint)
    async def checked(request: Request) -> Response:
        try:
            return await endpoint(request)
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, 400, headers=NO_STORE)
        except REDIS_ERRORS as exc:
            log.info("%s: Redis unavailable: %r", request.url.path, exc)
            return JSONResponse(
                {"error": f"cannot reach Redis ({type(exc).__name__})"}, 503, headers=NO_STORE
            )

    return protected(checked)


#: The guard of every detailed `/api/…` route (other modules' too).
api_route = _api


def _name(request: Request) -> str:
    name: str = request.path_params["name"]
    if not _NAME.match(name):
        raise BadQuery(f"{name[:140]!r} is not a service name: 1-128 of A-Z a-z 0-9 _ . : -")
    return name


def _service_param(request: Request) -> str | None:
    name = request.query_params.get("service") or None
    if name is not None and not _NAME.match(name):
        raise BadQuery(f"service={name[:140]!r} is not a service name")
    return name


def _before(request: Request) -> str | None:
    before = request.query_params.get("before") or None
    if before is not None and parse_stream_id(before) is None:
        raise BadQuery(f"before={before[:60]!r} is not a stream id (`<ms>-<seq>`, from `next`)")
    return before


def _limit(request: Request, default: int) -> int:
    limit = int_param(request.query_params, "limit", default, MAX_PAGE)
    if limit < 1:
        raise BadQuery("limit must be at least 1")
    return limit


def _shown(request: Request, hub: Hub, items: list[Transition]) -> list[Transition]:
    """Transitions as this client may see them (error texts quoted in reasons withheld)."""
    if not withholds_details(request.state.config, request.headers):
        return items
    views = hub.replica.views
    return [redact_transition(t, v.error if (v := views.get(t.service)) else None) for t in items]


@_api
async def service_detail(request: Request) -> Response:
    hub: Hub = request.state.hub
    config: Config = request.state.config
    name = _name(request)
    view = hub.replica.views.get(name)
    if view is None:
        return JSONResponse(
            {"error": f"no service {name!r} in the snapshot (never seen, or it left)"},
            404,
            headers=NO_STORE,
        )
    recent, cursor = await page_transitions(
        hub.redis, config.keys.transitions, service=name, limit=RECENT, before=None
    )
    redact = withholds_details(config, request.headers)
    detail = ServiceDetail(
        service=redact_view(view) if redact else view,
        transitions=_shown(request, hub, recent),
        next=cursor,
    )
    return _json(detail)


async def _history(request: Request, default_days: int) -> History:
    hub: Hub = request.state.hub
    config: Config = request.state.config
    name = _name(request)
    days = int_param(request.query_params, "days", default_days, MAX_DAYS)
    if days < 1:
        raise BadQuery("days must be at least 1")
    return await read_history(
        hub.redis,
        config.keys,
        name,
        days=days,
        now_ms=hub.redis_now_ms(),
        current=hub.replica.views.get(name),
    )


@_api
async def service_history(request: Request) -> Response:
    """Daily summaries: time in each status, uptime and availability, incidents, p95 duration."""
    return _json(await _history(request, MAX_DAYS))


@_api
async def service_sla(request: Request) -> Response:
    """Uptime and availability over the last `days` (default 30)."""
    history = await _history(request, 30)
    total = totals(history.days)
    sla = Sla(
        **msgspec.structs.asdict(total),
        service=history.service,
        source=history.source,
        from_=history.from_,
        to=history.to,
        days=len(history.days),
        note=history.note,
    )
    return _json(sla)


@_api
async def transitions(request: Request) -> Response:
    hub: Hub = request.state.hub
    config: Config = request.state.config
    found, cursor = await page_transitions(
        hub.redis,
        config.keys.transitions,
        service=_service_param(request),
        limit=_limit(request, 50),
        before=_before(request),
    )
    return _json(TransitionPage(transitions=_shown(request, hub, found), next=cursor))


@_api
async def incidents(request: Request) -> Response:
    """Incidents newest opened first; `before` is the `next` of the previous page."""
    hub: Hub = request.state.hub
    config: Config = request.state.config
    limit = _limit(request, 20)
    before = _before(request)
    upto = parse_stream_id(before) if before else None
    grouper = Grouper(hub.redis_now_ms(), _service_param(request))
    found: list[Incident] = []

    def take(stream_id: str, incident: Incident) -> bool:
        """Keep it if it belongs on this page; True once the page is full."""
        if upto is None or (parse_stream_id(stream_id) or (0, 0)) < upto:
            found.append(incident)
        return len(found) >= limit

    scan = Scan(hub.redis, config.keys.transitions, budget=SCAN_BUDGET)
    async for stream_id, t in scan:
        done = grouper.add(stream_id, t)
        if done is not None and take(stream_id, done):
            return _incidents(request, hub, found, stream_id)
    for stream_id, rest in grouper.leftovers():
        if take(stream_id, rest):
            return _incidents(request, hub, found, stream_id)
    return _incidents(request, hub, found, None)


def _incidents(request: Request, hub: Hub, found: list[Incident], cursor: str | None) -> Response:
    if withholds_details(request.state.config, request.headers):
        found = [
            msgspec.structs.replace(i, transitions=_shown(request, hub, i.transitions))
            for i in found
        ]
    return _json(IncidentPage(incidents=found, next=cursor))
