"""The allowlist proxy's request parsing under malformed input (:mod:`giraffe_agent.envs.proxy`).

The attack: a page (or anything that reaches the proxy's loopback port) sends request heads built
to break the parser. Every one must be answered 4xx or closed cleanly, no exception may escape the
connection handler (the proxy logs any it catches), and the proxy must keep serving: a valid
request to the allowed loopback server still goes through afterwards. The fuzz is bounded and
seeded, so every run sends the same inputs. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import random
from urllib.parse import urlsplit

import pytest

from giraffe_agent.envs import proxy as proxy_module
from giraffe_agent.envs.proxy import AllowlistProxy, BadRequest, ProxyRequest, parse_head
from giraffe_agent.safety import HostPattern, UrlGuard

#: request heads that are malformed in one way each; every one must get 400 Bad Request
MALFORMED = [
    b"GET http://[::1 HTTP/1.1\r\n\r\n",  # an unclosed IPv6 literal (was an UnboundLocalError)
    b"GET http://[::1/x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://[zz]/ HTTP/1.1\r\n\r\n",
    b"GET http://127.0.0.1:99999/ HTTP/1.1\r\n\r\n",  # port out of range
    b"GET http://127.0.0.1:-1/ HTTP/1.1\r\n\r\n",
    b"GET http://127.0.0.1:8x/ HTTP/1.1\r\n\r\n",
    b"GET http:///nohost HTTP/1.1\r\n\r\n",
    b"GET http://a..b/ HTTP/1.1\r\n\r\n",  # an empty label (idna would raise UnicodeError on connect)
    b"GET http://" + b"a" * 64 + b".example/ HTTP/1.1\r\n\r\n",  # a label over 63 characters
    b"GET http://exa mple/ HTTP/1.1\r\n\r\n",  # four fields
    b"GET http://ex\x00ample/ HTTP/1.1\r\n\r\n",  # NUL in the target
    b"GET http://\xc3\xa9x.example/ HTTP/1.1\r\n\r\n",  # raw non-ASCII host
    b"GET ftp://127.0.0.1/ HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # origin form: not a proxy request
    b"GET http://127.0.0.1/ HTTP/9\r\n\r\n",
    b"GET http://127.0.0.1/ FTP/1.1\r\n\r\n",
    b"G(T http://127.0.0.1/ HTTP/1.1\r\n\r\n",  # not a method token
    b"GET  http://127.0.0.1/ HTTP/1.1\r\n\r\n",  # two spaces
    b"GET http://127.0.0.1/\r\n\r\n",  # no version
    b"\r\n\r\n",  # an empty request line
    b"GET http://127.0.0.1/ HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET http://127.0.0.1/ HTTP/1.1\r\nX-A: 1\nHost: evil.example\r\n\r\n",  # a bare LF inside a header
    b"GET http://127.0.0.1/ HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",  # obsolete line folding
    b"GET http://127.0.0.1/ HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
    b"GET http://127.0.0.1/ HTTP/1.1\r\n: empty name\r\n\r\n",
    b"CONNECT [::1 HTTP/1.1\r\n\r\n",
    b"CONNECT [::1]443 HTTP/1.1\r\n\r\n",
    b"CONNECT :443 HTTP/1.1\r\n\r\n",
    b"CONNECT host: HTTP/1.1\r\n\r\n",
    b"CONNECT host:0 HTTP/1.1\r\n\r\n",
    b"CONNECT host:65536 HTTP/1.1\r\n\r\n",
    b"CONNECT host:\xb2 HTTP/1.1\r\n\r\n",  # a superscript two: str.isdigit() but not int()
    b"CONNECT ho\x7fst:443 HTTP/1.1\r\n\r\n",
    b"CONNECT a..b:443 HTTP/1.1\r\n\r\n",
]

#: well-formed heads the mutations start from (to hosts the fuzz proxy refuses: nothing is forwarded)
SEEDS = [
    b"GET http://blocked.example:8080/a/b?c=d HTTP/1.1\r\nHost: blocked.example:8080\r\nAccept: */*\r\n\r\n",
    b"CONNECT blocked.example:443 HTTP/1.1\r\nHost: blocked.example:443\r\n\r\n",
    b"GET http://[::1]:8080/ HTTP/1.1\r\nHost: [::1]:8080\r\nProxy-Connection: keep-alive\r\n\r\n",
    b"POST http://10.0.0.1/form HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
]
_ALPHABET = [b"\x00", b"\r", b"\n", b"\r\n", b" ", b"\t", b"[", b"]", b":", b"%", b"@", b"/", b"?", b"#",
             b"\xff", b"\xb2", b"\x7f", b"99999", b"-1", b"..", b"http://", b"CONNECT ", b"\xc3\xa9"]


def mutations(count: int, seed: int) -> list[bytes]:
    """``count`` seeded mutations of :data:`SEEDS`: bytes inserted, deleted, replaced or repeated."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(SEEDS))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            op = rng.randrange(4)
            if op == 0:
                data[at:at] = rng.choice(_ALPHABET)
            elif op == 1:
                del data[at:at + rng.randint(1, 6)]
            elif op == 2:
                data[at:at + 1] = bytes([rng.randrange(256)])
            else:
                data[at:at] = data[at:at + rng.randint(1, 8)] * rng.randint(1, 3)
        out.append(bytes(data))
    return out


def test_parse_head_reads_what_browsers_send():
    get = parse_head(b"GET http://Example.COM:8080/a?b=1 HTTP/1.1\r\nHost: example.com:8080\r\n"
                     b"Proxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n")
    assert get == ProxyRequest("GET", "http://Example.COM:8080/a?b=1", "HTTP/1.1", "example.com", 8080, "/a?b=1",
                               (b"Host: example.com:8080", b"Accept: */*"))  # hop-by-hop header dropped
    tunnel = parse_head(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n")
    assert tunnel.is_connect and (tunnel.host, tunnel.port, tunnel.path) == ("::1", 443, "")
    assert parse_head(b"GET http://127.0.0.1 HTTP/1.0\r\n\r\n").path == "/"


@pytest.mark.parametrize("head", MALFORMED, ids=range(len(MALFORMED)))
def test_each_malformed_head_is_a_bad_request(head):
    with pytest.raises(BadRequest):
        parse_head(head)


def test_fuzzed_heads_parse_or_raise_bad_request_only():
    parsed = refused = 0
    for head in mutations(3000, seed=1):
        try:
            request = parse_head(head)
        except BadRequest:
            refused += 1
            continue
        parsed += 1  # what parses is safe to act on: a valid host and port, no CR/LF/NUL anywhere
        assert 0 < request.port < 65536 and request.host and "\r" not in request.target
        assert all(b"\n" not in line and b"\r" not in line and b"\x00" not in line for line in request.headers)
    assert parsed > 100 and refused > 1000  # the mutations reach both outcomes


async def _upstream() -> tuple[asyncio.AbstractServer, int]:
    """A loopback HTTP server answering every request ``200 home``."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nhome")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _exchange(proxy_url: str, data: bytes) -> bytes:
    """Send ``data``, half-close, and read until the proxy closes (10 s at most)."""
    parts = urlsplit(proxy_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()  # a head without its blank line ends here instead of waiting 60 s
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""  # a reset is no answer; the test counts it as not clean
    finally:
        writer.close()


async def _fuzz_session(heads: list[bytes]) -> tuple[list[bytes], bytes]:
    """Every head through one proxy that allows only the loopback upstream, then a valid request."""
    upstream, port = await _upstream()
    proxy = AllowlistProxy(UrlGuard([HostPattern.parse(f"127.0.0.1:{port}")]), connect_timeout_s=5, redact=str)
    url = await proxy.start()
    try:
        replies = [await _exchange(url, head) for head in heads]
        valid = await _exchange(url, f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    finally:
        await proxy.close()
        upstream.close()
        await upstream.wait_closed()
    return replies, valid


def _errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def _clean(reply: bytes) -> bool:
    """A 4xx answer, or a clean close without an answer (the head never ended)."""
    return reply == b"" or (reply.startswith(b"HTTP/1.1 4") and b"Connection: close" in reply)


def test_the_proxy_answers_malformed_heads_400_and_keeps_serving(caplog):
    caplog.set_level(logging.INFO, logger="giraffe_agent.envs.proxy")
    replies, valid = asyncio.run(_fuzz_session(MALFORMED))
    assert [r.split(b"\r\n", 1)[0] for r in replies] == [b"HTTP/1.1 400 Bad Request"] * len(MALFORMED)
    assert not _errors(caplog)
    assert valid.startswith(b"HTTP/1.1 200") and valid.endswith(b"home")


def test_the_proxy_survives_fuzzed_heads(caplog):
    caplog.set_level(logging.INFO, logger="giraffe_agent.envs.proxy")
    heads = [*mutations(150, seed=2), b"GET http://127.0.0.1/ HTTP/1.1\r\nX: " + b"a" * (1 << 20) + b"\r\n\r\n"]
    replies, valid = asyncio.run(_fuzz_session(heads))
    unclean = [(head[:80], reply[:40]) for head, reply in zip(heads, replies) if not _clean(reply)]
    assert unclean == []
    assert replies[-1].startswith(b"HTTP/1.1 431")  # a head over the 1 MiB limit
    assert sum(r.startswith(b"HTTP/1.1 403") for r in replies) > 10  # parsed, then refused by the allowlist
    assert not _errors(caplog)
    assert valid.startswith(b"HTTP/1.1 200") and valid.endswith(b"home")


def test_control_the_fuzz_catches_the_old_parser(caplog, monkeypatch):
    """With the parsing safeguard replaced by the old code, the same test sees the crash."""
    def old_parse(head: bytes) -> ProxyRequest:
        request_line, _, _ = head[:-4].partition(b"\r\n")
        fields = request_line.decode("latin-1").split(" ")
        if len(fields) != 3:
            raise BadRequest("malformed request line")
        method, target, version = fields
        try:
            parts = urlsplit(target)
            host, port = parts.hostname, parts.port or 80
        except ValueError:
            host, port = None, 0
        if parts.scheme.lower() != "http" or not host:  # UnboundLocalError when urlsplit raised
            raise BadRequest("not http")
        return ProxyRequest(method, target, version, host, port, parts.path or "/", ())

    monkeypatch.setattr(proxy_module, "parse_head", old_parse)
    caplog.set_level(logging.INFO, logger="giraffe_agent.envs.proxy")
    replies, valid = asyncio.run(_fuzz_session([MALFORMED[0]]))
    assert replies == [b""] and any(r.exc_info and r.exc_info[0] is UnboundLocalError for r in _errors(caplog))
    assert valid.startswith(b"HTTP/1.1 200")  # the catch-all kept the proxy serving
