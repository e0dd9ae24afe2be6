"""Slow, dead and many SSE clients of a `healthbus web` process.

- A reader that stopped reading (it took the headers and the snapshot, then nothing) and a
  socket that is never read at all must be dropped within the send timeout of their buffers
  filling, while a fast client's latency stays what it was without them (measured side by
  side: a control phase, then the same load with the stuck ones), and the server's memory
  stays bounded.
- SIGTERM with 1 000 open SSE streams: the server ends within its graceful-shutdown period
  (uvicorn's `timeout_graceful_shutdown`) with exit code 0.
"""

from __future__ import annotations

import signal
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

from healthbus.config import Config
from healthbus.web.app import GRACEFUL_SHUTDOWN_S
from tests.faults.conftest import Figures, Processes, open_fds, rss_kib
from tests.support import wait_until
from tests.webserver import FakeBus, SSEReader, open_stream, view

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.fault]

SEND_TIMEOUT_S = 1.0
COMMITS_PER_S = 20
BLOB = "x" * 1000  # 50 services a commit: about 60 KB an update, 1.2 MB/s to each client
REQUEST = b"GET /api/health/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"


def stuck_socket(port: int, read_first: bool) -> socket.socket:
    """A client with a 4 KiB receive buffer that reads the headers and the snapshot
    (`read_first`) or nothing at all, then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(REQUEST)
    if read_first:
        sock.settimeout(10)
        got = b""
        while b"event: snapshot" not in got:
            got += sock.recv(4096)
    return sock


def send_queue(server_port: int, client_port: int) -> int | None:
    """Bytes queued in the kernel on the server's side of one connection (/proc/net/tcp),
    or None once that connection is gone."""
    local, remote = f":{server_port:04X}", f":{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(local) and fields[2].endswith(remote) and fields[3] == "01":
            return int(fields[4].split(":")[0], 16)
    return None


async def sse_clients(client: httpx.AsyncClient, url: str) -> int:
    doc = (await client.get(url + "/api/health", params={"limit": 0})).json()
    return int(doc["server"]["sse_clients"])


async def timed_commits(bus: FakeBus, fast: SSEReader, n: int, tick: Any = None) -> list[float]:
    """`n` commits at COMMITS_PER_S; the fast client's delay from each commit to its event."""
    delays: list[float] = []
    start = time.monotonic()
    for k in range(n):
        batch = [view(f"s{i}", details={"blob": BLOB, "k": k}) for i in range(50)]
        entry_id = await bus.commit(batch)
        committed = time.monotonic()
        while (await fast.next(timeout=10)).id != f"{bus.gen}-{entry_id}":
            pass
        delays.append(time.monotonic() - committed)
        if tick is not None:
            await tick()
        await anyio.sleep(max(0.0, start + (k + 1) / COMMITS_PER_S - time.monotonic()))
    return delays


async def test_stuck_readers_are_dropped_and_do_not_slow_the_others(
    redis: aioredis.Redis, config: Config, processes: Processes, figures: Figures
) -> None:
    bus = FakeBus(redis, config.keys)
    await bus.commit([view("a")])
    url, pid = processes.web(
        env={
            "HEALTHBUS_SSE_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
            "HEALTHBUS_SSE_QUEUE_SIZE": "100000",  # so the send timeout, not the queue, drops
        }
    )
    port = int(url.rsplit(":", 1)[1])
    async with httpx.AsyncClient(timeout=10) as client, open_stream(client, url) as fast:
        await fast.next()
        control = await timed_commits(bus, fast, 40)
        rss_before = rss_kib(pid)

        stopped = stuck_socket(port, read_first=True)
        never = stuck_socket(port, read_first=False)
        ports = {"stopped": stopped.getsockname()[1], "never": never.getsockname()[1]}
        queued: dict[str, list[tuple[float, int]]] = {name: [] for name in ports}
        gone: dict[str, float] = {}
        rss_peak = rss_before

        async def watch() -> None:
            nonlocal rss_peak
            now = time.monotonic()
            rss_peak = max(rss_peak, rss_kib(pid))
            for name, client_port in ports.items():
                q = send_queue(port, client_port)
                if q is None:
                    gone.setdefault(name, now)
                elif name not in gone:
                    queued[name].append((now, q))

        try:
            await wait_until(lambda: _clients_are(client, url, 3))
            opened = time.monotonic()
            stuck: list[float] = []
            for _ in range(30):  # bounded: at most 30 s of load
                stuck += await timed_commits(bus, fast, COMMITS_PER_S, watch)
                if len(gone) == len(ports):
                    break
            await wait_until(lambda: _clients_are(client, url, 1), timeout=5)
        finally:
            stopped.close()
            never.close()
        rss_after = rss_kib(pid)
        after = await timed_commits(bus, fast, 20)

    assert set(gone) == set(ports), f"not dropped: {set(ports) - set(gone)}"
    assert "ERROR" not in processes.log("web"), processes.log("web")[-2000:]
    reaped_s = {}
    for name, samples in queued.items():
        most = max(q for _, q in samples)
        full_at = next(t for t, q in samples if q >= 0.9 * most)
        reaped_s[name] = round(gone[name] - full_at, 2)
        # Its kernel buffers full, uvicorn's own (64 KiB) fills within a commit or two; then
        # each send may wait SEND_TIMEOUT_S. The watcher samples once a commit (50 ms).
        assert reaped_s[name] <= SEND_TIMEOUT_S + 1.5, (name, reaped_s[name])
    ratio = statistics.median(stuck) / statistics.median(control)
    assert ratio < 5, (statistics.median(stuck), statistics.median(control))
    assert rss_peak - rss_before < 100_000, "the server kept the stuck clients' backlog"
    figures.update(
        send_timeout_s=SEND_TIMEOUT_S,
        update_kib=round(len(BLOB) * 50 / 1024),
        commits_per_s=COMMITS_PER_S,
        reaped_after_buffers_full_s=reaped_s,
        reaped_after_connect_s={k: round(v - opened, 2) for k, v in gone.items()},
        fast_p50_ms_control=round(statistics.median(control) * 1000, 2),
        fast_p50_ms_with_stuck=round(statistics.median(stuck) * 1000, 2),
        fast_p50_ms_after=round(statistics.median(after) * 1000, 2),
        fast_p50_ratio=round(ratio, 2),
        server_rss_mib_before=round(rss_before / 1024, 1),
        server_rss_mib_peak=round(rss_peak / 1024, 1),
        server_rss_mib_after=round(rss_after / 1024, 1),
    )


async def _clients_are(client: httpx.AsyncClient, url: str, n: int) -> bool:
    return await sse_clients(client, url) == n


STREAMS = 1000


async def test_sigterm_with_a_thousand_open_streams_exits_in_time(
    redis: aioredis.Redis, config: Config, processes: Processes, figures: Figures
) -> None:
    bus = FakeBus(redis, config.keys)
    await bus.commit([view(f"s{i}") for i in range(20)])
    url, pid = processes.web()
    port = int(url.rsplit(":", 1)[1])
    web = processes.started[-1]
    socks: list[socket.socket] = []
    try:
        for _ in range(STREAMS):
            sock = socket.socket()
            sock.connect(("127.0.0.1", port))
            sock.sendall(REQUEST)
            socks.append(sock)
        async with httpx.AsyncClient(timeout=10) as client:
            await wait_until(lambda: _clients_are(client, url, STREAMS), timeout=60, interval=0.2)
        fds = open_fds(pid)
        rss = rss_kib(pid)
        started = time.monotonic()
        web.send_signal(signal.SIGTERM)
        code = await anyio.to_thread.run_sync(lambda: web.wait(timeout=30))
        took = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert code == 0, processes.log("web")[-2000:]
    assert "ERROR" not in processes.log("web"), processes.log("web")[-2000:]
    assert took <= GRACEFUL_SHUTDOWN_S + 2.0, f"took {took:.2f} s"
    figures.update(
        streams=STREAMS,
        server_fds=fds,
        server_rss_mib=round(rss / 1024, 1),
        grace_s=GRACEFUL_SHUTDOWN_S,
        exit_s=round(took, 2),
        exit_code=code,
    )
