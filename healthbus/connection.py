"""The Redis seam: how every part of healthbus connects, and how Redis errors surface.

The URL picks the topology, so no other module knows about it:

    redis://host:6379/0, rediss://…, unix:///path      one server (or a proxy in front of one)
    redis+cluster://host:7000[,host:7001…]              Redis Cluster (seed nodes; db 0 only)
    redis+sentinel://host:26379[,host:26380…]/name[/db] the master Sentinel names `name`

(`rediss+cluster://` and `rediss+sentinel://` use TLS.) A password in the URL is for the
data nodes; sentinels are reached without one. Every key of a namespace shares one hash slot,
so on a cluster each script and transaction runs on the one node owning that slot, and
`TIME_SCRIPT` reads that node's clock, the one that stamps the stream ids. Through Sentinel,
a READONLY reply (the master we talk to was demoted) drops the connection and the next one
asks the sentinels again.

Timeouts are chosen on purpose: a blocking read (`XREAD BLOCK`) waits for at most
`block_ms`, so the socket timeout sits well above it and never trips on an idle stream,
yet a dead server is noticed within seconds. Long-running loops reconnect with `Backoff`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel
import redis.connection
import redis.exceptions
import redis.sentinel
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry as SyncRetry

from healthbus.errors import BusUnavailable, ConfigError
from healthbus.resp import packing_once

__all__ = [
    "CONNECTION_ERRORS",
    "MASTER_CHECK_S",
    "REROUTE_ERRORS",
    "TIME_SCRIPT",
    "AsyncClient",
    "Backoff",
    "SyncClient",
    "Topology",
    "bus_errors",
    "connect",
    "connect_sync",
    "follow_master",
    "follow_master_sync",
    "parse_url",
    "redact_url",
    "write_pool",
]

AsyncClient: TypeAlias = aioredis.Redis | aioredis.RedisCluster
SyncClient: TypeAlias = redis.Redis | redis.RedisCluster

#: Errors that mean "Redis is not there right now" (as opposed to a bug or a bad reply):
#: the server is down, loading, demoted to a replica, or the cluster has no owner for a slot.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
    ConnectionError,
    TimeoutError,
    OSError,
)

#: Replies that mean "this server no longer takes writes for that key": ask again who does.
REROUTE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.AskError,  # MOVED too
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)

#: The server's clock, keyed (KEYS[1]: any key of the namespace) so that a cluster runs it on
#: the node owning the namespace's slot. Reply: [seconds, microseconds].
TIME_SCRIPT = "return redis.call('TIME')"

CONNECT_TIMEOUT_S = 2.0
#: How often long-running loops ask Sentinel whether the master moved (`follow_master`).
MASTER_CHECK_S = 1.0
#: Added to the longest blocking read to get the socket timeout.
READ_MARGIN_S = 5.0
DEFAULT_PORTS = {"cluster": 6379, "sentinel": 26379}


@dataclass(frozen=True, slots=True)
class Topology:
    """What a Redis URL names."""

    kind: Literal["server", "cluster", "sentinel"]
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    #: The master's name, for Sentinel.
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False

    def auth(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password, "ssl": self.ssl}


def parse_url(url: str) -> Topology:
    """Read a Redis URL; a malformed one is a ConfigError saying what a good one looks like."""
    scheme, sep, rest = url.partition("://")
    base, _, variant = scheme.lower().partition("+")
    if (
        not sep
        or base not in ("redis", "rediss", "unix")
        or variant not in ("", "cluster", "sentinel")
    ):
        raise ConfigError(
            f"{redact_url(url)!r} is not a Redis URL: use redis://host:port/db, rediss://…, "
            "unix:///path, redis+cluster://host:port[,host:port] or "
            "redis+sentinel://host:port[,host:port]/master-name[/db]"
        )
    if not variant:
        try:
            redis.connection.parse_url(url)  # type: ignore[no-untyped-call]  # validates it
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from None
        return Topology("server", url)
    if base != "redis" and base != "rediss":
        raise ConfigError(
            f"{scheme}:// is not supported: use redis+{variant}:// or rediss+{variant}://"
        )
    if "?" in rest or "#" in rest:
        raise ConfigError(f"{scheme}:// URLs take no query options: {redact_url(url)!r}")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = tuple(_host_port(h, DEFAULT_PORTS[variant], url) for h in hostlist.split(","))
    parts = [p for p in path.split("/") if p]
    master, db = "", 0
    if variant == "sentinel":
        if not parts or len(parts) > 2:
            raise ConfigError(
                f"{redact_url(url)!r}: name the master, as in redis+sentinel://host:26379/mymaster/0"
            )
        master = unquote(parts[0])
        db = _number(parts[1], "db", url) if len(parts) == 2 else 0
    elif parts != [] and parts != ["0"]:
        raise ConfigError(f"{redact_url(url)!r}: a Redis Cluster has database 0 only")
    return Topology(
        "cluster" if variant == "cluster" else "sentinel",
        url,
        hosts,
        master,
        db,
        username,
        password,
        ssl=base == "rediss",
    )


def _host_port(text: str, default: int, url: str) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:6379
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ConfigError(f"{redact_url(url)!r}: a host is missing")
    return host, _number(port, "port", url) if port else default


def _number(text: str, what: str, url: str) -> int:
    if not text.isdigit():
        raise ConfigError(f"{redact_url(url)!r}: the {what} {text!r} is not a number")
    return int(text)


def connect(url: str, *, block_ms: int = 0, name: str | None = None) -> AsyncClient:
    """An asyncio client for `url` whose timeouts fit reads blocking up to `block_ms`.

    Nothing is sent until the first command: connecting never blocks or fails here.
    """
    target = parse_url(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": block_ms / 1000 + READ_MARGIN_S,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries=2),
        "client_name": name,
        "decode_responses": False,
    }
    if target.kind == "cluster":
        nodes = [aioredis.cluster.ClusterNode(host, port) for host, port in target.hosts]
        return aioredis.RedisCluster(startup_nodes=nodes, **target.auth(), **options)
    if target.kind == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            target.hosts,
            sentinel_kwargs={
                "socket_connect_timeout": CONNECT_TIMEOUT_S,
                "socket_timeout": CONNECT_TIMEOUT_S,
                "ssl": target.ssl,
            },
        )
        client: aioredis.Redis = sentinel.master_for(
            target.master,
            connection_pool_class=_SentinelPool,
            db=target.db,
            **target.auth(),
            **options,
        )
    else:
        client = aioredis.Redis.from_url(url, **options)
    pool = client.connection_pool  # no connection made yet: all of them will pack once
    pool.connection_class = packing_once(pool.connection_class)
    return client


class _SentinelPool(redis.asyncio.sentinel.SentinelConnectionPool):
    """Closing the master's client also closes the connections to the sentinels."""

    async def aclose(self) -> None:
        await super().aclose()
        await self.sentinel_manager.aclose()


def connect_sync(url: str, *, timeout: float, name: str | None = None) -> SyncClient:
    """A sync client that never retries on its own: reconnecting is the caller's loop's job.

    Unlike the others, a cluster client reads the slot map here, so this may block and raise
    one of CONNECTION_ERRORS.
    """
    target = parse_url(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "socket_keepalive": True,
        "retry": SyncRetry(NoBackoff(), 0),
        "client_name": name,
        "decode_responses": False,
    }
    if target.kind == "cluster":
        nodes = [redis.cluster.ClusterNode(h, p) for h, p in target.hosts]  # type: ignore[no-untyped-call]
        return redis.RedisCluster(startup_nodes=nodes, **target.auth(), **options)
    if target.kind == "sentinel":
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            target.hosts,
            sentinel_kwargs={
                "socket_connect_timeout": timeout,
                "socket_timeout": timeout,
                "ssl": target.ssl,
            },
        )
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            target.master, db=target.db, **target.auth(), **options
        )
        return client
    return redis.Redis.from_url(url, **options)


async def follow_master(client: AsyncClient) -> bool:
    """Through Sentinel: ask who the master is now. When it moved, this client's connections
    to the old one close (in-use ones when released) and True says so; False otherwise, and
    always for one server or a cluster.

    A master that was failed over stays writable until Sentinel demotes it, up to ten
    seconds later, and whatever is written to it meanwhile is lost: long-running loops call
    this every MASTER_CHECK_S rather than wait for a READONLY reply.
    """
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool):
        return False
    before = pool.master_address
    try:
        after = await pool.get_master_address()  # type: ignore[no-untyped-call]
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return False  # no sentinel answers: carry on with the master we have
    return before is not None and after != before


def follow_master_sync(client: SyncClient) -> bool:
    """`follow_master` for a sync client."""
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, redis.sentinel.SentinelConnectionPool):
        return False
    before = pool.master_address
    try:
        after = pool.get_master_address()  # type: ignore[no-untyped-call]
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return False
    return before is not None and after != before


def write_pool(client: SyncClient, key: str) -> redis.ConnectionPool:
    """The pool of connections to the server that takes writes for `key`: the server, the
    master Sentinel names (resolved per connection), or the master of `key`'s slot."""
    if isinstance(client, redis.RedisCluster):
        node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
        if node is None or node.redis_connection is None:
            raise redis.exceptions.SlotNotCoveredError(f"no cluster node serves {key!r}")
        pool: redis.ConnectionPool = node.redis_connection.connection_pool
        return pool
    return client.connection_pool


@contextmanager
def bus_errors(url: str | None = None) -> Iterator[None]:
    """Turn connection-level Redis errors into BusUnavailable, with a hint what to check."""
    try:
        yield
    except CONNECTION_ERRORS as exc:
        where = f" at {redact_url(url)}" if url else ""
        raise BusUnavailable(
            f"cannot reach Redis{where}: {exc}; check that it runs and HEALTHBUS_REDIS_URL is right"
        ) from exc


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not colon and user:
        # No password in it, but a lone userinfo is how Redis URLs carry a bare password.
        return f"{scheme}://***@{host}"
    return f"{scheme}://{user}:***@{host}"


class Backoff:
    """Exponential backoff with full jitter for reconnect loops; `reset()` after a success."""

    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0
