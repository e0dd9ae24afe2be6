"""The background half of `Publisher`: one daemon thread that owns all Redis I/O.

Callers only append `Heartbeat`s to a bounded deque. This thread takes them in batches,
scrubs and encodes them (so the caller never pays for it), and sends each batch as one
non-transactional pipeline of `XADD … MAXLEN ~ 1000000 * m <json>`. While Redis is slow or
gone it retries the batch in hand with `Backoff`, the deque keeps dropping its oldest entries,
and the batch in hand (older still) is dropped first once the deque is full: memory stays
bounded by `buffer_size + batch_size`. No exception ever leaves the thread.

Delivery is at-least-once per batch: a batch cut off mid-flight (a timeout after Redis applied
some of it) is sent again, and duplicates carry the same `boot` and `n`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Final

import msgspec
import redis

from healthbus.connection import (
    CONNECTION_ERRORS,
    MASTER_CHECK_S,
    REROUTE_ERRORS,
    Backoff,
    SyncClient,
    connect_sync,
    follow_master_sync,
    parse_url,
    write_pool,
)
from healthbus.errors import InvalidMessage
from healthbus.schema import MESSAGE_MAX_BYTES, Heartbeat, decode_heartbeat, encode
from publishers.scrub import clean_error, scrub

__all__ = ["HEARTBEATS_MAXLEN", "SOCKET_TIMEOUT_S", "Sender", "make_client"]

log = logging.getLogger("healthbus.publisher")

#: The stream's guard cap; the aggregator trims behind its cursor long before this.
HEARTBEATS_MAXLEN: Final = 1_000_000
#: Connect and read timeout: a frozen Redis (SIGSTOP) costs one attempt this long, never more.
SOCKET_TIMEOUT_S: Final = 2.0
#: Services we have already warned about, bounded so a name-per-call bug cannot grow it.
_WARN_LIMIT: Final = 1000


def make_client(
    url: str, *, timeout: float = SOCKET_TIMEOUT_S, name: str | None = None
) -> SyncClient:
    """A sync client that never retries on its own: reconnecting is the caller's loop's job."""
    return connect_sync(url, timeout=timeout, name=name)


class Sender:
    """Drains `buffer` into the heartbeats stream `key` from its own daemon thread.

    The client is made in the thread, on first use and again after a failed send: a cluster
    client reads the slot map when made, and a failover moves the key to another server.
    Counters are written by this thread only and read by anyone (int reads are atomic).
    """

    def __init__(
        self,
        url: str,
        key: str,
        buffer: deque[Heartbeat],
        *,
        name: str | None,
        batch_size: int,
        flush_interval_s: float,
    ) -> None:
        parse_url(url)  # a bad URL is the caller's to hear about, now
        self.url = url
        self.name = name
        self.client: SyncClient | None = None
        self._follow_at = 0.0
        self.key = key
        self.buffer = buffer
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        #: Set by callers when a full batch waits, so a burst goes out without delay.
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.deadline = float("inf")
        self.sent = 0
        self.dropped = 0
        self.invalid = 0
        self.failed_batches = 0
        self.in_flight = 0
        self.connected = False
        self.last_error: str | None = None
        self._warned: set[str] = set()
        self._head = _xadd_head(key)
        self.thread = threading.Thread(target=self._run, name="healthbus-publisher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float) -> bool:
        """Send what is buffered within `timeout`, then stop; True when the thread ended."""
        self.deadline = time.monotonic() + max(0.0, timeout)
        self.stopping.set()
        self.wake.set()
        if self.thread.ident is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout + 0.1)
        ended = not self.thread.is_alive()
        if ended:
            self._drop_client()
        return ended

    def _drop_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # pragma: no cover - a bug; never take the host down
            log.exception("healthbus publisher thread stopped by a bug")
            self.last_error = f"publisher thread stopped: {type(exc).__name__}: {exc}"

    def _loop(self) -> None:
        backoff = Backoff(base=0.05, cap=2.0)
        held: list[bytes] = []
        while True:
            stopping = self.stopping.is_set()
            if stopping and time.monotonic() >= self.deadline:
                self.dropped += len(held)
                self.in_flight = 0
                return
            if not held:
                held = self._take()
                self.in_flight = len(held)
            if not held:
                if stopping:
                    return
                self.wake.wait(self.flush_interval_s)
                self.wake.clear()
                continue
            if self._send(held):
                held = []
                self.in_flight = 0
                backoff.reset()
                continue
            delay = backoff.next_delay()
            if stopping:
                time.sleep(max(0.0, min(delay, self.deadline - time.monotonic())))
            else:
                self.stopping.wait(delay)
            if self.buffer.maxlen is not None and len(self.buffer) >= self.buffer.maxlen:
                # The deque already drops its oldest; what we hold is older still.
                self.dropped += len(held)
                held = []
                self.in_flight = 0

    def _take(self) -> list[bytes]:
        out: list[bytes] = []
        pop = self.buffer.popleft
        for _ in range(min(len(self.buffer), self.batch_size)):
            try:
                hb = pop()
            except IndexError:
                break
            data = self._encode(hb)
            if data is not None:
                out.append(data)
        return out

    def _encode(self, hb: Heartbeat) -> bytes | None:
        """The JSON to send, or None for what must not be sent (unencodable or oversize).

        A heartbeat that encodes but fails validation is still sent: the aggregator
        dead-letters it and marks the service `error` with the reason, which is how an
        operator learns that this publisher is broken. It is also counted and logged here.
        """
        try:
            if hb.error is not None:
                hb = msgspec.structs.replace(hb, error=clean_error(hb.error))
            data = encode(hb)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            self._reject(hb.service, f"cannot encode heartbeat: {exc}")
            return None
        if len(data) > MESSAGE_MAX_BYTES:
            self._reject(hb.service, f"heartbeat is {len(data)} bytes, over {MESSAGE_MAX_BYTES}")
            return None
        try:
            decode_heartbeat(data)
        except InvalidMessage as exc:
            self._reject(hb.service, f"{exc.reason} (sent anyway; the bus will flag it)")
        return data

    def _reject(self, service: object, reason: str) -> None:
        self.invalid += 1
        self.last_error = f"{service}: {reason}"
        name = str(service)
        if name not in self._warned and len(self._warned) < _WARN_LIMIT:
            self._warned.add(name)
            log.warning("healthbus heartbeat of %r is invalid: %s", name, reason)

    def _send(self, batch: list[bytes]) -> bool:
        """One pipelined round trip; False when the batch should be retried after a pause.

        The XADDs are packed here and written on a pooled redis-py connection (replies parsed
        by hiredis): about a quarter of the CPU of redis-py's Pipeline per entry, which is CPU
        this thread would otherwise take from the host service under the GIL.
        """
        errors: list[redis.ResponseError] = []
        reroute: BaseException | None = None
        try:
            if self.client is None:
                self.client = make_client(self.url, name=self.name)
            elif time.monotonic() >= self._follow_at:
                # A failed-over master still takes writes, then loses them: follow Sentinel.
                self._follow_at = time.monotonic() + MASTER_CHECK_S
                follow_master_sync(self.client)
            pool = write_pool(self.client, self.key)
            conn = pool.get_connection()
            try:
                payload = b"".join([self._head + _bulk(m) for m in batch])
                conn.send_packed_command([payload])  # type: ignore[no-untyped-call]
                for _ in batch:
                    try:
                        conn.read_response()
                    except REROUTE_ERRORS as exc:  # a failover or resharding moved the key
                        reroute = reroute or exc
                    except redis.ResponseError as exc:
                        errors.append(exc)
            except BaseException:
                conn.disconnect()  # type: ignore[no-untyped-call]  # replies may be half read
                raise
            finally:
                pool.release(conn)
        except CONNECTION_ERRORS as exc:
            self._failed(exc)
            return False
        except redis.RedisError as exc:
            self._failed(exc)
            return False
        if reroute is not None:
            self._failed(reroute)  # the whole batch again, to wherever the key lives now
            return False
        self.connected = True
        self.sent += len(batch) - len(errors)
        if errors:
            # A reply error (WRONGTYPE, OOM, …) will not heal by resending the same entries.
            self.failed_batches += 1
            self.dropped += len(errors)
            self.last_error = scrub(f"Redis refused {len(errors)} heartbeat(s): {errors[0]}")
        return True

    def _failed(self, exc: BaseException) -> None:
        if self.connected or self.last_error is None:
            log.warning("healthbus publisher lost Redis: %s", scrub(str(exc)))
        self.failed_batches += 1
        self.connected = False
        self.last_error = scrub(f"{type(exc).__name__}: {exc}")
        self._drop_client()  # the next attempt asks again where the key lives


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _xadd_head(key: str) -> bytes:
    """RESP for `XADD <key> MAXLEN ~ <cap> * m`, awaiting the value as its last argument."""
    parts = [key.encode(), b"MAXLEN", b"~", str(HEARTBEATS_MAXLEN).encode(), b"*", b"m"]
    return b"*8\r\n$4\r\nXADD\r\n" + b"".join(_bulk(p) for p in parts)
