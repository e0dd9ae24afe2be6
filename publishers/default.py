"""The process-wide default publisher, so `@heartbeat` works with no setup in code.

It is made on first use from the environment (`HEALTHBUS_REDIS_URL`, `HEALTHBUS_NAMESPACE`,
`HEALTHBUS_INSTANCE`, or the TOML file in `HEALTHBUS_CONFIG`); with no URL configured it
uses the local Redis, as the CLI does. First use, not import, so importing a module of
decorated tasks starts no thread and reads no environment. A bad setting raises `ConfigError`
on that first use: a deployment bug shows at once, while Redis being down never raises.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from healthbus.config import LOCAL_REDIS_URL, Config
from publishers.publisher import Publisher

__all__ = ["default_publisher", "make_publisher", "set_default_publisher"]

_lock = threading.Lock()
_default: Publisher | None = None


def default_publisher(environ: Mapping[str, str] | None = None) -> Publisher:
    """The shared publisher, made from `environ` (default `os.environ`) on the first call."""
    global _default
    publisher = _default
    if publisher is not None:
        return publisher
    with _lock:
        if _default is None:
            _default = make_publisher(Config.load(environ))
        return _default


def make_publisher(config: Config, **options: Any) -> Publisher:
    """`Publisher.from_config`, with the local Redis when no URL is configured (as the CLI)."""
    if config.redis_url is None:
        config = config.replace(redis_url=LOCAL_REDIS_URL)
    return Publisher.from_config(config, **options)


def set_default_publisher(publisher: Publisher | None) -> Publisher | None:
    """Use `publisher` wherever none is given (None: make one from the environment again).

    Returns the previous one, which is not closed: that is the caller's choice.
    """
    global _default
    with _lock:
        previous, _default = _default, publisher
    return previous
