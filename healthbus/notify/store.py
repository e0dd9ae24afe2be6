"""The notifier's own Redis state: sent markers, open incidents, dead letters.

Every key is under the namespace prefix with its hash tag (`Keys.notify_*`), and each has a
TTL or a cap: markers expire after `SENT_TTL_MS`, the open-incidents hash after
`OPEN_TTL_MS` without a write, the dead-letter stream is capped. Both scripts list every key
they touch in KEYS and loop over their arguments instead of unpacking them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from healthbus.client import HealthBus
from healthbus.connection import TIME_SCRIPT, bus_errors
from healthbus.notify.plan import OpenIncident, Plan
from healthbus.notify.text import Message

__all__ = ["OPEN_TTL_MS", "SENT_TTL_MS", "NotifyStore"]

#: How long a sent marker guards an idempotency key: longer than any entry stays pending.
SENT_TTL_MS: Final = 7 * 86_400_000
#: The open-incidents hash lives this long after its last write (incidents of services
#: silent for 7 days end anyway: the aggregator forgets them with a `left` transition).
OPEN_TTL_MS: Final = 30 * 86_400_000
#: Dead letters keep this much of a message body.
BODY_MAX = 4096

#: Claim a message's keys: per key 1 (free, or already ours: now locked for us until
#: ARGV[2] ms), 0 (already sent), -1 (another notifier is sending it).
_CLAIM: Final = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if not v or v == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 1
  elseif v == 'sent' then
    out[i] = 0
  else
    out[i] = -1
  end
end
return out
"""

#: KEYS[1] the open-incidents hash, KEYS[2..] markers to set `sent`. ARGV: marker ttl,
#: hash ttl, number of upserts, then field/value pairs, then fields to delete.
_COMMIT: Final = """
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
for k = 2, #KEYS do
  redis.call('SET', KEYS[k], 'sent', 'PX', ARGV[1])
end
return 1
"""

_record_decoder = msgspec.json.Decoder(OpenIncident)
_encode = msgspec.json.Encoder().encode


class NotifyStore:
    """The state of one route (consumer group `route`), written only after a send."""

    def __init__(
        self, bus: HealthBus, route: str, *, token: str, lock_ms: int, deadletters_maxlen: int
    ) -> None:
        self.bus = bus
        self.route = route
        self.token = token
        self.lock_ms = lock_ms
        self.maxlen = deadletters_maxlen
        self.open_key = bus.keys.notify_open(route)

    async def now_ms(self) -> int:
        """The Redis server's clock: the one that stamps transitions."""
        with bus_errors(self.bus.url):
            seconds, micros = await self.bus.redis.eval(TIME_SCRIPT, 1, self.open_key)
        return int(seconds) * 1000 + int(micros) // 1000

    async def open_incidents(self, ids: Iterable[str] | None = None) -> dict[str, OpenIncident]:
        """The open incidents (all, or those of `ids` that are open)."""
        with bus_errors(self.bus.url):
            if ids is None:
                rows: Any = await self.bus.redis.hgetall(self.open_key)
                raws = list(rows.values())
            else:
                wanted = list(dict.fromkeys(ids))
                raws = await self.bus.redis.hmget(self.open_key, wanted) if wanted else []
        records = (_decode(raw) for raw in raws if raw)
        return {r.incident: r for r in records if r is not None}

    async def claim(self, keys: Sequence[str]) -> tuple[set[str], set[str]]:
        """Lock `keys` for this notifier; returns those already sent and those another
        notifier holds. Claimed keys are locked until sent or `lock_ms` passes."""
        if not keys:
            return set(), set()
        markers = [self.bus.keys.notify_sent(self.route, key) for key in keys]
        with bus_errors(self.bus.url):
            states = await self.bus.redis.eval(
                _CLAIM, len(markers), *markers, self.token, self.lock_ms
            )
        sent = {key for key, state in zip(keys, states, strict=True) if state == 0}
        busy = {key for key, state in zip(keys, states, strict=True) if state == -1}
        return sent, busy

    async def commit(self, plan: Plan, sent: Sequence[str]) -> None:
        """Mark `sent` and write the plan's incident records, in one script."""
        markers = [self.bus.keys.notify_sent(self.route, key) for key in sent]
        args: list[Any] = [SENT_TTL_MS, OPEN_TTL_MS, len(plan.upserts)]
        for incident, record in plan.upserts.items():
            args.extend((incident, _encode(record)))
        args.extend(plan.closes)
        with bus_errors(self.bus.url):
            await self.bus.redis.eval(_COMMIT, 1 + len(markers), self.open_key, *markers, *args)

    async def dead_letter(
        self, message: Message, destination: str, reason: str, attempts: int
    ) -> None:
        """Keep a message that could not be sent, with why, in a capped stream."""
        fields = {
            "reason": reason[:1024],
            "route": self.route,
            "destination": destination,
            "attempts": str(attempts),
            "title": message.title[:1024],
            "body": message.body[:BODY_MAX],
            "keys": ",".join(message.keys)[:BODY_MAX],
        }
        with bus_errors(self.bus.url):
            await self.bus.redis.xadd(
                self.bus.keys.notify_deadletters,
                fields,  # type: ignore[arg-type]
                maxlen=self.maxlen,
                approximate=True,
            )


def _decode(raw: bytes) -> OpenIncident | None:
    try:
        return _record_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None  # written by an incompatible version: forget it rather than stop
