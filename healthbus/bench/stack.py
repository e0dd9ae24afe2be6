"""The bus as deployed, one process each: `healthbus aggregator` and a web worker
(`healthbus web`, or the plain broadcast it is compared with) on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from healthbus.bench.context import Bench, Child, spawn, wait_for
from healthbus.embedded import free_port
from healthbus.keys import Keys

__all__ = ["Stack", "running_stack"]


@dataclass(frozen=True)
class Stack:
    keys: Keys
    aggregator: Child
    web: Child
    base_url: str


@contextlib.contextmanager
def running_stack(bench: Bench, scenario: str, *, web: str = "healthbus") -> Iterator[Stack]:
    """`web`: `healthbus` (the real web app) or `naive` (the obvious broadcast)."""
    keys = Keys(bench.namespace(scenario))
    common = ["--redis-url", bench.redis_url, "--namespace", keys.namespace]
    port = free_port()
    if web == "healthbus":
        web_args = ["-m", "healthbus.cli", "web", *common, "--port", str(port)]
    else:
        web_args = ["-m", "healthbus.bench.naive", bench.redis_url, keys.updates, str(port)]
    with (
        spawn(["-m", "healthbus.cli", "aggregator", *common, "--name", "bench"]) as aggregator,
        spawn(web_args) as web_child,
    ):
        wait_for(lambda: _answers(port), web_child, f"the {web} web worker listening", within=30)
        yield Stack(keys, aggregator, web_child, f"http://127.0.0.1:{port}")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
