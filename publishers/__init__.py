"""What runs inside or beside services and puts heartbeats on the bus.

`Publisher` buffers heartbeats and sends them from a background thread, so publishing never
waits on Redis; `publish_once` sends one heartbeat synchronously (for the CLI and scripts).
On top of it: `@heartbeat` (also a `with` block) for periodic work, `ConsumerReporter` for
message consumers, and `publishers.run` behind `healthbus run -- CMD`.
"""

from __future__ import annotations

from publishers._lifecycle import install_signal_handlers
from publishers.decorator import Beat, Iteration, current_iteration, heartbeat
from publishers.default import default_publisher, set_default_publisher
from publishers.once import publish_once
from publishers.publisher import Publisher, PublisherStats
from publishers.reporter import ConsumerReporter
from publishers.scrub import clean_error, scrub

__all__ = [
    "Beat",
    "ConsumerReporter",
    "Iteration",
    "Publisher",
    "PublisherStats",
    "clean_error",
    "current_iteration",
    "default_publisher",
    "heartbeat",
    "install_signal_handlers",
    "publish_once",
    "scrub",
    "set_default_publisher",
]
