"""One heartbeat, sent synchronously: for `healthbus publish`, cron wrappers and scripts."""

from __future__ import annotations

import msgspec
import redis

from healthbus.connection import bus_errors, redact_url
from healthbus.errors import BusUnavailable
from healthbus.keys import Keys
from healthbus.schema import Heartbeat, decode_heartbeat, encode
from publishers._sender import HEARTBEATS_MAXLEN, make_client
from publishers.scrub import clean_error

__all__ = ["publish_once"]


def publish_once(redis_url: str, namespace: str, hb: Heartbeat, timeout: float = 5.0) -> str:
    """XADD one heartbeat now and return its entry id (for `healthbus publish` and scripts).

    Unlike `Publisher.publish`, this waits for Redis: it raises `InvalidMessage` for a
    heartbeat the bus would reject and `BusUnavailable` when Redis cannot take it.
    """
    key = Keys(namespace).heartbeats
    if hb.error is not None:
        hb = msgspec.structs.replace(hb, error=clean_error(hb.error))
    data = encode(hb)
    decode_heartbeat(data)
    client = make_client(redis_url, timeout=timeout, name=None)
    try:
        with bus_errors(redis_url):
            entry_id = client.xadd(key, {"m": data}, maxlen=HEARTBEATS_MAXLEN, approximate=True)
    except redis.RedisError as exc:
        raise BusUnavailable(
            f"Redis at {redact_url(redis_url)} refused the heartbeat: {exc}"
        ) from exc
    finally:
        client.close()
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
