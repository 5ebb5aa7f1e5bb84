"""Shared helpers of the browser tests: loopback HTTP servers that count hits, and the skip marker.

Imported by tests/test_browser.py, tests/test_coords.py and tests/test_safety.py (not a conftest:
the fixtures that launch browsers live in those modules, module-scoped, one browser per config).
Every server binds 127.0.0.1 on a free port; nothing leaves the machine. ``close()`` leaves nothing
running: it ends every open connection and delayed reply and joins every handler thread.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from giraffe_core.extras import is_available


def _browser_available() -> bool:
    if not is_available("playwright"):
        return False
    from giraffe_agent.envs.chromium import find_chromium

    return find_chromium() is not None


#: skip a module when there is no playwright package or no Chromium to launch
requires_browser = pytest.mark.skipif(
    not _browser_available(),
    reason="needs the agent extra (playwright) and a Chromium: apt-get install chromium or playwright install chromium",
)


@dataclass
class Reply:
    """What a route answers: status, body, headers, and an optional delay before answering (s)."""

    body: bytes | str = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Handler = Callable[[BaseHTTPRequestHandler], Reply]


class _Server(ThreadingHTTPServer):
    """A threaded HTTP server that keeps its connections, so that ``server_close`` can end them.

    Handler threads are not daemons and ``server_close`` joins them (``block_on_close``); a client
    that went away (a browser closing a stream) is not an error worth a traceback on stderr.
    """

    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()
        self.closing = threading.Event()
        self._lock = threading.Lock()

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def server_close(self) -> None:
        self.closing.set()  # delayed replies stop waiting and are not sent
        with self._lock:
            open_now = list(self.connections)
        for conn in open_now:  # a kept-alive or streaming connection: its handler sees EOF and returns
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        super().server_close()  # joins every handler thread


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with a route table, recording every request path.

    ``routes`` maps a path (without query) to a :class:`Reply` or a function of the request
    handler returning one; unknown paths get 404. ``hits`` lists (method, path with query) in
    arrival order, including WebSocket upgrade attempts and 404s. :meth:`close` stops it and every
    thread it started.
    """

    def __init__(self, routes: dict[str, Reply | Handler] | None = None) -> None:
        self.routes: dict[str, Reply | Handler] = dict(routes or {})
        self.hits: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60  # seconds an idle kept-alive connection is held (close() ends it at once)

            def log_message(self, format: str, *args: object) -> None:
                pass  # silent: test_safety checks that no log record holds a secret

            def _answer(self) -> None:
                with server._lock:
                    server.hits.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                route = server.routes.get(urlsplit(self.path).path)
                reply = Reply("not found", status=404) if route is None else (
                    route if isinstance(route, Reply) else route(self))
                if reply.delay_s and server._server.closing.wait(reply.delay_s):
                    self.close_connection = True
                    return  # the server is closing: no reply
                body = reply.body.encode() if isinstance(reply.body, str) else reply.body
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _answer

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"loopback-{self.port}", daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        """Absolute URL of ``path`` on this server."""
        return self.origin + path

    def paths(self) -> list[str]:
        """The paths (without query) requested so far."""
        with self._lock:
            return [urlsplit(p).path for _, p in self.hits]

    def clear(self) -> None:
        """Forget the hits so far."""
        with self._lock:
            self.hits.clear()

    def close(self) -> None:
        """Stop serving, end every open connection and delayed reply, and join every thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
