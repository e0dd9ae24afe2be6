"""The one exception tree of healthbus.

    HealthBusError
    ├── ConfigError            bad flag, environment variable or TOML file
    ├── BusUnavailable         Redis cannot be reached (wraps redis.RedisError)
    ├── EmbeddedRedisError     no server binary to start, or it would not start
    ├── InvalidMessage         a message does not match its schema (carries the reason)
    └── NotLeader              a commit was fenced off: another aggregator holds the lease

Callers never need to import redis to catch our errors.
"""

from __future__ import annotations

__all__ = [
    "BusUnavailable",
    "ConfigError",
    "EmbeddedRedisError",
    "HealthBusError",
    "InvalidMessage",
    "NotLeader",
]


class HealthBusError(Exception):
    """Root of every error healthbus raises on purpose."""


class ConfigError(HealthBusError):
    """A setting is missing or wrong; the message names it and says how to fix it."""


class BusUnavailable(HealthBusError):
    """Redis could not be reached or answered with a connection-level error."""


class EmbeddedRedisError(HealthBusError):
    """No embedded Redis could be started."""


class InvalidMessage(HealthBusError):
    """A stream entry or message does not match the published schema."""

    def __init__(self, reason: str, service: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The entry's service name when it was readable and valid: that publisher is broken.
        self.service = service


class NotLeader(HealthBusError):
    """This aggregator lost its lease; another one commits now."""
