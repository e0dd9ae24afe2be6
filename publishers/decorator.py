"""`@heartbeat` for periodic functions, and the same object as a context manager for loops.

    @heartbeat(service="schedule_deployments", interval=60)
    async def schedule_deployments(perpetual: Perpetual = Perpetual(...)) -> dict[str, int]:
        return {"runs_scheduled": 42}          # a returned mapping becomes `details`

    tick = heartbeat(service="sync_loop", interval=5)
    while True:
        with tick as it:                       # one heartbeat per pass
            it.set(rows=copy_rows())

Each run publishes one heartbeat with its duration; a run that raises publishes `ok: false`
with "Type: message" and the exception propagates unchanged. The wrapper keeps the function's
name, docstring and signature (`functools.wraps`), so schedulers that inject arguments by
inspecting parameters (docket's `Perpetual`, `Depends`) see the original. Publishing only
appends to the publisher's buffer: it never waits on Redis and never raises into the caller.
A run ended by cancellation, `KeyboardInterrupt` or `SystemExit` did not finish and reports
nothing.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar, cast

from healthbus.errors import ConfigError
from healthbus.schema import DetailValue, SelfStatus
from publishers.default import default_publisher
from publishers.details import clean_details
from publishers.publisher import Publisher, check_names

__all__ = ["Beat", "Iteration", "current_iteration", "heartbeat"]

log = logging.getLogger("healthbus.publisher")

F = TypeVar("F", bound=Callable[..., Any])

_current: ContextVar[Iteration | None] = ContextVar("healthbus_iteration", default=None)


class Iteration:
    """One run being measured: what it reports when it ends.

    `details` (and `set()`) add to the heartbeat's details; `status` and `hint` are sent as
    the run's own assessment; `fail()` reports the run as failed without raising.
    """

    __slots__ = ("_start", "_token", "beat", "details", "error", "hint", "publisher", "status")

    def __init__(self, beat: Beat | None = None, publisher: Publisher | None = None) -> None:
        self.beat = beat
        self.publisher = publisher
        self.details: dict[str, Any] = {}
        self.status: SelfStatus | None = None
        self.hint: str | None = None
        self.error: str | BaseException | None = None
        self._token: Token[Iteration | None] | None = None
        self._start = time.perf_counter()

    def set(self, **values: DetailValue) -> None:
        """Add details: `it.set(rows=120, source="s3")`."""
        self.details.update(values)

    def fail(self, error: str | BaseException) -> None:
        """Report this run as failed (`ok: false`, `error`) although it returns normally."""
        self.error = error

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self._start) * 1000.0

    def _finish(self, raised: BaseException | None, returned: object = None) -> None:
        beat, publisher = self.beat, self.publisher
        if beat is None or publisher is None:
            return
        error = raised if raised is not None else self.error
        try:
            publisher.publish(
                beat.service,
                interval_s=beat.interval,
                ok=error is None,
                kind=beat.kind,
                status=self.status,
                duration_ms=self.elapsed_ms,
                error=error,
                details=clean_details(
                    self.details, returned if isinstance(returned, Mapping) else None
                ),
                hint=self.hint,
                depends_on=beat.depends_on,
                instance=beat.instance,
            )
        except Exception:  # never let reporting break the host; names were checked up front
            log.exception("healthbus could not publish the heartbeat of %r", beat.service)


def current_iteration() -> Iteration:
    """The run in progress in this thread or task, to add details from inside the function.

    Outside any run (the function called undecorated, say in its own unit tests) this is a
    detached `Iteration` whose details go nowhere, so the function works either way.
    """
    return _current.get() or Iteration()


class Beat:
    """`heartbeat(...)`: report each run of a function, or of a `with` block, as one heartbeat.

    `interval` is the cadence in seconds you promise; `instance` names this replica when the
    publisher's identity (`host:pid`, or `HEALTHBUS_INSTANCE`) is not the one you want;
    `publisher` defaults to the process-wide one configured from the environment. A bad name
    or interval raises `InvalidMessage` here, at decoration, not in the middle of a run.
    """

    __slots__ = ("depends_on", "instance", "interval", "kind", "publisher", "service")

    def __init__(
        self,
        service: str,
        *,
        interval: float,
        kind: str = "perpetual",
        depends_on: Sequence[str] | None = None,
        instance: str | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        check_names(service, instance, interval)
        for name in depends_on or ():
            check_names(name, None, interval)
        self.service = service
        self.interval = float(interval)
        self.kind = kind
        self.depends_on = list(depends_on) if depends_on else None
        self.instance = instance
        #: None: the process-wide default publisher, looked up when a run starts.
        self.publisher = publisher

    def __enter__(self) -> Iteration:
        it = Iteration(self, self.publisher or default_publisher())
        it._token = _current.set(it)
        return it

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        it = _current.get()
        if it is not None and it.beat is self:
            self._end(it, exc)

    @staticmethod
    def _end(it: Iteration, exc: BaseException | None, returned: object = None) -> None:
        if it._token is not None:
            try:
                _current.reset(it._token)
            except ValueError:  # exited in another context than it was entered in
                _current.set(None)
        if exc is None or isinstance(exc, Exception):
            it._finish(exc, returned)

    def __call__(self, fn: F) -> F:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigError(
                f"@heartbeat cannot measure generator {fn.__qualname__}: decorate the function "
                f"that consumes it, or use `with heartbeat(...)` around each item"
            )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                it = self.__enter__()
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    self._end(it, exc)
                    raise
                self._end(it, None, result)
                return result

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            it = self.__enter__()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._end(it, exc)
                raise
            self._end(it, None, result)
            return result

        return cast(F, run)

    def __repr__(self) -> str:
        return f"heartbeat(service={self.service!r}, interval={self.interval:g})"


#: `@heartbeat(service=…, interval=…)`, `with heartbeat(…) as it:`: see `Beat`.
heartbeat = Beat
