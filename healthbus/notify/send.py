"""The one seam to the outside: sending a message to an Apprise URL.

Apprise (`json://`, `slack://`, `mailto://`, … a hundred services) answers a send with a
bare yes or no and logs why; the reason is caught from its log records through a context
variable, so concurrent destinations never mix up each other's reasons.
"""

from __future__ import annotations

import logging
import warnings
from contextvars import ContextVar
from typing import Any, Protocol, cast

from healthbus import __version__
from healthbus.errors import ConfigError
from healthbus.notify.text import Message

__all__ = ["AppriseSender", "Sender"]

_reasons: ContextVar[list[str] | None] = ContextVar("healthbus_notify_reasons", default=None)


class Sender(Protocol):
    #: Where it sends, with secrets masked: for logs and dead letters.
    destination: str

    async def send(self, message: Message) -> str | None:
        """Deliver `message`; None when delivered, else why not."""
        ...


class _ReasonHandler(logging.Handler):
    """Hands apprise's warnings to the send that is waiting for them (if any)."""

    def emit(self, record: logging.LogRecord) -> None:
        reasons = _reasons.get()
        if reasons is not None:
            reasons.append(record.getMessage())


_handler = _ReasonHandler(logging.WARNING)


class AppriseSender:
    def __init__(self, url: str) -> None:
        with warnings.catch_warnings():
            # apprise loads its plugins on first use; one probes the deprecated `imghdr`.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._plugin: Any = self._instantiate(url)
        #: The URL with its secrets masked, for logs and dead letters.
        self.destination: str = str(self._plugin.url(privacy=True)).partition("?")[0]

    def _instantiate(self, url: str) -> Any:
        try:
            import apprise
        except ImportError:
            raise ConfigError(
                "notifications need apprise: pip install 'healthbus[notify]'"
            ) from None
        self._apprise: Any = apprise
        logger = logging.getLogger("apprise")
        if _handler not in logger.handlers:
            logger.addHandler(_handler)
        asset = apprise.AppriseAsset(
            storage_mode="memory",
            app_id="healthbus",
            app_desc=f"healthbus {__version__}",
        )
        plugin = apprise.Apprise.instantiate(url, asset=asset)
        if plugin is None:
            scheme = url.partition("://")[0] or url[:16]
            raise ConfigError(
                f"notify url with scheme {scheme!r} is not a usable Apprise URL "
                "(see https://appriseit.com/services/ for the formats)"
            )
        return cast(Any, plugin)  # apprise leaves some of its API untyped

    async def send(self, message: Message) -> str | None:
        reasons: list[str] = []
        token = _reasons.set(reasons)
        try:
            ok = await self._plugin.async_notify(
                body=message.body,
                title=message.title,
                notify_type=self._apprise.NotifyType(message.level),
            )
        except Exception as exc:  # a plugin's bug must not stop the notifier
            return f"{type(exc).__name__}: {exc}"
        finally:
            _reasons.reset(token)
        if ok:
            return None
        return "; ".join(dict.fromkeys(reasons)) or "the service did not accept the message"
