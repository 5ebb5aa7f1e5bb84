"""``giraffe serve``: who may drive the server (Host check, JSON only, CORS, API key, bind refusal).

The attacks are what a web page the user visits can send to a local server: a "simple" cross-site
POST with ``text/plain`` (no CORS preflight), requests through a host name re-pointed at 127.0.0.1
(DNS rebinding: the Host header carries the attacker's name), cross-origin reads; and what anyone
on the network can send to a server bound beyond loopback. Controls show the request the check
refuses succeeds once the one thing it objects to is fixed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from giraffe_cli import app as cli_app
from giraffe_core.engine import ServerConfig, create_app, serve
from giraffe_core.engine.server_security import check_bind
from giraffe_core.errors import ConfigError

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from test_server_support import LoopbackServer, chat_body, openai_error  # noqa: E402

KEY = "gk-test-3f9c1d7e"
HI = chat_body([{"role": "user", "content": "hi"}])


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def server(tiny_engine) -> Iterator[LoopbackServer]:
    srv = LoopbackServer(create_app(tiny_engine))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keyed(tiny_engine) -> Iterator[LoopbackServer]:
    srv = LoopbackServer(create_app(tiny_engine, config=ServerConfig(api_key=KEY)))
    yield srv
    srv.stop()


def _chat(http: httpx.Client, srv: LoopbackServer, **headers: str) -> httpx.Response:
    merged = {"content-type": "application/json", **headers}
    return http.post(f"{srv.url}/v1/chat/completions", content=json.dumps(HI), headers=merged)


# --------------------------------------------------------------------------------------------------
# content type (cross-site "simple" requests)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/json-seq", None])
def test_a_post_that_is_not_json_is_415(server, http, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    response = http.post(f"{server.url}/v1/chat/completions", content=json.dumps(HI).encode(), headers=headers)
    assert response.status_code == 415, response.text
    assert openai_error(response)["code"] == "unsupported_media_type"


def test_json_with_a_charset_is_accepted(server, http):
    assert _chat(http, server, **{"content-type": "Application/JSON; charset=utf-8"}).status_code == 200


# --------------------------------------------------------------------------------------------------
# Host header (DNS rebinding)
# --------------------------------------------------------------------------------------------------


def test_a_foreign_host_header_is_421_on_every_route(server, http):
    port = server.port
    for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1:{port + 1}", f"localhost.:{port}",
                 f"127.0.0.1.attacker.example:{port}", f"[::2]:{port}", "", "a b"):
        for method, path in (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
            response = http.request(method, f"{server.url}{path}", json=HI if method == "POST" else None,
                                    headers={"Host": host})
            assert response.status_code == 421, (host, path, response.text)
            assert openai_error(response)["code"] == "invalid_host"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):  # control
        assert http.post(f"{server.url}/v1/chat/completions", json=HI, headers={"Host": host}).status_code == 200


def test_allowed_hosts_and_the_connections_own_address(tiny_engine, http):
    config = ServerConfig(allowed_hosts=("gpu-box", "proxy.lan:443"))
    srv = LoopbackServer(create_app(tiny_engine, config=config), host="127.0.0.2")
    try:
        def status(host: str) -> int:
            return http.get(f"{srv.url}/v1/models", headers={"Host": host}).status_code

        assert status(f"127.0.0.2:{srv.port}") == 200  # the address the connection came in on
        assert status(f"gpu-box:{srv.port}") == status("gpu-box:9") == status("GPU-BOX") == 200
        assert status("proxy.lan:443") == 200 and status("proxy.lan:80") == 421
        assert status(f"127.0.0.3:{srv.port}") == status(f"evil.example:{srv.port}") == 421
    finally:
        srv.stop()
    anything = LoopbackServer(create_app(tiny_engine, config=ServerConfig(allowed_hosts=("*",))))
    try:
        assert http.get(f"{anything.url}/v1/models", headers={"Host": "evil.example"}).status_code == 200
    finally:
        anything.stop()


# --------------------------------------------------------------------------------------------------
# CORS
# --------------------------------------------------------------------------------------------------


def _preflight(http: httpx.Client, srv: LoopbackServer, origin: str) -> httpx.Response:
    return http.options(f"{srv.url}/v1/chat/completions", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"})


def test_no_cors_headers_unless_asked(server, tiny_engine, http):
    page = "http://attacker.example"
    preflight = _preflight(http, server, page)
    read = http.get(f"{server.url}/v1/models", headers={"Origin": page})
    for response in (preflight, read):
        assert not any(h.lower().startswith("access-control-") for h in response.headers), response.headers
    assert preflight.status_code == 405 and openai_error(preflight)["code"] == "method_not_allowed"
    app_origin = "http://localhost:3000"
    srv = LoopbackServer(create_app(tiny_engine, config=ServerConfig(cors_allowed_origins=(app_origin,))))
    try:
        granted = _preflight(http, srv, app_origin)  # control: the origin the user listed
        refused = _preflight(http, srv, page)
        read = http.get(f"{srv.url}/v1/models", headers={"Origin": app_origin})
    finally:
        srv.stop()
    assert granted.status_code == 200 and granted.headers["access-control-allow-origin"] == app_origin
    assert "access-control-allow-origin" not in refused.headers and refused.status_code == 400
    assert read.headers["access-control-allow-origin"] == app_origin


# --------------------------------------------------------------------------------------------------
# API key
# --------------------------------------------------------------------------------------------------


def test_without_a_key_the_openai_client_works_with_any_key(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    reply = client.chat.completions.create(model="tiny", messages=HI["messages"], max_tokens=2)
    assert reply.choices[0].message.role == "assistant"


def test_with_a_key_every_route_but_health_needs_it(keyed, http):
    wrong = [{}, {"Authorization": "Bearer unused"}, {"Authorization": f"Bearer {KEY}x"},
             {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}, {"Authorization": f"Bearer {KEY[:-1]}"}]
    for headers in wrong:
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/nothing")):
            response = http.request(method, f"{keyed.url}{path}", json=HI if method == "POST" else None,
                                    headers=headers)
            assert response.status_code == 401, (headers, path)
            assert openai_error(response)["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"
            assert KEY not in response.text and KEY[:-1] not in response.text
    assert http.get(f"{keyed.url}/health").status_code == 200  # open, for load balancers
    right = {"Authorization": f"Bearer {KEY}"}  # control
    assert http.get(f"{keyed.url}/v1/models", headers=right).status_code == 200
    assert _chat(http, keyed, **{"Authorization": f"bearer  {KEY}"}).status_code == 200


def test_the_openai_client_with_the_key(keyed):
    good = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    assert good.chat.completions.create(model="tiny", messages=HI["messages"], max_tokens=2).choices
    bad = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"


def test_the_key_is_secret_in_the_config():
    config = ServerConfig(api_key=KEY)
    assert KEY not in repr(config) and KEY not in str(config)
    with pytest.raises(ValueError) as info:
        ServerConfig(api_key="has a space " + KEY)
    assert KEY not in str(info.value)


# --------------------------------------------------------------------------------------------------
# binding beyond loopback
# --------------------------------------------------------------------------------------------------


def test_a_remote_bind_without_a_key_is_refused(tiny_engine):
    for host in ("0.0.0.0", "::", "192.168.1.20", "gpu-box.lan"):
        with pytest.raises(ConfigError, match="without an API key"):
            check_bind(host, ServerConfig())
        with pytest.raises(ConfigError):  # serve() refuses before binding anything
            serve(tiny_engine, host=host, port=1)
        check_bind(host, ServerConfig(api_key=KEY))  # controls: a key, or the explicit flag
        check_bind(host, ServerConfig(allow_unauthenticated_remote=True))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, ServerConfig())


def test_cli_refuses_a_remote_bind_without_a_key_and_never_prints_the_key():
    runner = CliRunner()
    refused = runner.invoke(cli_app, ["serve", "--host", "0.0.0.0", "--port", "1"], env={"GIRAFFE_API_KEY": ""})
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    bad_key = "bad key " + KEY
    invalid = runner.invoke(cli_app, ["serve", "--port", "1"], env={"GIRAFFE_API_KEY": bad_key})
    assert invalid.exit_code == 2 and KEY not in invalid.output
    shown = runner.invoke(cli_app, ["serve", "--help"], env={"GIRAFFE_API_KEY": KEY, "COLUMNS": "250"})
    assert shown.exit_code == 0 and "GIRAFFE_API_KEY" in shown.output and KEY not in shown.output


@pytest.mark.slow
def test_cli_serve_with_the_key_from_the_environment(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from giraffe_cli import main; main()", "serve", "--port", str(port),
             "--log-level", "debug"], stdout=out, stderr=subprocess.STDOUT, env={**_env(), "GIRAFFE_API_KEY": KEY})
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=30) as http:
            deadline = time.monotonic() + 120
            while True:
                try:
                    assert http.get(f"{url}/health").status_code == 200
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "giraffe serve did not come up"
                    time.sleep(0.2)
            assert http.get(f"{url}/v1/models").status_code == 401
            assert http.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)
        assert client.chat.completions.create(model="tiny", messages=HI["messages"], max_tokens=2).choices
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert KEY not in log.read_text()  # not in the banner, the config logged at startup, or any debug line


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "GIRAFFE_API_KEY"}
