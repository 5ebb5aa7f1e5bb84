"""Where the bytes of an ``image_url`` come from: data URLs, the one local folder, guarded remote URLs.

* ``data:image/...;base64,...``: always accepted; at most :attr:`ServerConfig.max_image_bytes`
  once decoded (413 ``image_too_large``).
* A local path or ``file://`` URL: refused unless :attr:`ServerConfig.local_image_dir` names a
  folder; then only regular files inside that folder (symlinks resolved; a relative path is taken
  inside it) of at most ``max_image_bytes``. Every refusal, whatever its reason (local paths off,
  no such file, outside the folder, a symlink out of it, a directory or device, unreadable), is
  the same 400 ``local_image_refused`` with the same message, so the server tells nothing about
  which files exist. A path that is outside the folder before symlinks are resolved is refused
  without touching the file system.
* ``http(s)://`` URLs: refused unless :attr:`ServerConfig.allow_remote_urls`. Then every hop is
  checked by :func:`fetch_remote` itself (redirects are never followed automatically): its host is
  resolved, and the hop is refused (400 ``remote_address_refused``) if ANY address it resolves to
  is loopback, private, link-local, multicast, reserved, unspecified, shared (100.64/10) or not
  globally routable, including IPv4 addresses embedded in IPv6 (``::ffff:a.b.c.d``, 6to4, Teredo,
  NAT64 ``64:ff9b::/96``), unless it lies in :attr:`ServerConfig.remote_allowed_networks`. The
  connection then goes to the address that was checked (the URL's host name travels in the
  ``Host`` header and, for https, as the TLS server name, so certificates are still verified for
  it): a name that resolves to a public address at the check and to a private one a moment later
  (DNS rebinding) is not re-resolved. At most :attr:`ServerConfig.remote_max_redirects` redirects,
  :attr:`ServerConfig.remote_timeout_s` seconds for all hops together, ``max_image_bytes`` bytes
  (counted while reading), no proxy from the environment. ``allow_private_addresses`` turns the
  address check off: UNSAFE, for tests only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import ipaddress
import os
import socket
import stat
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from giraffe_core.engine.server_config import ServerConfig
from giraffe_core.engine.server_errors import RequestError
from giraffe_core.extras import require

__all__ = ["LOCAL_REFUSED", "address_is_public", "fetch_remote", "image_bytes", "read_local"]

#: the one message of every refused local path (no oracle for which files exist)
LOCAL_REFUSED = ("local image paths are refused unless they name an image file inside the folder this server "
                 "was started with (giraffe serve --image-dir DIR); send the image as a data: URL")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _too_large(where: str, size: int | str, limit: int) -> RequestError:
    return RequestError(f"{where}: the image has {size} bytes, over this server's limit of {limit} bytes per image",
                        status=413, param=where, error_code="image_too_large")


async def image_bytes(url: str, config: ServerConfig, where: str, pool: Executor) -> bytes:
    """The bytes of an ``image_url`` (data URL, local path or ``file://`` URL, or ``http(s)`` URL).

    ``pool`` runs the blocking steps (base64 decoding, file reads, name resolution).

    Raises:
        RequestError: 400 for a malformed, refused or unreachable source; 413 for one over
            ``max_image_bytes``.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url[:12] else ""
    loop = asyncio.get_running_loop()
    if scheme == "data":
        return await loop.run_in_executor(pool, decode_data_url, url, config, where)
    if scheme in ("http", "https"):
        return await fetch_remote(url, config, where, pool)
    if scheme == "file" or "://" not in url:
        return await loop.run_in_executor(pool, read_local, url, config, where)
    raise RequestError(f"{where}: unsupported image URL scheme {scheme[:20]!r}; use a data: URL, a local path or "
                       f"file:// URL, or http(s)", param=where, error_code="invalid_image_url")


def decode_data_url(url: str, config: ServerConfig, where: str) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URL (its size is checked before decoding)."""
    header, comma, payload = url[len("data:"):].partition(",")
    fields = header.split(";")
    if not comma or not fields[0].lower().startswith("image/") or "base64" not in fields[1:]:
        raise RequestError(f"{where}: a data URL must look like 'data:image/png;base64,<data>', got "
                           f"{url[:40]!r}", param=where, error_code="invalid_image_url")
    payload = "".join(payload.split())  # line breaks are tolerated
    if len(payload) // 4 * 3 > config.max_image_bytes:
        raise _too_large(where, len(payload) // 4 * 3, config.max_image_bytes)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where}: the data URL is not valid base64 ({exc})", param=where,
                           error_code="invalid_base64") from exc


# --------------------------------------------------------------------------------------------------
# local files: one folder, one refusal
# --------------------------------------------------------------------------------------------------


class _Refused(Exception):
    """Any reason to refuse a local path; all of them answer the same."""


def _named_path(url: str) -> Path:
    if url[:7].lower() != "file://":
        return Path(url)
    parsed = urlsplit(url)
    if parsed.netloc not in ("", "localhost"):
        raise _Refused
    return Path(unquote(parsed.path))


def _inside(root: Path, url: str) -> Path:
    """The file ``url`` names, inside ``root`` lexically and once every symlink is resolved."""
    base = root.resolve(strict=True)
    named = Path(os.path.normpath(base / _named_path(url)))  # an absolute path replaces base
    if not named.is_relative_to(base):
        raise _Refused  # outside before resolving: the file system is not even asked
    target = named.resolve(strict=True)
    if not target.is_relative_to(base):
        raise _Refused
    return target


def read_local(url: str, config: ServerConfig, where: str) -> bytes:
    """The bytes of a local image inside :attr:`ServerConfig.local_image_dir`.

    Raises:
        RequestError: 400 ``local_image_refused`` (always the same, whatever the reason); 413
            ``image_too_large`` for a file in the folder over ``max_image_bytes``.
    """
    limit = config.max_image_bytes
    try:
        if config.local_image_dir is None:
            raise _Refused
        target = _inside(config.local_image_dir, url)
        # O_NONBLOCK: a FIFO does not block the open; O_NOFOLLOW: a symlink swapped in since is refused
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise _Refused
            if info.st_size > limit:
                raise _too_large(where, info.st_size, limit)
            data = file.read(limit + 1)
    except RequestError:
        raise
    except (_Refused, OSError, ValueError, RuntimeError) as exc:  # ValueError: a NUL byte; RuntimeError: a loop
        raise RequestError(f"{where}: {LOCAL_REFUSED}", param=where, error_code="local_image_refused") from exc
    if len(data) > limit:  # the file grew since fstat
        raise _too_large(where, f"more than {limit}", limit)
    return data


# --------------------------------------------------------------------------------------------------
# remote URLs: every hop resolved, checked and connected to by address
# --------------------------------------------------------------------------------------------------


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (IPv4-mapped, 6to4, Teredo, NAT64)."""
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def address_is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is a globally routable unicast address (no IPv4 inside it that is not)."""
    if isinstance(ip, ipaddress.IPv6Address) and not all(address_is_public(a) for a in _embedded_ipv4(ip)):
        return False
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


@dataclass(frozen=True)
class _Hop:
    """One request of a fetch: the URL with the checked address in it, its Host header and TLS name."""

    url: str
    host_header: str
    extensions: dict[str, Any]


def _refused_address(where: str, host: str) -> RequestError:
    return RequestError(f"{where}: the image URL's host {host[:100]!r} is a loopback, private, link-local or "
                        f"otherwise non-public address, which this server does not fetch", param=where,
                        error_code="remote_address_refused")


async def _resolve(url: str, config: ServerConfig, where: str, pool: Executor) -> _Hop:
    """Resolve the host of ``url``, refuse it unless every address is allowed, pin the first."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise RequestError(f"{where}: {url[:100]!r} is not an http(s) URL with a host", param=where,
                           error_code="invalid_image_url")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        lookup = functools.partial(socket.getaddrinfo, parts.hostname, port, type=socket.SOCK_STREAM)
        infos = await asyncio.get_running_loop().run_in_executor(pool, lookup)
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    except (OSError, ValueError) as exc:
        raise RequestError(f"{where}: cannot resolve the host of {url[:100]!r}", param=where,
                           error_code="image_fetch_failed") from exc
    allowed = [ipaddress.ip_network(n, strict=False) for n in config.remote_allowed_networks]
    for ip in addresses:
        if not (config.allow_private_addresses or address_is_public(ip) or any(ip in n for n in allowed)):
            raise _refused_address(where, parts.hostname)
    pinned = addresses[0]
    netloc = f"[{pinned.compressed}]:{port}" if pinned.version == 6 else f"{pinned}:{port}"
    hop_url = urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))
    named = parts.hostname
    is_literal = _is_ip(named)
    extensions = {"sni_hostname": named} if parts.scheme.lower() == "https" and not is_literal else {}
    return _Hop(hop_url, parts.netloc.rpartition("@")[2], extensions)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _body(response: Any, limit: int, where: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(where, int(declared), limit)
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise _too_large(where, f"more than {limit}", limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _follow(url: str, config: ServerConfig, where: str, pool: Executor, httpx: Any) -> bytes:
    async with httpx.AsyncClient(timeout=config.remote_timeout_s, follow_redirects=False, trust_env=False) as client:
        for _ in range(config.remote_max_redirects + 1):
            hop = await _resolve(url, config, where, pool)
            async with client.stream("GET", hop.url, headers={"Host": hop.host_header},
                                     extensions=hop.extensions) as response:
                if response.status_code in _REDIRECTS and response.headers.get("location"):
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise RequestError(f"{where}: fetching {url[:200]} returned HTTP {response.status_code}",
                                       param=where, error_code="image_fetch_failed")
                return await _body(response, config.max_image_bytes, where)
    raise RequestError(f"{where}: {url[:200]} redirects more than {config.remote_max_redirects} times",
                       param=where, error_code="image_fetch_failed")


async def fetch_remote(url: str, config: ServerConfig, where: str, pool: Executor) -> bytes:
    """GET an http(s) image URL, checking every hop (module doc); at most ``max_image_bytes``.

    ``pool`` runs the name resolutions (``socket.getaddrinfo`` blocks).

    Raises:
        RequestError: 400 ``remote_urls_disabled``, ``remote_address_refused``, ``image_fetch_failed``
            (HTTP error, timeout, too many redirects), ``invalid_image_url``; 413 ``image_too_large``.
    """
    if not config.allow_remote_urls:
        raise RequestError(
            f"{where}: remote image URLs are disabled on this server; send the image as a data: URL, "
            f"or start the server with --allow-remote-urls (ServerConfig(allow_remote_urls=True))",
            param=where, error_code="remote_urls_disabled")
    httpx = require("httpx", extra="serve", purpose="fetch remote image URLs")
    try:
        return await asyncio.wait_for(_follow(url, config, where, pool, httpx), timeout=config.remote_timeout_s)
    except asyncio.TimeoutError as exc:
        raise RequestError(f"{where}: fetching {url[:200]} took over {config.remote_timeout_s} s", param=where,
                           error_code="image_fetch_failed") from exc
    except httpx.HTTPError as exc:
        raise RequestError(f"{where}: cannot fetch {url[:200]}: {type(exc).__name__}", param=where,
                           error_code="image_fetch_failed") from exc
