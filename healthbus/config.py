"""Configuration: one frozen Struct, loaded as flags > environment > TOML file > defaults.

Every field `x` can be set as the flag `--x`, the variable `HEALTHBUS_X` or the key `x` in the
`[healthbus]` table of a TOML file (`--config` / `HEALTHBUS_CONFIG`). Durations are seconds.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from healthbus.connection import parse_url
from healthbus.errors import ConfigError
from healthbus.keys import NAMESPACE_PATTERN, Keys

__all__ = ["ENV_PREFIX", "LOCAL_REDIS_URL", "Config", "NotifyRoute"]

ENV_PREFIX = "HEALTHBUS_"
#: What clients (CLI verbs, publishers) use when no Redis URL is configured.
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


class NotifyRoute(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One destination of `healthbus notify`: an Apprise URL and which alerts it gets.

    The filters choose alerts only: a resolve always follows an alert that was sent.
    """

    url: str
    #: fnmatch patterns of service names.
    services: tuple[str, ...] = ("*",)
    #: The statuses that raise an alert.
    statuses: tuple[Literal["degraded", "error"], ...] = ("degraded", "error")
    #: Service kinds (`perpetual`, `consumer`, `probe`); empty: all.
    kinds: tuple[str, ...] = ()
    #: Events (`error`, `degraded`, `left`, `appeared`, …); empty: all but `appeared`.
    events: tuple[str, ...] = ()


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: None: `serve` uses 127.0.0.1:6379 if it answers, else starts an embedded server.
    redis_url: str | None = None
    namespace: str = "default"
    #: This process's identity as a publisher; None: `host:pid` (`healthbus run`: the host).
    instance: str | None = None
    #: With a token, details and writes need `Authorization: Bearer <token>`.
    token: str | None = None
    show_details: Literal["never", "when-authorized", "always"] = "when-authorized"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    #: A TOML file of `[[probe]]` tables for `serve` and `probe`; None: the config file's own.
    probes: str | None = None

    # Status rules: age thresholds as multiples of the promised interval.
    degraded_after: float = 2.0
    error_after: float = 5.0
    #: Hysteresis: consecutive heartbeats judged better (rise) or worse (fall) before a
    #: service's status follows them; 1/1 takes every verdict at once. Silence is not held.
    rise: int = 1
    fall: int = 1
    #: Per service kind: kind -> [rise, fall], e.g. `{consumer = [2, 3]}`.
    hysteresis_by_kind: dict[str, tuple[int, int]] = msgspec.field(default_factory=dict)
    #: Flap detection: a service whose weighted percent state change over its last 21
    #: observations exceeds the high threshold flaps until it drops below the low one.
    #: A high of 0 turns it off.
    flap_high_pct: float = 40.0
    flap_low_pct: float = 20.0
    #: Quorum rules for services of several instances: fnmatch pattern -> how many must be
    #: healthy (fewer: degraded, none: error). Unmatched services take the worst instance.
    quorum: dict[str, int] = msgspec.field(default_factory=dict)
    #: Adaptive grace: an instance that is regularly late (by its own recent heartbeats) may
    #: stay silent up to this many intervals longer before the age rule counts; 0: off.
    grace_max: float = 1.0

    # Aggregator.
    lease_ttl_s: float = 5.0
    read_count: int = 1000
    #: Heartbeats kept behind the committed cursor, for replay and inspection.
    replay_window_s: float = 60.0
    transitions_maxlen: int = 100_000
    updates_retention_s: float = 600.0
    updates_maxlen: int = 100_000
    deadletters_maxlen: int = 10_000
    #: Operator commands (silences) kept in the commands stream.
    commands_maxlen: int = 10_000
    max_services: int = 200_000
    forget_after_s: float = 7 * 86_400.0
    #: SLA rollups (time in each status per minute, hour and UTC day) are kept this long;
    #: 0 writes none of that resolution. Each service is accounted at least every
    #: `sla_flush_s`. Memory: about 120 bytes a field, per service.
    sla_minute_retention_s: float = 3600.0
    sla_hour_retention_s: float = 7 * 86_400.0
    sla_day_retention_s: float = 92 * 86_400.0
    sla_flush_s: float = 60.0
    #: SLOs: fnmatch pattern -> availability target in percent (time not in error over known
    #: time), e.g. `{"api" = 99.9}`; a service whose error budget burns too fast (1 h and
    #: 5 min at 14.4x, or 6 h and 30 min at 6x) gets a `slo_burn` transition, then `slo_ok`.
    slo: dict[str, float] = msgspec.field(default_factory=dict)
    #: The aggregator reports its own health (stream length, lag, fold latency, invalid
    #: entries, gaps) as service `healthbus.aggregator` this often; 0: never.
    bus_interval_s: float = 10.0

    # Web.
    ready_stale_s: float = 10.0
    sse_ping_s: float = 15.0
    sse_send_timeout_s: float = 10.0
    sse_queue_size: int = 512
    #: Above this many services the SSE `snapshot` event carries counts and non-healthy ones.
    sse_snapshot_limit: int = 5000

    # Notifications (`healthbus notify`; `serve` too when `notify` routes are configured).
    #: Destinations: `[[healthbus.notify]]` tables, each an Apprise `url` with filters.
    notify: tuple[NotifyRoute, ...] = ()
    #: Prefix of the notifier's consumer groups, one per destination.
    notify_group: str = "notify"
    #: Transitions arriving within this window go out as one message.
    notify_group_wait_s: float = 5.0
    #: Remind while an alerted incident stays open; 0: never.
    notify_repeat_s: float = 4 * 3600.0
    #: Longest pause between retries of a failed send.
    notify_retry_max_s: float = 30.0
    #: A destination failing this long gets its messages dead-lettered instead of retried.
    notify_give_up_s: float = 6 * 3600.0
    #: Transitions a notifier left pending this long (it died) are taken over by another.
    notify_claim_idle_s: float = 60.0
    #: Linked from every notification.
    dashboard_url: str | None = None

    def __post_init__(self) -> None:
        Keys(self.namespace)  # validates the name
        if self.redis_url is not None:
            parse_url(self.redis_url)  # one server, a cluster or Sentinel; else a ConfigError
        if not 0 < self.degraded_after <= self.error_after:
            raise ConfigError("degraded_after must be > 0 and <= error_after")
        counts = [
            self.rise,
            self.fall,
            *(n for pair in self.hysteresis_by_kind.values() for n in pair),
        ]
        if min(counts) < 1:
            raise ConfigError("rise, fall and hysteresis_by_kind counts must be at least 1")
        if any(not 0 < t < 100 for t in self.slo.values()):
            raise ConfigError("an SLO target is a percentage between 0 and 100, e.g. 99.9")
        if self.grace_max < 0:
            raise ConfigError("grace_max must be >= 0 (intervals; 0 turns it off)")
        if any(k < 1 for k in self.quorum.values()):
            raise ConfigError("a quorum must be at least 1 instance")
        if self.flap_high_pct and not 0 <= self.flap_low_pct <= self.flap_high_pct <= 100:
            raise ConfigError("flap thresholds need 0 <= flap_low_pct <= flap_high_pct <= 100")
        if self.lease_ttl_s < 1:
            raise ConfigError("lease_ttl_s must be at least 1 second")
        if not NAMESPACE_PATTERN.fullmatch(self.notify_group):
            raise ConfigError("notify_group must be 1-64 characters of A-Z a-z 0-9 _ . -")
        if not 0 <= self.notify_group_wait_s < self.notify_claim_idle_s or (
            self.notify_claim_idle_s < 1
        ):
            raise ConfigError(
                "notify_claim_idle_s must be >= 1 s and longer than notify_group_wait_s >= 0 "
                "(a batch being gathered must not look abandoned)"
            )
        if len({route.url for route in self.notify}) < len(self.notify):
            raise ConfigError("each notify url may appear once: its state is keyed by it")

    @property
    def keys(self) -> Keys:
        return Keys(self.namespace)

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        file: str | Path | None = None,
        **flags: Any,
    ) -> Config:
        """Merge the sources; flags whose value is None count as not given."""
        import os

        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = file or env.get(ENV_PREFIX + "CONFIG")
        if path:
            values.update(_from_toml(Path(path)))
        values.update(_from_env(env))
        values.update({k: v for k, v in flags.items() if v is not None})
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid configuration: {exc}") from None

    def replace(self, **changes: Any) -> Config:
        return msgspec.structs.replace(self, **changes)


def _fields() -> set[str]:
    return set(Config.__struct_fields__)


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    known = _fields()
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        field = name[len(ENV_PREFIX) :].lower()
        if field in known:
            out[field] = value
    return out


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    table = data.get("healthbus", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [healthbus] must be a table")
    unknown = set(table) - _fields()
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [healthbus]: {', '.join(sorted(unknown))}; "
            f"known keys are: {', '.join(sorted(_fields()))}"
        )
    return dict(table)
