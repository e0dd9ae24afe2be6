"""A webhook receiver for the notification tests: a real HTTP server on loopback, in a
thread, recording every JSON body POSTed to it. It can go down and come back on the same
port, like a destination that has an outage."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from healthbus.embedded import free_port

__all__ = ["Receiver"]


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        #: The answer to every POST: 200, or say 500 to refuse them.
        self.status = 200
        self.posts: list[dict[str, Any]] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The Apprise URL that posts here."""
        return f"json://127.0.0.1:{self.port}/hook"

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.posts)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    if receiver.status == 200:
                        receiver.posts.append(json.loads(body))
                    else:
                        receiver.refused += 1
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: nothing listens on the port until `start()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
