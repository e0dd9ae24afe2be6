"""fan-out: many SSE clients on one web worker process, at 2 and 10 events a second.

The clients (`healthbus.bench.sseclient`, a process of their own) connect first; then probe
services fail one after another at the given rate through the real aggregator (each once,
so none is ever flapping), and every client should receive each transition. Figures: the
share delivered within the run (plus a short grace), the delay from heartbeat to client
(p99), and the worker's RSS; for `healthbus web` and for the obvious sse-starlette broadcast
(`healthbus.bench.naive`) side by side. For scale, the floor: one event's bytes written to
and read from as many plain loopback sockets by one process, with no server in between.
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import time

import msgspec
import redis

from healthbus.bench.context import Bench, rss_bytes, spawn
from healthbus.bench.report import Figure, percentile
from healthbus.bench.sseclient import Received
from healthbus.bench.stack import Stack, running_stack

__all__ = ["run"]

TARGET_P99_MS = 100.0
TARGET_DELIVERED = 1.0
GRACE_S = 3.0
PROBE = "fanout-probe-{:04d}"


def run(bench: Bench) -> list[Figure]:
    clients = bench.size(500, 5000, least=5)
    seconds = bench.seconds(3, 20, least=1)
    grace = bench.seconds(2, GRACE_S)
    bench.progress(f"fan-out: the floor, one event to {clients:,} plain loopback sockets")
    floor = _socket_floor(clients)
    figures = [
        Figure(
            name=f"fan-out: floor, one event to {clients:,} sockets",
            value=floor,
            unit="ms",
            note="write + read, median of 5 rounds, no server",
        )
    ]
    for web in ("healthbus", "naive"):
        for rate in (2, 10):
            bench.progress(f"fan-out: {web}, {clients:,} clients, {rate} events/s")
            figures += _measure(bench, web, clients, rate, seconds, grace)
    return figures


def _measure(
    bench: Bench, web: str, clients: int, rate: int, seconds: float, grace: float
) -> list[Figure]:
    with (
        running_stack(bench, "fanout", web=web) as stack,
        redis.Redis.from_url(bench.redis_url) as client,
    ):
        events = int(seconds * rate)
        for i in range(events):  # the probes appear, healthy, before anyone listens
            _report(client, stack, PROBE.format(i), ok=True)
        time.sleep(1.0)
        url = f"{stack.base_url}/api/health/stream"
        with spawn(["-m", "healthbus.bench.sseclient", url, str(clients)], pipes=True) as sse:
            if sse.line().strip() != b"ready":
                sse.check("while connecting")
            sent = 0
            start = time.monotonic()
            for i in range(events):
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
                _report(client, stack, PROBE.format(i), ok=False)
                sent += 1
            time.sleep(grace)
            rss = rss_bytes(stack.web.pid)
            received = msgspec.json.decode(sse.finish(), type=Received)
    delivered = sum(min(n, sent) for n in received.per_client) / (clients * sent)
    label = f"fan-out: {web}, {clients:,} clients, {rate}/s"
    p50, p99 = percentile(received.delays_ms, 50), percentile(received.delays_ms, 99)
    note = f"{sent} events; {received.connected} of {clients} still connected"
    median = Figure(name=f"{label}: p50", value=p50, unit="ms")
    memory = Figure(name=f"{label}: worker RSS", value=rss / 2**20, unit="MiB")
    if web != "healthbus" or rate != 2:
        return [
            Figure(name=f"{label}: delivered", value=delivered, unit="ratio", note=note),
            median,
            Figure(name=f"{label}: p99", value=p99, unit="ms"),
            memory,
        ]
    return [
        Figure.check(f"{label}: delivered", delivered, "ratio", ">=", TARGET_DELIVERED, note),
        median,
        Figure.check(f"{label}: p99", p99, "ms", "<=", TARGET_P99_MS),
        memory,
    ]


def _socket_floor(count: int, rounds: int = 5) -> float:
    """Milliseconds to write one event-sized chunk to `count` loopback TCP sockets and read
    it from their peers: the kernel's share of a fan-out, with no Python server in between."""
    payload = b"event: transition\ndata: " + b"x" * 650 + b"\n\n"
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as listener:
        port = listener.getsockname()[1]
        pairs: list[tuple[socket.socket, socket.socket]] = []
        poller = select.epoll()
        try:
            for _ in range(count):
                reader = socket.create_connection(("127.0.0.1", port))
                writer, _ = listener.accept()
                reader.setblocking(False)
                poller.register(reader.fileno(), select.EPOLLIN)
                pairs.append((writer, reader))
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                for writer, _ in pairs:
                    writer.send(payload)
                pending = count
                deadline = time.monotonic() + 10
                while pending and time.monotonic() < deadline:
                    for fd, _ in poller.poll(1):
                        pending -= bool(os.read(fd, 65536))
                times.append((time.perf_counter() - start) * 1000)
        finally:
            poller.close()
            for writer, reader in pairs:
                writer.close()
                reader.close()
    return statistics.median(times)


def _report(client: redis.Redis, stack: Stack, service: str, *, ok: bool) -> None:
    hb = msgspec.json.encode({"v": 1, "service": service, "interval_s": 60, "ok": ok})
    client.xadd(stack.keys.heartbeats, {"m": hb})
