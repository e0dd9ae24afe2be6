"""Process lifecycle of publishers: goodbye at exit, a fresh start after fork, SIGTERM.

A planned stop should say goodbye (so a deploy is not an outage), and a forked worker
(gunicorn `--preload`, multiprocessing) inherits a publisher whose thread did not survive the
fork. Live publishers are kept in a weak set, so tracking never keeps one alive.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import weakref
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from publishers.publisher import Publisher

__all__ = ["EXIT_TIMEOUT_S", "close_all", "install_signal_handlers", "track", "untrack"]

#: How long interpreter exit or SIGTERM may wait for the goodbyes to reach Redis.
EXIT_TIMEOUT_S: Final = 2.0

_live: weakref.WeakSet[Publisher] = weakref.WeakSet()


def track(publisher: Publisher) -> None:
    _live.add(publisher)


def untrack(publisher: Publisher) -> None:
    _live.discard(publisher)


def close_all(timeout: float = EXIT_TIMEOUT_S) -> None:
    """Close every live publisher; runs at interpreter exit. Never raises."""
    for publisher in list(_live):
        with contextlib.suppress(Exception):
            publisher.close(timeout)


def _restart_in_child() -> None:
    # The parent's thread does not exist here and its buffer is the parent's to send.
    for publisher in list(_live):
        with contextlib.suppress(Exception):
            publisher._restart_after_fork()


atexit.register(close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_in_child)

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def install_signal_handlers(
    signals: Iterable[signal.Signals] = (signal.SIGTERM,), timeout: float = EXIT_TIMEOUT_S
) -> None:
    """On these signals, close every publisher (goodbyes, flush), then defer to the old handler.

    Call it from the main thread of a plain process. Frameworks that own signal handling
    (uvicorn, asyncio's `add_signal_handler`) stop the process through normal exit, where the
    `atexit` close already says goodbye; there, this is not needed.
    """
    for sig in signals:
        previous: _Handler = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: _Handler = previous) -> None:
            close_all(timeout)
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)
