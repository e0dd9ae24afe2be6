"""`GET /badge/{name}.svg`: a shields-style status badge for READMEs and wikis.

Open even with a token (it shows only the status). A service the snapshot does not hold
gets a grey "unknown" badge, not a 404, so a README never shows a broken image.
"""

from __future__ import annotations

from html import escape
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from healthbus.web.hub import Hub

__all__ = ["COLORS", "badge", "badge_svg"]

COLORS: Final = {
    "healthy": "#2da44e",
    "degraded": "#bf8700",
    "error": "#cf222e",
    "unknown": "#9f9f9f",
}
#: Short enough for a README to follow changes, long enough to spare the server.
CACHE: Final = {
    "Cache-Control": "public, max-age=30",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}
#: Verdana 11 px averages under 7 px a character; `textLength` makes the text fit exactly.
CHAR_PX: Final = 7
PAD_PX: Final = 10


def _width(text: str) -> int:
    return len(text) * CHAR_PX + 2 * PAD_PX


def badge_svg(label: str, status: str) -> str:
    left, right = _width(label), _width(status)
    total = left + right
    color = COLORS.get(status, COLORS["unknown"])
    label_x, status_x = left / 2, left + right / 2
    lab, msg = escape(label, quote=True), escape(status, quote=True)
    text_attrs = 'y="14" textLength="{}"'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{lab}: {msg}"><title>{lab}: {msg}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{color}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{label_x}" {text_attrs.format(left - 2 * PAD_PX)}>{lab}</text>'
        f'<text x="{status_x}" {text_attrs.format(right - 2 * PAD_PX)}>{msg}</text>'
        "</g></svg>"
    )


async def badge(request: Request) -> Response:
    hub: Hub = request.state.hub
    name: str = request.path_params["name"]
    view = hub.replica.views.get(name)
    svg = badge_svg(name[:128], view.status if view is not None else "unknown")
    return Response(svg, media_type="image/svg+xml", headers=CACHE)
