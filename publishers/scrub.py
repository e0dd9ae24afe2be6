"""Credential scrubbing for error texts, before they leave the process.

Error messages are shown on a dashboard and kept in Redis, and exception texts often quote a
connection URL or a request header. The contract asks publishers to remove URL userinfo,
`password=…`-style values and bearer tokens, and to keep `error` within 1 KiB. This is a
best-effort text filter, not a guarantee: it catches the common shapes, so do not put secrets in
error messages on purpose.
"""

from __future__ import annotations

import re
from typing import Final

from healthbus.schema import ERROR_MAX_BYTES

__all__ = ["MASK", "clean_error", "scrub"]

MASK: Final = "***"
#: Only this much of a huge text is scanned; everything past 1 KiB is cut off afterwards anyway.
_SCAN_LIMIT: Final = 16 * 1024
_ELLIPSIS: Final = "…"

# scheme://user:password@host or scheme://token@host. The userinfo may not contain '/', so the
# match cannot run past the authority into a path; '@' inside it is taken up to the last one.
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#@\"'<>]+(?:@[^\s/?#@\"'<>]+)*)@"
)
# password=…, "password": "…", api_key: …, ?token=…&. The key may be quoted; the value ends at
# whitespace, a quote, '&', ',' or ';' (or runs inside its quotes).
_SECRET_KEYS = r"password|passwd|pwd|secret|token|api[_-]?key|apikey|private[_-]?key"
_KEY_VALUE = re.compile(
    # A prefix such as PG, DB_, client_, access_ is part of the key: PGPASSWORD=…, access_token=…
    rf"(?P<key>[\"']?\b[A-Za-z0-9_-]*?(?:{_SECRET_KEYS})\b[\"']?\s*[=:]\s*)"
    r"(?:(?P<quote>[\"'])(?P<quoted>[^\"']*)(?P=quote)|(?P<bare>[^\s\"'&,;]+))",
    re.IGNORECASE,
)
# "Bearer <token>" anywhere, and the credentials of any scheme in an Authorization header
# ("Authorization: Basic …", "authorization=Token …").
_AUTH_TOKEN = re.compile(
    r"(?P<lead>\bBearer\s+|\bAuthorization[\"']?\s*[=:]\s*[\"']?(?:[A-Za-z-]+\s+)?)"
    r"[A-Za-z0-9\-._~+/]+=*",
    re.IGNORECASE,
)


def _mask_userinfo(match: re.Match[str]) -> str:
    userinfo = match["userinfo"]
    user, sep, _ = userinfo.partition(":")
    # With a password, keep the user (useful when debugging); a lone token is all secret.
    return f"{match['scheme']}{user}:{MASK}@" if sep else f"{match['scheme']}{MASK}@"


def _mask_value(match: re.Match[str]) -> str:
    if match["quote"]:
        return f"{match['key']}{match['quote']}{MASK}{match['quote']}"
    return f"{match['key']}{MASK}"


def scrub(text: str) -> str:
    """`text` with URL passwords, `key=secret` values and Authorization tokens replaced."""
    text = _URL_USERINFO.sub(_mask_userinfo, text)
    text = _AUTH_TOKEN.sub(lambda m: m["lead"] + MASK, text)
    return _KEY_VALUE.sub(_mask_value, text)


def truncate_utf8(text: str, limit: int) -> str:
    """At most `limit` bytes of UTF-8, never splitting a character; marks a cut with '…'."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    room = limit - len(_ELLIPSIS.encode())
    return raw[:room].decode("utf-8", "ignore") + _ELLIPSIS


def clean_error(text: str, limit: int = ERROR_MAX_BYTES) -> str:
    """What a publisher sends as `error`: scrubbed, then cut to `limit` bytes (1 KiB)."""
    return truncate_utf8(scrub(text[:_SCAN_LIMIT]), limit)
