"""``giraffe serve`` image sources: one local folder with one refusal, and guarded remote URLs.

The attacks: reading files outside the folder (absolute paths, ``..``, symlinks, ``file://``) and
learning which files exist from the errors; making the server fetch loopback URLs directly, by a
redirect from an allowed host, by a name that resolves to loopback, and by DNS rebinding between
the check and the connection. Controls show each succeeds where the guard is lifted.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from giraffe_core.engine import ServerConfig, create_app
from giraffe_core.engine.server_sources import LOCAL_REFUSED, address_is_public
from giraffe_core.samples import screenshot

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from test_server_support import LoopbackServer, chat_body, encode, image_message, openai_error  # noqa: E402


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode(screenshot(224, 168, title="Files", seed=6))


def _post(http: httpx.Client, srv: LoopbackServer, url: str) -> httpx.Response:
    return http.post(f"{srv.url}/v1/chat/completions", json=chat_body(image_message(url)))


# --------------------------------------------------------------------------------------------------
# local paths
# --------------------------------------------------------------------------------------------------


@pytest.fixture()
def folders(tmp_path, png):
    """``allowed/`` with an image, a symlink out and a subfolder; ``secret/`` beside it with an image."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    (allowed / "sub").mkdir(parents=True)
    secret.mkdir()
    (allowed / "screen.png").write_bytes(png)
    (secret / "key.png").write_bytes(png)
    (allowed / "link.png").symlink_to(secret / "key.png")
    (allowed / "dirlink").symlink_to(secret, target_is_directory=True)
    return allowed, secret


def test_local_paths_are_refused_by_default_with_one_error(tiny_engine, http, folders):
    _, secret = folders
    srv = LoopbackServer(create_app(tiny_engine))
    try:
        existing = _post(http, srv, str(secret / "key.png"))
        missing = _post(http, srv, str(secret / "nothing-here.png"))
    finally:
        srv.stop()
    assert existing.status_code == missing.status_code == 400
    assert existing.json() == missing.json()  # no oracle: an existing file reads like a missing one
    error = openai_error(existing)
    assert error["code"] == "local_image_refused" and LOCAL_REFUSED in error["message"]


def test_only_the_image_folder_is_read_and_every_refusal_is_identical(tiny_engine, http, folders):
    allowed, secret = folders
    srv = LoopbackServer(create_app(tiny_engine, config=ServerConfig(local_image_dir=allowed)))
    attacks = [
        str(secret / "key.png"),                          # an absolute path outside
        str(allowed / ".." / "secret" / "key.png"),       # .. out of the folder
        "../secret/key.png",                              # relative, out of the folder
        str(allowed / "link.png"),                        # a symlink inside pointing outside
        "dirlink/key.png",                                # through a symlinked folder
        (secret / "key.png").as_uri(),                    # file:// outside
        "file://otherhost" + str(allowed / "screen.png"),  # file:// naming another host
        str(allowed / "missing.png"),                     # missing inside
        str(allowed / "sub"),                             # a folder, not a file
        "/etc/passwd",                                    # a system file
        "/dev/zero",                                      # a device
        str(allowed / "screen.png") + "\x00.png",         # a NUL byte
    ]
    try:
        answers = [_post(http, srv, url) for url in attacks]
        inside = [_post(http, srv, url) for url in (str(allowed / "screen.png"), "screen.png",
                                                   (allowed / "screen.png").as_uri())]
    finally:
        srv.stop()
    assert [a.status_code for a in answers] == [400] * len(attacks)
    assert len({a.text for a in answers}) == 1, {a.text for a in answers}  # byte-identical refusals
    assert openai_error(answers[0])["code"] == "local_image_refused"
    assert [r.status_code for r in inside] == [200] * 3  # control: the folder itself is served


def test_a_local_file_over_the_byte_limit_is_413(tiny_engine, http, folders, png):
    allowed, _ = folders
    config = ServerConfig(local_image_dir=allowed, max_image_bytes=len(png) - 1)
    srv = LoopbackServer(create_app(tiny_engine, config=config))
    try:
        response = _post(http, srv, "screen.png")
    finally:
        srv.stop()
    assert response.status_code == 413 and openai_error(response)["code"] == "image_too_large"


def test_the_image_folder_must_exist():
    with pytest.raises(ValueError, match="not a folder"):
        ServerConfig(local_image_dir="/no/such/folder")


# --------------------------------------------------------------------------------------------------
# remote URLs: a loopback image host, and a "public" one that redirects
# --------------------------------------------------------------------------------------------------


class _Host(ThreadingHTTPServer):
    """A loopback HTTP server: ``/img.png`` serves ``payload``; ``/go`` redirects to ``target``;
    ``/loop`` redirects to itself. Every request's path and Host header are kept in ``hits``."""

    daemon_threads = True

    def __init__(self, address: str, payload: bytes) -> None:
        self.payload, self.target, self.hits = payload, "", []
        self.lock = threading.Lock()
        super().__init__((address, 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://{address}:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join()


class _Handler(BaseHTTPRequestHandler):
    server: _Host

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits.append((self.path, self.headers.get("Host")))
        if self.path in ("/go", "/loop"):
            self.send_response(302)
            self.send_header("Location", self.server.target if self.path == "/go" else "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/img.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(self.server.payload)))
            self.end_headers()
            self.wfile.write(self.server.payload)
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def hosts(png) -> Iterator[tuple[_Host, _Host]]:
    """``outer`` on 127.0.0.2 (treated as public by the tests' allowlist) and ``inner`` on 127.0.0.1."""
    outer, inner = _Host("127.0.0.2", png), _Host("127.0.0.1", png)
    outer.target = f"{inner.base}/img.png"
    yield outer, inner
    outer.close()
    inner.close()


def _remote(tiny_engine, **settings) -> LoopbackServer:
    return LoopbackServer(create_app(tiny_engine, config=ServerConfig(allow_remote_urls=True, remote_timeout_s=10,
                                                                      **settings)))


def test_loopback_urls_are_refused_even_with_remote_urls_on(tiny_engine, http, hosts):
    _, inner = hosts
    port = inner.server_address[1]
    attacks = [f"{inner.base}/img.png", f"http://localhost:{port}/img.png", f"http://2130706433:{port}/img.png",
               f"http://[::ffff:127.0.0.1]:{port}/img.png", f"http://0x7f.1:{port}/img.png"]
    srv = _remote(tiny_engine)
    try:
        answers = [_post(http, srv, url) for url in attacks]
    finally:
        srv.stop()
    assert [a.status_code for a in answers] == [400] * len(attacks)
    assert {openai_error(a)["code"] for a in answers} == {"remote_address_refused"}
    assert inner.hits == []  # never connected
    lifted = _remote(tiny_engine, allow_private_addresses=True)  # control: the unsafe test switch
    try:
        assert _post(http, lifted, attacks[0]).status_code == 200
    finally:
        lifted.stop()
    assert inner.hits == [("/img.png", f"127.0.0.1:{port}")]


def test_a_redirect_to_loopback_is_refused_at_the_hop(tiny_engine, http, hosts):
    outer, inner = hosts
    srv = _remote(tiny_engine, remote_allowed_networks=("127.0.0.2/32",))
    try:
        direct = _post(http, srv, f"{outer.base}/img.png")  # the allowlisted host itself is fetched
        redirected = _post(http, srv, f"{outer.base}/go")
    finally:
        srv.stop()
    assert direct.status_code == 200
    assert redirected.status_code == 400 and openai_error(redirected)["code"] == "remote_address_refused"
    assert [path for path, _ in outer.hits] == ["/img.png", "/go"] and inner.hits == []
    lifted = _remote(tiny_engine, allow_private_addresses=True)  # control: without the guard it goes through
    try:
        assert _post(http, lifted, f"{outer.base}/go").status_code == 200
    finally:
        lifted.stop()
    assert [path for path, _ in inner.hits] == ["/img.png"]


def test_redirects_are_bounded(tiny_engine, http, hosts):
    outer, _ = hosts
    srv = _remote(tiny_engine, allow_private_addresses=True, remote_max_redirects=2)
    try:
        looping = _post(http, srv, f"{outer.base}/loop")
    finally:
        srv.stop()
    assert looping.status_code == 400 and openai_error(looping)["code"] == "image_fetch_failed"
    assert len(outer.hits) == 3  # the first request and two redirects


def test_a_remote_image_over_the_byte_limit_is_413(tiny_engine, http, hosts, png):
    outer, _ = hosts
    srv = _remote(tiny_engine, allow_private_addresses=True, max_image_bytes=len(png) - 1)
    try:
        response = _post(http, srv, f"{outer.base}/img.png")
    finally:
        srv.stop()
    assert response.status_code == 413 and openai_error(response)["code"] == "image_too_large"


def test_the_connection_goes_to_the_checked_address_not_a_rebound_one(tiny_engine, http, hosts, monkeypatch):
    outer, inner = hosts
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):  # public (allowlisted) the first time, loopback after
        if host != "images.rebind.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = "127.0.0.2" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    srv = _remote(tiny_engine, remote_allowed_networks=("127.0.0.2/32",))
    url = f"http://images.rebind.test:{outer.server_address[1]}/img.png"
    try:
        response = _post(http, srv, url)
    finally:
        srv.stop()
    assert response.status_code == 200, response.text[:300]
    assert lookups == ["images.rebind.test"]  # resolved once, by the check; the connection did not ask again
    assert outer.hits == [("/img.png", f"images.rebind.test:{outer.server_address[1]}")] and inner.hits == []
    srv = _remote(tiny_engine, remote_allowed_networks=("127.0.0.2/32",))
    try:  # control: the same name, now resolving to loopback at the check, is refused
        assert _post(http, srv, url).status_code == 400
    finally:
        srv.stop()


@pytest.mark.parametrize("address,public", [
    ("8.8.8.8", True), ("1.1.1.1", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("127.8.9.10", False), ("10.1.2.3", False), ("172.16.0.1", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("239.255.255.250", False), ("240.0.0.1", False), ("255.255.255.255", False),
    ("::1", False), ("::", False), ("fe80::1", False), ("fc00::1", False), ("ff02::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("::ffff:169.254.169.254", False),
    ("2002:7f00:1::", False), ("64:ff9b::7f00:1", False), ("64:ff9b::a00:1", False), ("2001:db8::1", False),
])
def test_address_is_public(address, public):
    assert address_is_public(ipaddress.ip_address(address)) is public
