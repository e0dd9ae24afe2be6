"""`GET /openapi.json`: the HTTP API as OpenAPI 3.1, its schemas generated from the Structs
the routes encode, so the document cannot drift from the bodies. A test checks that its
paths are exactly the app's routes."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from healthbus import __version__
from healthbus.schema import Transition
from healthbus.web.api import IncidentPage, ServiceDetail, Sla, TransitionPage
from healthbus.web.cookie import COOKIE_NAME
from healthbus.web.document import HealthDocument
from healthbus.web.history import MAX_DAYS, History
from healthbus.web.silences import NewSilence, SilenceList, SilenceView

__all__ = ["openapi", "openapi_document"]

REF: Final = "#/components/schemas/{name}"
SECURED: Final[list[dict[str, list[str]]]] = [{"bearer": []}, {"session": []}]
BAD: Final = {"400": {"description": "A query parameter is wrong; the body says which."}}


def _q(name: str, description: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": kind, **extra},
    }


NAME: Final = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The service's name.",
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,128}$"},
}
SERVICE: Final = _q("service", "Only this service's.")
BEFORE: Final = _q("before", "A stream id: the `next` of the previous page.")
DAYS: Final = _q("days", "UTC days up to today.", "integer", minimum=1, maximum=MAX_DAYS)


def _json(ref: str | None, description: str) -> dict[str, Any]:
    schema = {"$ref": REF.format(name=ref)} if ref else {"type": "object"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    secured: bool = False,
    errors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **(errors or {})}}
    if params:
        op["parameters"] = params
    if secured:
        op["security"] = SECURED
        op["responses"]["401"] = {"description": "A token is configured and was not given."}
    return op


def _paths() -> dict[str, Any]:
    text = {"description": "Text.", "content": {"text/plain": {"schema": {"type": "string"}}}}
    session = _json(None, "`token_required`, `authorized`, `show_details`.")
    paged = [SERVICE, _q("limit", "At most this many.", "integer", minimum=1), BEFORE]
    return {
        "/health": {
            "get": _op("Liveness: the process is up and reaches Redis.", _json(None, "ok"))
        },
        "/ready": {"get": _op("Readiness: the bus is fresh.", _json(None, "ready"))},
        "/api/health": {
            "get": _op(
                "The snapshot as one document; details withheld without the token.",
                _json("HealthDocument", "The document."),
                params=[
                    _q("status", "Comma-separated statuses."),
                    _q("kind", "Comma-separated kinds."),
                    _q("name", "A part of the name, any case."),
                    _q("limit", "Page size.", "integer", minimum=0),
                    _q("offset", "Page start.", "integer", minimum=0),
                ],
                errors=BAD,
            )
        },
        "/api/health/stream": {
            "get": _op(
                "Server-Sent Events: `snapshot`, then `update` and `transition`.",
                {"description": "An event stream.", "content": {"text/event-stream": {}}},
                params=[
                    _q("service", "Repeatable: only these services."),
                    _q("kind", "Repeatable: only these kinds."),
                    _q("changes", "`status`: no freshness-only updates.", enum=["all", "status"]),
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                errors=BAD,
            )
        },
        "/api/services/{name}": {
            "get": _op(
                "One service: its view, instances and latest transitions.",
                _json("ServiceDetail", "The service."),
                params=[NAME],
                secured=True,
                errors={"404": {"description": "No such service in the snapshot."}},
            )
        },
        "/api/services/{name}/history": {
            "get": _op(
                "Daily summaries: time per status, uptime, availability, incidents, p95 duration.",
                _json("History", "One entry per UTC day, oldest first."),
                params=[NAME, DAYS],
                secured=True,
                errors=BAD,
            )
        },
        "/api/services/{name}/sla": {
            "get": _op(
                "Uptime % (healthy / known time) and availability % ((healthy + degraded) / "
                "known time); unknown and blind time left out.",
                _json("Sla", "The figures over the window."),
                params=[NAME, DAYS],
                secured=True,
                errors=BAD,
            )
        },
        "/api/transitions": {
            "get": _op(
                "Transitions, newest first.",
                _json("TransitionPage", "One page."),
                params=paged,
                secured=True,
                errors=BAD,
            )
        },
        "/api/incidents": {
            "get": _op(
                "Incidents (transitions grouped by `incident`), newest opened first.",
                _json("IncidentPage", "One page."),
                params=paged,
                secured=True,
                errors=BAD,
            )
        },
        "/api/silences": {
            "get": _op(
                "Silences in force or to come, soonest first (folded or not yet).",
                _json("SilenceList", "The silences."),
                secured=True,
            ),
            "post": {
                **_op(
                    "Silence a service or an fnmatch pattern for a window: its transitions "
                    "are still recorded, marked `silenced`.",
                    _json("SilenceView", "The silence (answered 201)."),
                    secured=True,
                    errors=BAD,
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": REF.format(name="NewSilence")}}
                    },
                },
            },
            "delete": _op(
                "End a silence now.",
                _json(None, "`id`, `deleted`, `entry` (the command's stream id)."),
                params=[_q("id", "The silence's id.")],
                secured=True,
                errors={"404": {"description": "No such silence in force or to come."}},
            ),
        },
        "/api/session": {
            "get": _op("Whether a token is needed and given.", session),
            "post": {
                **_op(
                    'Sign in: the token (JSON `{"token": …}` or a bearer header) for an '
                    "HttpOnly, SameSite=Strict cookie.",
                    session,
                    errors={"401": {"description": "Wrong token."}},
                ),
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"token": {"type": "string"}},
                                "required": ["token"],
                            }
                        }
                    },
                },
            },
            "delete": _op("Sign out: the cookie is cleared.", session),
        },
        "/badge/{name}.svg": {
            "get": _op(
                "A status badge; grey `unknown` for a service not in the snapshot.",
                {"description": "SVG.", "content": {"image/svg+xml": {}}},
                params=[NAME],
            )
        },
        "/metrics": {
            "get": _op("Prometheus text format 0.0.4.", text, secured=True),
        },
        "/openapi.json": {"get": _op("This document.", _json(None, "OpenAPI 3.1."))},
        "/": {"get": _op("The dashboard.", {"description": "HTML.", "content": {"text/html": {}}})},
    }


def openapi_document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [
            HealthDocument,
            ServiceDetail,
            History,
            Sla,
            TransitionPage,
            IncidentPage,
            Transition,
            SilenceList,
            SilenceView,
            NewSilence,
        ],
        ref_template=REF,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "healthbus",
            "version": __version__,
            "description": "Service health from a Redis stream: snapshot, live events, history.",
        },
        "paths": _paths(),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": COOKIE_NAME},
            },
        },
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(), headers={"Cache-Control": "no-cache"})
