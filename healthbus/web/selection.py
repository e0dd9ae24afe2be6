"""What one client asked to see: SSE filters, and whether details are withheld from it."""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import cookie_parser

from healthbus.config import Config
from healthbus.schema import InstanceView, ServiceView, Transition
from healthbus.web.cookie import COOKIE_NAME, session_valid

__all__ = [
    "KIND_GROUPS",
    "BadQuery",
    "Selection",
    "authorized",
    "int_param",
    "kind_group",
    "redact_transition",
    "redact_view",
    "token_matches",
    "withholds_details",
]

#: The groups of `/api/health`; services of any other kind go with `perpetual`.
KIND_GROUPS: Final = ("perpetual", "consumer", "probe")
REDACTED: Final = "[redacted]"
MAX_VALUES: Final = 1000


class BadQuery(ValueError):
    """A query parameter has a value we cannot use; the message says which and why."""


def kind_group(kind: str) -> str:
    return kind if kind in KIND_GROUPS else "perpetual"


@dataclass(frozen=True, slots=True)
class Selection:
    """A client's view of the feed. Hashable: renderings are cached per selection."""

    names: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    #: `?changes=status`: no freshness-only or detail-only changes, only status changes.
    status_only: bool = False
    redact: bool = False

    @property
    def filters(self) -> bool:
        """True when the client narrowed the set of services."""
        return self.names is not None or self.kinds is not None

    def keeps(self, name: str, kind: str | None) -> bool:
        if self.names is not None and name not in self.names:
            return False
        if self.kinds is not None and kind is not None:
            return kind in self.kinds or kind_group(kind) in self.kinds
        return True

    @classmethod
    def from_query(cls, query: QueryParams, *, redact: bool) -> Selection:
        names = _values(query, "service")
        kinds = _values(query, "kind")
        changes = query.get("changes", "all")
        if changes not in ("all", "status"):
            raise BadQuery(f"changes={changes!r} is not known: use changes=status or leave it out")
        return cls(
            names=frozenset(names) if names else None,
            kinds=frozenset(kinds) if kinds else None,
            status_only=changes == "status",
            redact=redact,
        )


def _values(query: QueryParams, key: str) -> list[str]:
    """Repeated (`?k=a&k=b`) or comma-separated (`?k=a,b`) values."""
    values = [v for raw in query.getlist(key) for v in raw.split(",") if v]
    if len(values) > MAX_VALUES:
        raise BadQuery(f"at most {MAX_VALUES} values of {key!r} per request")
    return values


def authorized(config: Config, headers: Mapping[str, str], now_s: float | None = None) -> bool:
    """True when no token is configured, or the request carries it as a bearer token, or
    carries a valid session cookie (what the dashboard's `EventSource` can send)."""
    if config.token is None:
        return True
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return token_matches(config, given.strip())
    session = cookie_parser(headers.get("cookie", "")).get(COOKIE_NAME)
    if not session:
        return False
    return session_valid(config.token, session, time.time() if now_s is None else now_s)


def token_matches(config: Config, given: str) -> bool:
    """Constant-time comparison with the configured token (False when none is set)."""
    if config.token is None:
        return False
    return hmac.compare_digest(given.encode(), config.token.encode())


def int_param(query: QueryParams, key: str, default: int, most: int | None) -> int:
    """A whole-number query parameter, `default` when absent, at most `most`."""
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise BadQuery(f"{key}={raw!r} must be a whole number >= 0")
    value = int(raw)
    if most is not None and value > most:
        raise BadQuery(f"{key}={value} is over the maximum of {most}")
    return value


def withholds_details(config: Config, headers: Mapping[str, str]) -> bool:
    """Whether `details`, `error` texts and instance identities are removed for this client.

    Per `HEALTHBUS_SHOW_DETAILS`: `never` always withholds them, `always` never does, and
    `when-authorized` (the default) withholds them when a token is set and not given.
    """
    if config.show_details == "never":
        return True
    if config.show_details == "always":
        return False
    return not authorized(config, headers)


def _scrub(text: str | None, secret: str | None) -> str | None:
    if text is None or not secret:
        return text
    return text.replace(secret, REDACTED)


def redact_view(view: ServiceView) -> ServiceView:
    """The view without details, error texts and instance names (reasons quote errors)."""
    return msgspec.structs.replace(
        view,
        details=None,
        error=None,
        reason=_scrub(view.reason, view.error) or "",
        instances=[_redact_instance(i, n) for n, i in enumerate(view.instances, 1)],
    )


def _redact_instance(inst: InstanceView, n: int) -> InstanceView:
    return msgspec.structs.replace(
        inst, instance=f"#{n}", error=None, reason=_scrub(inst.reason, inst.error)
    )


def redact_transition(transition: Transition, error: str | None) -> Transition:
    """The transition with its service's error text (quoted in `reason`) withheld."""
    if not error or error not in transition.reason:
        return transition
    return msgspec.structs.replace(transition, reason=transition.reason.replace(error, REDACTED))
