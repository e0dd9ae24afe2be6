"""The bench's heartbeat is what the Publisher sends (boot id and sequence number included,
which the fold keeps per instance), and the server-side loader writes the same bytes."""

from __future__ import annotations

import redis as sync_redis

from healthbus.bench.payload import N_FIRST, heartbeat, preload, service_name
from healthbus.embedded import RedisServer
from healthbus.keys import Keys
from healthbus.schema import SCHEMA_VERSION, Heartbeat, decode_heartbeat, encode


def test_the_payload_is_what_a_publisher_sends() -> None:
    # As Publisher.publish stamps it (publishers/publisher.py) and its sender encodes it.
    sent = Heartbeat(
        v=SCHEMA_VERSION,
        service=service_name(7),
        interval_s=60,
        ok=True,
        instance="host-a:4242",
        boot="000000000007",
        n=N_FIRST + 3,
        duration_ms=12.5,
        details={"rows": 42},
    )
    assert heartbeat(7, N_FIRST + 3) == encode(sent)
    assert decode_heartbeat(heartbeat(7, N_FIRST + 3)) == sent


def test_preload_writes_each_service_its_next_heartbeat(
    redis_server: RedisServer, namespace: str
) -> None:
    key = Keys(namespace).heartbeats
    with sync_redis.Redis.from_url(redis_server.url) as client:
        try:
            last = preload(client, key, 7, services=3, first=2)
            entries = client.xrange(key)
            assert last == entries[-1][0].decode()
            sent = [fields[b"m"] for _, fields in entries]
            assert sent == [heartbeat(k % 3, N_FIRST + k // 3) for k in range(2, 9)]
        finally:
            client.delete(key)
