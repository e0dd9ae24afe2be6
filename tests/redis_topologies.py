"""Real Redis topologies on loopback for the HA tests: a 3-master Cluster and a Sentinel group.

Both are built from `healthbus.embedded.RedisServer` processes on free ports. The cluster is
created by `redis-cli --cluster create`, as an operator would; without redis-cli the tests that
need it skip and say why. Sentinels run from the same server binary (`--sentinel`), which needs
a config file it can rewrite, so they get one in a private directory.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from redis import Redis

from healthbus.config import Config
from healthbus.connection import AsyncClient, connect
from healthbus.embedded import RedisServer, free_port, port_answers
from tests.support import stop_process, wait_until_sync

__all__ = ["LocalCluster", "LocalSentinel", "Topology", "config", "redis", "require_redis_cli"]

MASTER_NAME = "mymaster"


def require_redis_cli() -> str:
    """The redis-cli binary, or skip: `--cluster create` is how an operator builds a cluster."""
    found = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if not found:
        pytest.skip(
            "redis-cli is not on PATH (Debian package redis-tools): "
            "it is needed to create the local Redis Cluster"
        )
    return found


def _cluster_args() -> tuple[str, ...]:
    # The bus port is not port + 10000: free ports may be above 55535.
    return ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000", "--cluster-port", str(free_port()))  # fmt: skip


class Topology:
    """A group of Redis processes, started by `with` and stopped however the block ends."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LocalCluster(Topology):
    """`masters` cluster-enabled servers joined by `redis-cli --cluster create`, no replicas."""

    def __init__(self, masters: int = 3) -> None:
        self.cli = require_redis_cli()
        self.nodes = [RedisServer(extra_args=_cluster_args()) for _ in range(masters)]

    @property
    def url(self) -> str:
        """Two seed nodes; the client discovers the rest."""
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])
        return f"redis+cluster://{seeds}"

    def start(self) -> Self:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        result = subprocess.run(
            [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {result.stdout[-1000:]}")
        wait_until_sync(self._ready, timeout=30, interval=0.1)
        return self

    def _ready(self) -> bool:
        for node in self.nodes:
            with Redis(port=node.port) as client:
                info = client.execute_command("CLUSTER INFO")
            if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != len(self.nodes):
                return False
        return True

    def node_of(self, key: str) -> RedisServer:
        """The master that holds `key`'s slot."""
        with Redis(port=self.nodes[0].port) as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no node serves slot {slot}")

    def move_slot(self, key: str, to: RedisServer) -> None:
        """Reshard `key`'s slot onto `to` while clients run, the way `redis-cli --cluster
        reshard` does: IMPORTING/MIGRATING, MIGRATE the keys, then SETSLOT NODE everywhere."""
        source = self.node_of(key)
        if source is to:
            return
        ids = {}
        for node in self.nodes:
            with Redis(port=node.port) as client:
                ids[node.port] = client.execute_command("CLUSTER MYID").decode()
        with Redis(port=source.port) as src, Redis(port=to.port) as dst:
            slot = int(src.execute_command("CLUSTER KEYSLOT", key))
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source.port])
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[to.port])
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
        for node in [to, source, *[n for n in self.nodes if n not in (to, source)]]:
            with Redis(port=node.port) as client:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[to.port])

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class SentinelProcess:
    """One sentinel watching `master_port` (quorum 1: it alone may fail over)."""

    def __init__(self, binary: str, master_port: int) -> None:
        self.binary = binary
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="healthbus-sentinel-")
        self.conf = Path(self._dir.name, "sentinel.conf")
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self._dir.name}\n"
            f"logfile {self._dir.name}/sentinel.log\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, str(self.conf), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_sync(lambda: port_answers("127.0.0.1", self.port), timeout=10)

    def close(self) -> None:
        if self.process:
            stop_process(self.process)
        with contextlib.suppress(OSError):
            self._dir.cleanup()


class LocalSentinel(Topology):
    """A master, `replicas` replicas of it, and `sentinels` sentinels on loopback."""

    def __init__(self, replicas: int = 1, sentinels: int = 1) -> None:
        self.servers = [RedisServer()]
        master = self.servers[0]
        for _ in range(replicas):
            args = ("--replicaof", "127.0.0.1", str(master.port))
            self.servers.append(RedisServer(binary=master.binary, extra_args=args))
        self.sentinels = [SentinelProcess(master.binary, master.port) for _ in range(sentinels)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def master_port(self) -> int:
        """The master's port as the sentinel says it."""
        with Redis(port=self.sentinels[0].port) as client:
            _host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def start(self) -> Self:
        for server in self.servers:
            server.start()
        wait_until_sync(self._replicas_synced, timeout=30, interval=0.1)
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until_sync(self._sentinels_see_replicas, timeout=30, interval=0.1)
        return self

    def _replicas_synced(self) -> bool:
        for replica in self.servers[1:]:
            with Redis(port=replica.port) as client:
                if client.info("replication").get("master_link_status") != "up":
                    return False
        return True

    def _sentinels_see_replicas(self) -> bool:
        for sentinel in self.sentinels:
            with Redis(port=sentinel.port) as client:
                replicas = client.sentinel_slaves(MASTER_NAME)
            good = [r for r in replicas if r["master-link-status"] == "ok" and not r["is_sdown"]]
            if len(good) != len(self.servers) - 1:
                return False
        return True

    def failover(self, timeout: float = 30) -> int:
        """`SENTINEL FAILOVER`: promote a replica; returns the new master's port once it
        accepts writes and the old one replicates from it."""
        old = self.master_port()
        with Redis(port=self.sentinels[0].port) as client:
            client.execute_command("SENTINEL FAILOVER", MASTER_NAME)

        def promoted() -> int | None:
            port = self.master_port()
            if port == old:
                return None
            with Redis(port=port) as client:
                role = client.info("replication")["role"]
            return port if role == "master" else None

        return wait_until_sync(promoted, timeout=timeout, interval=0.1)

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers:
            server.close()


# Fixtures for a test module that defines a `topology` fixture: its tests, and the tests it
# imports unchanged from other modules, then run against that topology.


@pytest.fixture
def config(topology: Topology, namespace: str) -> Config:
    return Config(redis_url=topology.url, namespace=namespace)


@pytest.fixture
async def redis(config: Config) -> AsyncIterator[AsyncClient]:
    assert config.redis_url
    client = connect(config.redis_url)
    yield client
    await client.aclose()
