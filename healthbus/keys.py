"""Every Redis key name healthbus uses, built in one place."""

from __future__ import annotations

import re

from healthbus.errors import ConfigError

__all__ = ["NAMESPACE_PATTERN", "Keys"]

NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Keys:
    """Key names of one namespace.

    Every key carries the namespace as a Redis Cluster hash tag (literal braces), so one
    Lua script may touch all of them on a cluster.
    """

    __slots__ = (
        "commands",
        "deadletters",
        "epoch",
        "expected",
        "heartbeats",
        "leader",
        "namespace",
        "notify_deadletters",
        "prefix",
        "snapshot",
        "state",
        "transitions",
        "updates",
    )

    def __init__(self, namespace: str = "default") -> None:
        if not NAMESPACE_PATTERN.fullmatch(namespace):
            raise ConfigError(
                f"namespace {namespace!r} is invalid: use 1-64 characters of A-Z a-z 0-9 _ . -"
            )
        self.namespace = namespace
        self.prefix = f"healthbus:{{{namespace}}}:"
        self.heartbeats = self.prefix + "heartbeats"
        self.transitions = self.prefix + "transitions"
        self.updates = self.prefix + "updates"
        self.snapshot = self.prefix + "snapshot"
        self.state = self.prefix + "state"
        self.leader = self.prefix + "leader"
        self.epoch = self.prefix + "epoch"
        self.deadletters = self.prefix + "deadletters"
        self.commands = self.prefix + "commands"
        self.expected = self.prefix + "expected"
        #: Notifications that could not be sent: a capped stream, with the reason.
        self.notify_deadletters = self.prefix + "notify:deadletters"

    def notify_open(self, route: str) -> str:
        """Hash of the incidents a notify route alerted about and has not resolved (TTL)."""
        return f"{self.prefix}notify:{route}:open"

    def notify_sent(self, route: str, key: str) -> str:
        """A notify route's marker for one idempotency key: a lock, then `sent` (TTL)."""
        return f"{self.prefix}notify:{route}:sent:{key}"

    def rollup(self, resolution: str, service: str) -> str:
        """The SLA rollup hash of one service at one resolution (`minute`, `hour`, `day`):
        one field per bucket; see healthbus/web/history.py for its fields."""
        return f"{self.prefix}sla:{resolution}:{service}"

    def __repr__(self) -> str:
        return f"Keys({self.namespace!r})"
