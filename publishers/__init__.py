"""What runs inside or beside services and puts heartbeats on the bus.

`Publisher` buffers heartbeats and sends them from a background thread, so publishing never
waits on Redis; `publish_once` sends one heartbeat synchronously (for the CLI and scripts).
"""

from __future__ import annotations

from publishers._lifecycle import install_signal_handlers
from publishers.once import publish_once
from publishers.publisher import Publisher, PublisherStats
from publishers.scrub import clean_error, scrub

__all__ = [
    "Publisher",
    "PublisherStats",
    "clean_error",
    "install_signal_handlers",
    "publish_once",
    "scrub",
]
