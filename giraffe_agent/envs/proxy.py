"""The allowlist proxy: a forward HTTP proxy on loopback that refuses hosts outside the allowlist.

Playwright's ``context.route`` sees every request a page makes, but not the hops of a redirect
(by design) nor WebSocket connections. The browser environment therefore also launches Chromium
with this proxy as its only way out (``--proxy-server``, with ``<-loopback>`` so that loopback
traffic goes through it too): ``CONNECT`` tunnels (https, ws, wss) are checked by host and port,
plain http requests by their absolute URL, and anything outside the
:class:`~giraffe_agent.safety.UrlGuard` gets a 403 and a log line. Together with the route
handler, no request reaches a host the policy does not allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from giraffe_agent.safety import UrlGuard

__all__ = ["AllowlistProxy"]

logger = logging.getLogger(__name__)

#: longest URL or host quoted in a log line, characters
_MAX_QUOTED = 200


def short(text: str, limit: int = _MAX_QUOTED) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis), for messages and logs."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


_HOP_HEADERS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization",
                          b"proxy-authenticate"})
_HEAD_LIMIT = 1 << 20
_HEAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 16


#: a request line: a method token, a target of visible ASCII, the HTTP version (RFC 9112 section 3)
_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")
#: a header field line: a name token, a colon, a value without CR, LF or NUL (no obsolete line folding)
_HEADER_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*")
#: a DNS name in ASCII (IDNA already applied by the browser): labels of 1 to 63 characters
_HOST_NAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?")


class BadRequest(ValueError):
    """A request head the proxy answers with 400 Bad Request; the message says what is malformed."""


@dataclass(frozen=True)
class ProxyRequest:
    """A parsed request head.

    Attributes:
        method: the method as sent (``CONNECT`` opens a tunnel).
        target: the request target as sent (``host:port`` for CONNECT, an absolute http URL otherwise).
        version: ``HTTP/1.1`` or the like.
        host, port: where the request goes (a DNS name or an IP address without brackets; 1..65535).
        path: the origin-form path and query to send upstream (``""`` for CONNECT).
        headers: the end-to-end header lines to forward (hop-by-hop ones removed).
    """

    method: str
    target: str
    version: str
    host: str
    port: int
    path: str
    headers: tuple[bytes, ...]

    @property
    def is_connect(self) -> bool:
        """True for a ``CONNECT`` tunnel."""
        return self.method.upper() == "CONNECT"


def _valid_host(host: str) -> bool:
    """True for an IP address or an ASCII DNS name (what the proxy may ever connect to)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOST_NAME.fullmatch(host) is not None


def _split_authority(authority: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` -> (host, port); ``None`` when malformed."""
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        port_text = rest[1:] if bracket and rest.startswith(":") else ""
    else:
        host, _, port_text = authority.rpartition(":")
    if not host or not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        return None
    return host, int(port_text)


def _absolute_http(target: str) -> tuple[str, int, str]:
    """An absolute ``http://`` URL -> (host, port, origin-form path). Raises :class:`BadRequest`."""
    try:
        parts = urlsplit(target)
        host, port = parts.hostname, parts.port or 80  # .port raises on a port out of range
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"...
        raise BadRequest(f"malformed URL ({exc})") from exc
    if parts.scheme.lower() != "http" or not host:
        raise BadRequest("this proxy takes absolute http:// URLs and CONNECT")
    return host, port, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def parse_head(head: bytes) -> ProxyRequest:
    """Parse a request head (request line and header lines, the blank line excluded or included).

    Raises:
        BadRequest: anything malformed: the request line, a header line, the target, its host or port.
    """
    request_line, _, header_block = head.removesuffix(b"\r\n\r\n").partition(b"\r\n")
    match = _REQUEST_LINE.fullmatch(request_line.decode("latin-1"))
    if match is None:
        raise BadRequest("malformed request line")
    method, target, version = match.groups()
    lines = header_block.split(b"\r\n") if header_block else []
    if any(_HEADER_LINE.fullmatch(line) is None for line in lines):
        raise BadRequest("malformed header line")
    if method.upper() == "CONNECT":
        authority = _split_authority(target)
        if authority is None:
            raise BadRequest("malformed CONNECT target")
        (host, port), path = authority, ""
    else:
        host, port, path = _absolute_http(target)
    if not _valid_host(host):
        raise BadRequest("malformed host")
    headers = tuple(line for line in lines if line.split(b":", 1)[0].strip().lower() not in _HOP_HEADERS)
    return ProxyRequest(method, target, version, host, port, path, headers)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(_CHUNK):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        with contextlib.suppress(OSError, RuntimeError):  # the loop may already be closing
            writer.close()


class AllowlistProxy:
    """A forward HTTP proxy on 127.0.0.1 that refuses every host:port outside the allowlist.

    Chromium sends all its traffic here (``<-loopback>`` makes it include loopback), so the
    allowlist also holds for what ``context.route`` cannot see: redirect hops and WebSockets.
    ``CONNECT`` tunnels (https, ws, wss) are checked by host and port; plain http requests by
    their absolute URL's host and port, then forwarded with ``Connection: close`` both ways so
    that a kept-alive connection can never carry a second, unchecked request.
    """

    def __init__(self, guard: UrlGuard, *, connect_timeout_s: float, redact: Callable[[str], str]) -> None:
        self._guard = guard
        self._connect_timeout_s = connect_timeout_s
        self._redact = redact
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0

    async def start(self) -> str:
        """Listen on a free loopback port; returns the proxy URL."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_HEAD_LIMIT)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(asyncio.TimeoutError, RuntimeError):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
            pass  # a side went away, never finished its head, or sent an upstream head over the limit: close
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug: logged, this connection closed, the proxy keeps serving the others
            logger.exception("safety proxy: unexpected error on a connection; closed it")
        finally:
            _close(writer)
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]

    async def _reply(self, writer: asyncio.StreamWriter, status: int, reason: str, text: str) -> None:
        """Answer ``status`` with a small HTML page saying ``text`` (escaped), then the connection closes."""
        body = (f"<!doctype html><title>{status} {reason}</title><h1>{reason}</h1>"
                f"<p>{html.escape(text)}</p>").encode()
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()

    def _refuse_reason(self, host: str, port: int, what: str) -> str | None:
        reason = self._guard.check_host(host, port)
        if reason is not None:
            self.refused += 1
            logger.info("safety proxy refused %s (%s)", self._redact(short(what)), reason)
        return reason

    async def _open(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(host, port, limit=_HEAD_LIMIT),
                                      self._connect_timeout_s)

    async def _read_head(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ProxyRequest | None:
        """The client's parsed request head, or ``None`` after answering 400 or 431 (malformed, too long)."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            await self._reply(writer, 431, "Request Header Fields Too Large",
                              f"the request head is over {_HEAD_LIMIT} bytes")
            return None
        try:
            return parse_head(head)
        except BadRequest as exc:
            await self._reply(writer, 400, "Bad Request", str(exc))
            return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await self._read_head(reader, writer)
        if request is None:
            return
        host, port, target = request.host, request.port, request.target
        what = f"connection to {target}" if request.is_connect else f"request to {target}"
        if reason := self._refuse_reason(host, port, what):
            shown = short(target if request.is_connect else f"{host}:{port}")
            await self._reply(writer, 403, "Forbidden", f"Blocked by the safety policy: {shown} is {reason}.")
            return
        try:
            up_reader, up_writer = await self._open(host, port)
        except (OSError, asyncio.TimeoutError) as exc:
            await self._reply(writer, 502, "Bad Gateway", f"could not connect to {short(f'{host}:{port}')}: {exc}")
            return
        try:
            if request.is_connect:
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                await writer.drain()
                await self._tunnel(reader, writer, up_reader, up_writer)
            else:
                await self._forward(request, reader, writer, up_reader, up_writer)
        finally:
            _close(up_writer)

    @staticmethod
    async def _forward(request: ProxyRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        """Send a plain http request upstream with ``Connection: close``, copy the answer back."""
        upload: asyncio.Task[None] | None = None
        try:
            up_writer.write(f"{request.method} {request.path} {request.version}\r\n".encode("latin-1")
                            + b"\r\n".join([*request.headers, b"Connection: close"]) + b"\r\n\r\n")
            await up_writer.drain()
            upload = asyncio.ensure_future(_copy(reader, up_writer))  # a request body, if any
            response_head = await asyncio.wait_for(up_reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT_S)
            status_line, _, response_headers = response_head[:-4].partition(b"\r\n")
            kept = [line for line in response_headers.split(b"\r\n")
                    if line and line.split(b":", 1)[0].strip().lower() not in _HOP_HEADERS]
            writer.write(status_line + b"\r\n" + b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n")
            await _copy(up_reader, writer)
        finally:
            if upload is not None:
                upload.cancel()
                await asyncio.gather(upload, return_exceptions=True)

    @staticmethod
    async def _tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        tasks = [asyncio.ensure_future(_copy(reader, up_writer)), asyncio.ensure_future(_copy(up_reader, writer))]
        try:
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if pending:  # one side finished: give the other a moment to flush, then stop
                await asyncio.wait(pending, timeout=2.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
