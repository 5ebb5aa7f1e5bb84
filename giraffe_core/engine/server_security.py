"""Who may talk to ``giraffe serve``: the Host check, the API key, JSON-only bodies, the bind check.

Two ASGI middlewares (added with FastAPI's ``add_middleware``) answer before any route runs:

* :class:`HostGuard` (outermost): headers over :data:`MAX_HEADER_BYTES` in all are a 431
  ``headers_too_large`` (uvicorn itself cuts a connection whose headers pass a few MB). The ``Host``
  header must name this server, ``localhost``,
  ``127.0.0.1``, ``[::1]`` or the address the connection came in on, with the port it came in on
  (the scheme's default port when the header has none), or match
  :attr:`ServerConfig.allowed_hosts` (``name`` for any port, ``name:port``, ``*`` for anything).
  Anything else is a 421 ``invalid_host``: a web page whose host name an attacker re-points at
  127.0.0.1 (DNS rebinding) sends its own name and is refused, on every route.
* :class:`AccessGuard`: with :attr:`ServerConfig.api_key`, every route but ``/health`` needs
  ``Authorization: Bearer KEY`` (compared in constant time; 401 ``invalid_api_key`` with
  ``WWW-Authenticate: Bearer``; the key sent is never echoed). Without a key, any
  ``Authorization`` header is accepted (the openai client sends ``Bearer unused``). Every POST
  must say ``Content-Type: application/json`` (415 ``unsupported_media_type`` otherwise): a page on
  another site can send ``text/plain`` or form bodies without asking, but JSON needs a CORS
  preflight, which this server does not grant unless :attr:`ServerConfig.cors_allowed_origins`
  names the page's origin (then starlette's ``CORSMiddleware`` answers, between the two guards).

:func:`check_bind` refuses to serve on a non-loopback address without an API key unless
:attr:`ServerConfig.allow_unauthenticated_remote` says so.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import SecretStr

from giraffe_core.engine.server_config import ServerConfig
from giraffe_core.engine.server_errors import RequestError, send_error
from giraffe_core.errors import ConfigError

__all__ = ["MAX_HEADER_BYTES", "OPEN_PATHS", "AccessGuard", "HostGuard", "check_bind", "host_allowed",
           "is_loopback_host", "split_host"]

#: routes that answer without the API key
OPEN_PATHS = frozenset({"/health"})
#: the most bytes a request's headers (names and values) may have together
MAX_HEADER_BYTES = 64 * 1024
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    """The first header called ``name`` (lower case), decoded as latin-1; ``None`` if absent."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _normal_name(name: str) -> str:
    """A host name in lower case, an IP address in its compressed form (``[::1]`` -> ``::1``)."""
    name = name.strip("[]").lower()
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        return name


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"name:port"``, ``"[v6]:port"`` or ``"name"`` as ``(normalised name, port or None)``; ``None`` if malformed."""
    value = value.strip()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, None
    if not name or any(c in name for c in "/@ \\") or (port is not None and not (port.isdigit() and len(port) <= 5)):
        return None
    return _normal_name(name), None if port is None else int(port)


def host_allowed(header: str | None, scope: dict[str, Any], allowed_hosts: tuple[str, ...]) -> bool:
    """Whether a request's ``Host`` header names this server (module doc)."""
    parsed = None if header is None else split_host(header)
    if parsed is None:
        return False
    name, port = parsed
    if port is None:
        port = 443 if scope.get("scheme") in ("https", "wss") else 80
    if "*" in allowed_hosts:
        return True
    for entry in allowed_hosts:
        allowed = split_host(entry)
        if allowed is not None and allowed[0] == name and allowed[1] in (None, port):
            return True
    server = scope.get("server")
    names = set(_LOOPBACK_NAMES)
    if server and server[0]:
        names.add(_normal_name(server[0]))
    return name in names and (not server or server[1] is None or port == server[1])


class HostGuard:
    """ASGI middleware: 431 for oversized headers, 421 ``invalid_host`` for a ``Host`` that is not this server."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: tuple[str, ...] = ()) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = sum(len(k) + len(v) for k, v in scope.get("headers", ()))
            if size > MAX_HEADER_BYTES:
                await send_error(send, RequestError(
                    f"the request headers have {size} bytes, over this server's limit of {MAX_HEADER_BYTES}",
                    status=431, error_code="headers_too_large"))
                return
            host = _header(scope, b"host")
            if not host_allowed(host, scope, self.allowed_hosts):
                shown = "no Host header" if host is None else f"the Host header {host[:100]!r}"
                await send_error(send, RequestError(
                    f"{shown} does not name this server; requests must be addressed to it as localhost, "
                    f"127.0.0.1, [::1] or the address they reach it at, with its port (start the server with "
                    f"--allowed-host NAME to accept another name)", status=421, error_code="invalid_host"))
                return
        await self.app(scope, receive, send)


def _bearer(value: str | None) -> str | None:
    scheme, _, token = (value or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class AccessGuard:
    """ASGI middleware: the API key (401) and JSON request bodies (415), see the module doc."""

    def __init__(self, app: ASGIApp, *, api_key: SecretStr | None = None) -> None:
        self.app = app
        self._key = None if api_key is None else api_key.get_secret_value().encode("latin-1")

    def refusal(self, scope: dict[str, Any]) -> RequestError | None:
        """What is wrong with the request's credentials or content type, or ``None``."""
        if self._key is not None and scope["path"] not in OPEN_PATHS:
            token = _bearer(_header(scope, b"authorization"))
            if token is None or not hmac.compare_digest(token.encode("latin-1"), self._key):
                return RequestError(
                    "missing or wrong API key: send 'Authorization: Bearer KEY' with the key this server was "
                    "started with (--api-key or $GIRAFFE_API_KEY)", status=401, error_code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})
        if scope["method"] in _BODY_METHODS:
            declared = _header(scope, b"content-type")
            media = (declared or "").split(";")[0].strip().lower()
            if media != "application/json":
                got = "none" if declared is None else repr(declared[:100])
                return RequestError(f"request bodies must be JSON: send 'Content-Type: application/json' "
                                    f"(got {got})", status=415, error_code="unsupported_media_type")
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        refused = self.refusal(scope) if scope["type"] == "http" else None
        if refused is not None:
            await send_error(send, refused)
            return
        await self.app(scope, receive, send)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a bind address) is ``localhost`` or a loopback IP address."""
    name = _normal_name(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, config: ServerConfig) -> None:
    """Refuse to bind a non-loopback ``host`` without an API key (unless explicitly allowed).

    Raises:
        ConfigError: ``host`` is reachable from other machines, ``config.api_key`` is not set and
            ``config.allow_unauthenticated_remote`` is off.
    """
    if is_loopback_host(host) or config.api_key is not None or config.allow_unauthenticated_remote:
        return
    raise ConfigError(
        f"refusing to serve on {host!r} without an API key: every machine that can reach it could use the "
        f"model (and, with --allow-remote-urls, make the server fetch URLs)",
        hint="set an API key (--api-key, or better the GIRAFFE_API_KEY environment variable, which `ps` does "
             "not show), bind 127.0.0.1, or pass --allow-unauthenticated-remote if the network is trusted")
