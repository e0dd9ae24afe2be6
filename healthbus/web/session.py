"""`/api/session` (the dashboard's sign-in) and `protected`, the 401 guard of detailed routes.

`EventSource` cannot send headers, so the dashboard posts the token once and gets an
HttpOnly, SameSite=Strict cookie holding a value derived from it (see `cookie.py`); the
browser then sends it with every request, the SSE feed included. The token never travels in
a query string.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from healthbus.config import Config
from healthbus.web.cookie import COOKIE_NAME, SESSION_TTL_S, session_value
from healthbus.web.routes import NO_STORE
from healthbus.web.selection import authorized, token_matches

__all__ = ["create_session", "delete_session", "get_session", "protected"]

Endpoint = Callable[[Request], Awaitable[Response]]
MAX_BODY: Final = 4096
UNAUTHORIZED: Final = {"WWW-Authenticate": 'Bearer realm="healthbus"', **NO_STORE}


class _Login(msgspec.Struct):
    token: str


_login_decoder = msgspec.json.Decoder(_Login)


def _state(config: Config, ok: bool) -> JSONResponse:
    body = {
        "token_required": config.token is not None,
        "authorized": ok,
        "show_details": config.show_details,
    }
    return JSONResponse(body, headers=NO_STORE)


def unauthorized(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, 401, headers=UNAUTHORIZED)


def protected(endpoint: Endpoint) -> Endpoint:
    """Answer 401 unless the request is authorized (always, with no token configured)."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        if not authorized(request.state.config, request.headers):
            return unauthorized(
                "this needs the token: send `Authorization: Bearer <token>` "
                "or sign in on the dashboard"
            )
        return await endpoint(request)

    return guarded


async def get_session(request: Request) -> Response:
    """Whether a token is configured and whether this request carries it."""
    config: Config = request.state.config
    return _state(config, authorized(config, request.headers))


async def create_session(request: Request) -> Response:
    """Check the token (JSON body `{"token": …}` or a bearer header) and set the cookie."""
    config: Config = request.state.config
    if config.token is None:
        return _state(config, True)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        body = await request.body()
        try:
            given = _login_decoder.decode(body).token if len(body) <= MAX_BODY else ""
        except (msgspec.ValidationError, msgspec.DecodeError):
            return JSONResponse({"error": 'send {"token": "…"} as JSON'}, 400, headers=NO_STORE)
    if not token_matches(config, given.strip()):
        return unauthorized("wrong token")
    response = _state(config, True)
    response.set_cookie(
        COOKIE_NAME,
        session_value(config.token, time.time()),
        max_age=SESSION_TTL_S,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


async def delete_session(request: Request) -> Response:
    """Sign out: the cookie is cleared."""
    config: Config = request.state.config
    response = _state(config, config.token is None)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response
