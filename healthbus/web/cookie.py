"""The dashboard's session cookie: a value derived from the token, never the token itself.

`EventSource` cannot send an `Authorization` header, so the dashboard trades the token once
(`POST /api/session`) for an HttpOnly, SameSite=Strict cookie. Its value is
`<expiry>.<HMAC-SHA256(token, expiry)>`: checked without server state, it expires by itself,
and changing the token voids every cookie.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

__all__ = ["COOKIE_NAME", "SESSION_TTL_S", "session_valid", "session_value"]

COOKIE_NAME: Final = "healthbus_session"
SESSION_TTL_S: Final = 30 * 86_400


def _signature(token: str, expires_s: int) -> str:
    message = f"healthbus-session:{expires_s}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def session_value(token: str, now_s: float) -> str:
    expires_s = int(now_s) + SESSION_TTL_S
    return f"{expires_s}.{_signature(token, expires_s)}"


def session_valid(token: str, value: str, now_s: float) -> bool:
    """True for an unexpired cookie made with this token (compared in constant time)."""
    expires, _, signature = value.partition(".")
    if not expires.isdigit() or len(expires) > 12 or int(expires) <= now_s:
        return False
    return hmac.compare_digest(signature.encode(), _signature(token, int(expires)).encode())
