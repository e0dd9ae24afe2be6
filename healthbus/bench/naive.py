"""The comparison for fan-out: an SSE broadcast written the obvious way with sse-starlette.

One reader tails the updates stream and puts each decoded entry on every client's
(unbounded) `asyncio.Queue`; each client's generator encodes it to JSON on its own and
sse-starlette frames it. This is what the hub's levers (one encoding per event for all
clients, bounded queues, `gc.freeze()`) are measured against.
`python -m healthbus.bench.naive REDIS_URL UPDATES_KEY PORT`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

__all__ = ["create_app"]


def create_app(redis_url: str, updates_key: str) -> Starlette:
    queues: set[asyncio.Queue[dict[str, Any]]] = set()

    async def reader() -> None:
        client = aioredis.Redis.from_url(redis_url)
        last = "$"
        while True:
            reply: Any = await client.xread({updates_key: last}, block=1000)
            for entry_id, fields in reply[0][1] if reply else ():
                last = entry_id.decode()
                update = json.loads(fields[b"m"])
                for queue in queues:
                    queue.put_nowait(update)

    async def stream(request: Request) -> EventSourceResponse:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        queues.add(queue)

        async def events() -> AsyncIterator[dict[str, str]]:
            try:
                while True:
                    update = await queue.get()
                    yield {"event": "update", "data": json.dumps(update)}
            finally:
                queues.discard(queue)

        return EventSourceResponse(events(), ping=15)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(reader())
        yield
        task.cancel()

    return Starlette(routes=[Route("/api/health/stream", stream)], lifespan=lifespan)


if __name__ == "__main__":
    url, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    uvicorn.run(create_app(url, key), host="127.0.0.1", port=port, log_level="warning")
