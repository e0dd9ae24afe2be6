"""`ConsumerReporter`: health of a message-consuming service, reported on its own cadence.

    reporter = ConsumerReporter("EventPersister", interval=5, capacity=10_000, depth=q.qsize)
    with reporter:                          # starts the reporting thread, says goodbye at the end
        while running:
            batch = q.get_batch()
            with reporter.batch(len(batch)):    # duration, processed or failed, failure streak
                persist(batch)

A daemon thread publishes every `interval` seconds: queue depth and capacity, consecutive
failures, processed and failed counts and the last batch's duration, as a `kind: consumer`
heartbeat, so the status rules can judge a backlog or a failure streak. It stays silent while
the consumer looks stuck (see `publishers.consumer`), so a hung consumer goes stale instead of
looking healthy. Sync code, threads and asyncio use the same object: nothing here awaits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Self

from healthbus.schema import SCHEMA_VERSION, Heartbeat
from publishers.consumer import ConsumerTally
from publishers.default import default_publisher
from publishers.publisher import Publisher, check_names, describe_error

__all__ = ["ConsumerReporter"]

log = logging.getLogger("healthbus.publisher")


class ConsumerReporter:
    """Reports one consumer (one service, one instance) every `interval` seconds.

    `depth` is called from the reporting thread before each report: it must be quick and
    thread-safe (`queue.Queue.qsize`, `asyncio.Queue.qsize`, a sync `LLEN`, or a lambda
    reading a number the consumer keeps). `stall_after` (default twice the interval) is how
    long a batch may run, or work wait untouched, before the reporter goes quiet.
    """

    def __init__(
        self,
        service: str,
        *,
        interval: float = 5.0,
        capacity: int | None = None,
        depth: Callable[[], int | None] | None = None,
        stall_after: float | None = None,
        depends_on: Sequence[str] | None = None,
        instance: str | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        check_names(service, instance, interval)
        self.service = service
        self.interval = float(interval)
        self.depends_on = list(depends_on) if depends_on else None
        self.instance = instance
        self._depth = depth
        self._publisher = publisher
        self._lock = threading.Lock()
        self._tally = ConsumerTally(
            time.monotonic(),
            stall_after_s=2 * self.interval if stall_after is None else stall_after,
            capacity=capacity,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stuck: str | None = None

    # -- what the consumer calls ----------------------------------------------------------

    @contextlib.contextmanager
    def batch(self, size: int = 1) -> Iterator[None]:
        """Measure one batch of `size` messages: processed if the block returns, failed (and
        the exception re-raised) if it raises."""
        with self._lock:
            token = self._tally.begin(time.monotonic())
        try:
            yield
        except Exception as exc:
            error = describe_error(exc)
            with self._lock:
                self._tally.end(token, time.monotonic(), failed=size, error=error)
            raise
        except BaseException:  # cancelled or interrupted: neither processed nor failed
            with self._lock:
                self._tally.end(token, time.monotonic())
            raise
        with self._lock:
            self._tally.end(token, time.monotonic(), processed=size)

    def record(
        self,
        *,
        processed: int = 0,
        failed: int = 0,
        duration: float | None = None,
        error: str | BaseException | None = None,
    ) -> None:
        """Report a batch measured by the consumer itself (`duration` in seconds); one with any
        failure extends the failure streak, one without ends it."""
        text = None if error is None else describe_error(error)
        with self._lock:
            self._tally.record(
                time.monotonic(),
                processed=processed,
                failed=failed,
                duration_s=duration,
                error=text,
            )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the reporting thread (the first report goes out at once)."""
        if self._thread is None:
            self._stop.clear()
            self._publisher = self._publisher or default_publisher()
            self._thread = threading.Thread(
                target=self._run, name=f"healthbus-consumer:{self.service}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, *, goodbye: bool = True) -> None:
        """Stop reporting; with `goodbye`, tell the bus this instance stops on purpose."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=self.interval + 1.0)
        if goodbye and self._publisher is not None:
            self._publisher.publish_heartbeat(
                Heartbeat(
                    v=SCHEMA_VERSION,
                    service=self.service,
                    interval_s=self.interval,
                    ok=True,
                    kind="consumer",
                    instance=self.instance,
                    goodbye=True,
                )
            )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        while True:
            try:
                self.report_now()
            except Exception:  # a bug or a failing depth(): keep reporting, never crash
                log.exception("healthbus consumer reporter of %r failed", self.service)
            if self._stop.wait(self.interval):
                return

    def report_now(self) -> bool:
        """Publish one report unless the consumer looks stuck; True when one was queued."""
        publisher = self._publisher or default_publisher()
        depth = self._read_depth()
        now = time.monotonic()
        with self._lock:
            stuck = self._tally.stuck(now, depth)
            report = self._tally.report(now, depth)
        if stuck is not None and stuck != self._stuck:
            log.warning("consumer %r looks stuck (%s): not reporting", self.service, stuck)
        self._stuck = stuck
        if report is None:
            return False
        publisher.publish(
            self.service,
            interval_s=self.interval,
            kind="consumer",
            duration_ms=report.duration_ms,
            error=report.error,
            details=report.details,
            depends_on=self.depends_on,
            instance=self.instance,
        )
        return True

    def _read_depth(self) -> int | None:
        if self._depth is None:
            return None
        try:
            depth = self._depth()
        except Exception as exc:
            log.debug("depth() of consumer %r failed: %s", self.service, exc)
            return None
        return depth if isinstance(depth, int) and not isinstance(depth, bool) else None

    def __repr__(self) -> str:
        return f"ConsumerReporter({self.service!r}, interval={self.interval:g})"
