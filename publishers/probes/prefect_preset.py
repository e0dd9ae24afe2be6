"""`type = "prefect"`: a self-hosted Prefect server in one table, expanded when the file is
loaded into the probes that watch it, with Prefect's defaults (checked against Prefect 3.8):

- `<name>.api`: `GET <api_url>/health` (the API process answers; its body is `true`).
- `<name>.ready`: `GET <api_url>/ready` (503 while the database is unreachable).
- `<name>.redis` (with `redis_url`): the messaging streams `events` and `actions` of
  prefect-redis, the worst consumer group's lag and pending (the event persister falling
  behind shows here first).
- `<name>.postgres` (with `database_url`): connections (by `application_name`, when Prefect
  sets one) and the `events` and `event_resources` tables, which grow without bound when the
  event vacuum does not run.
- `<name>.docket` and `<name>.docket.<service>` (with `docket_url`, else `redis_url`): the
  docket of Prefect's perpetual services (`prefect-server` in `prefect server start`,
  `prefect` in `prefect server services start`), one heartbeat per service.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, Final

import msgspec

from publishers.probes.base import ProbeSpec, Seconds, public_target
from publishers.probes.docket_probe import DocketProbe
from publishers.probes.http_probe import HttpProbe
from publishers.probes.postgres_probe import PostgresProbe, TableCheck
from publishers.probes.redis_probe import RedisProbe, StreamCheck

__all__ = ["PREFECT_SERVICES", "PrefectPreset"]

#: Prefect's perpetual services that run by default, by key, and their period in seconds
#: (`PREFECT_SERVER_SERVICES_*_LOOP_SECONDS` defaults of Prefect 3.8). Telemetry is left out:
#: many turn it off.
PREFECT_SERVICES: Final[Mapping[str, float]] = {
    "schedule_deployments": 60.0,
    "schedule_recent_deployments": 5.0,
    "monitor_late_runs": 5.0,
    "monitor_worker_health": 15.0,
    "monitor_expired_pauses": 5.0,
    "monitor_expired_leases": 15.0,
    "monitor_cancelled_flow_runs": 20.0,
    "monitor_subflow_runs": 20.0,
    "ensure_cancelling_timeout_checks": 20.0,
    "reconcile_cleanup_delivery": 5.0,
    "evaluate_proactive_triggers_periodic": 5.0,
    "schedule_event_vacuum_tasks": 3600.0,
}
RETENTION_HINT: Final = (
    "Prefect deletes events older than PREFECT_SERVER_EVENTS_RETENTION_PERIOD (7 days by "
    "default) in its hourly event vacuum: check that schedule_event_vacuum_tasks runs, or "
    "shorten the retention"
)
Count = Annotated[int, msgspec.Meta(ge=0)] | None
RedisUrl = Annotated[str, msgspec.Meta(pattern=r"^(redis|rediss|unix)://")]
_ASYNCPG = re.compile(r"^(postgres(?:ql)?)\+asyncpg://")


class PrefectPreset(ProbeSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every probe it stands for shares its `interval` and `timeout`; each keeps its own
    type's latency limits unless `degraded_ms`/`error_ms` are set here."""

    type: ClassVar[str] = "prefect"
    requires: ClassVar[tuple[str, ...]] = ("httpx",)
    #: PREFECT_API_URL, e.g. http://prefect-server:4200/api.
    api_url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    #: Headers for the API checks (e.g. Authorization when PREFECT_SERVER_API_AUTH_STRING
    #: is set).
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    #: The Redis of prefect-redis messaging (PREFECT_REDIS_MESSAGING_HOST and so on).
    redis_url: RedisUrl | None = None
    lag_degraded: Count = 10_000
    lag_error: Count = 100_000
    pending_degraded: Count = 1_000
    pending_error: Count = 10_000
    #: PREFECT_SERVER_DOCKET_URL, when it is not `redis_url`.
    docket_url: RedisUrl | None = None
    docket: Annotated[str, msgspec.Meta(min_length=1)] = "prefect-server"
    #: Periods of services to watch besides (or instead of) PREFECT_SERVICES' defaults.
    tasks: dict[str, Seconds] = msgspec.field(default_factory=dict)
    #: Services this server does not run (turned off in its settings).
    skip_tasks: list[str] = msgspec.field(default_factory=list)
    #: PREFECT_SERVER_DATABASE_CONNECTION_URL (postgresql+asyncpg:// is accepted as is).
    database_url: Annotated[str, msgspec.Meta(pattern=r"^postgres(ql)?(\+asyncpg)?://")] | None = (
        None
    )
    #: PREFECT_SERVER_DATABASE_SQLALCHEMY_CONNECT_ARGS_APPLICATION_NAME, when set.
    application_name: str | None = None
    events_rows_warning: Count = 10_000_000
    event_resources_rows_warning: Count = 50_000_000
    interval: Seconds = 15.0
    timeout: Seconds = 5.0

    @property
    def target(self) -> str:
        return public_target(self.api_url)

    def problems(self) -> Iterator[tuple[str, str]]:
        own = list(super().problems())
        yield from own
        unknown = sorted(set(self.skip_tasks) - set(PREFECT_SERVICES) - set(self.tasks))
        if unknown:
            yield "skip_tasks", f"not one of the watched services: {', '.join(unknown)}"
        if self.database_url and importlib.util.find_spec("psycopg") is None:
            yield (
                "database_url",
                "the postgres check needs psycopg: pip install 'healthbus[probes]'",
            )
        for probe in [] if own else self.expand():  # theirs would repeat the same
            if len(probe.name) > 128:
                yield "name", f"{probe.name} is longer than 128 characters: shorten the name"
            for key, why in probe.problems():
                yield key, f"{probe.name}: {why}"

    def expand(self) -> list[ProbeSpec]:
        shared: dict[str, Any] = {"interval": self.interval, "timeout": self.timeout}
        shared.update(
            {
                k: v
                for k, v in (("degraded_ms", self.degraded_ms), ("error_ms", self.error_ms))
                if v is not None
            }
        )
        base = self.api_url.rstrip("/")
        probes: list[ProbeSpec] = [
            HttpProbe(
                name=f"{self.name}.api",
                url=f"{base}/health",
                body_contains="true",
                headers=self.headers,
                depends_on=self.depends_on,
                **shared,
            ),
            HttpProbe(
                name=f"{self.name}.ready",
                url=f"{base}/ready",
                headers=self.headers,
                depends_on=[f"{self.name}.postgres"] if self.database_url else [],
                **shared,
            ),
        ]
        if self.redis_url:
            streams = [
                StreamCheck(
                    key=key,
                    lag_degraded=self.lag_degraded,
                    lag_error=self.lag_error,
                    pending_degraded=self.pending_degraded,
                    pending_error=self.pending_error,
                )
                for key in ("events", "actions")
            ]
            probes.append(
                RedisProbe(name=f"{self.name}.redis", url=self.redis_url, streams=streams, **shared)
            )
        if self.database_url:
            probes.append(
                PostgresProbe(
                    name=f"{self.name}.postgres",
                    url=_ASYNCPG.sub(r"\1://", self.database_url),
                    applications=[self.application_name] if self.application_name else [],
                    tables=[
                        TableCheck(
                            name="events",
                            rows_warning=self.events_rows_warning,
                            hint=RETENTION_HINT,
                        ),
                        TableCheck(
                            name="event_resources",
                            rows_warning=self.event_resources_rows_warning,
                            hint=RETENTION_HINT,
                        ),
                    ],
                    **shared,
                )
            )
        docket_url = self.docket_url or self.redis_url
        if docket_url:
            tasks = {**PREFECT_SERVICES, **self.tasks}
            same_redis = docket_url == self.redis_url
            probes.append(
                DocketProbe(
                    name=f"{self.name}.docket",
                    url=docket_url,
                    docket=self.docket,
                    tasks={k: v for k, v in tasks.items() if k not in self.skip_tasks},
                    depends_on=[f"{self.name}.redis"] if same_redis else [],
                    **shared,
                )
            )
        return probes
