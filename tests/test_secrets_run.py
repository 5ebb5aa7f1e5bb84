"""A whole agent run with a secret, end to end: Chromium, the loop, OpenAIBackend, the run directory.

The attack: a secret with ``~ +&%"'``, a newline and non-ASCII text is typed into a text field,
a password field and a textarea, sent by a form post (application/x-www-form-urlencoded) and by
fetch (a JSON body) to a loopback site whose next page echoes it in its URL, its title and its
text (decoded, form-encoded and as JSON), and the model itself echoes it in its replies (a
malformed one, quoted back cut short, and its answer). It must appear, in no encoding of
``tests/test_secrets_redaction.py`` (raw, quote, quote_plus, WHATWG form, lower-case hex, JSON with
and without ensure_ascii, HTML, their combinations; and cut before an ellipsis), in any file of
the run directory (PNG text chunks included) or any request body the OpenAI-compatible endpoint
received, and the field boxes of every stored frame are the solid mask. References: the site's
own record of what it received (the attack really happened), the reference encoders, the page
layout (CSS px). The control runs the same episode with redaction and masking switched off and
finds the secret on disk, on the wire and in the pixels.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from browser_fixtures import requires_browser
from PIL import Image
from test_secrets_loop import Unredacted, leaks
from test_secrets_masking import has_glyphs, is_fill, region
from test_secrets_redaction import SECRET, forms

from giraffe_agent.safety import Secrets

pytest.importorskip("openai", reason="openai is not installed: pip install -e '.[agent]'")
pytestmark = [requires_browser, pytest.mark.slow]

VIEWPORT = (640, 400)
LOGIN = """<!doctype html><meta charset="utf-8"><title>Sign in</title>
<body style="margin:0;font:18px sans-serif">
<form id="f" method="post" action="/submit" enctype="application/x-www-form-urlencoded">
  <input name="t" style="position:absolute;left:20px;top:20px;width:280px;height:32px">
  <input name="p" type="password" style="position:absolute;left:20px;top:70px;width:280px;height:32px">
  <textarea name="a" style="position:absolute;left:20px;top:120px;width:280px;height:60px"></textarea>
  <button type="button" onclick="document.getElementById('f').submit()"
    style="position:absolute;left:20px;top:200px;width:120px;height:32px">Sign in</button>
</form>"""
DONE = """<!doctype html><meta charset="utf-8"><title>{query}</title>
<body style="margin:0;font:16px sans-serif">
<button onclick="send()" style="position:absolute;left:20px;top:10px;width:160px;height:32px">Send JSON</button>
<div id="echo" style="position:absolute;left:20px;top:60px">Signed in as {user}</div>
<pre id="raw" style="position:absolute;left:20px;top:100px;width:600px;white-space:pre-wrap;margin:0">{query}</pre>
<pre id="out" style="position:absolute;left:20px;top:220px;width:600px;white-space:pre-wrap;margin:0"></pre>
<script>
async function send() {{
  const q = new URLSearchParams(location.search);
  const r = await fetch('/api', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},
                                  body: JSON.stringify({{t: q.get('t'), p: q.get('p'), a: q.get('a')}})}});
  const text = await r.text();
  document.getElementById('out').textContent = text;
  document.title = text;
}}
</script>"""
#: the fields as laid out (CSS px) and where the model clicks them (0-1000 of the viewport)
FIELDS = {"t": (20, 20, 280, 32), "p": (20, 70, 280, 32), "a": (20, 120, 280, 60)}


def norm(x: float, y: float) -> tuple[int, int]:
    return round(x / VIEWPORT[0] * 1000), round(y / VIEWPORT[1] * 1000)


def type_into(field: str) -> str:
    x, y, w, h = FIELDS[field]
    nx, ny = norm(x + w / 2, y + h / 2)
    return json.dumps({"action": "type", "text": "{{secret:PW}}", "x": nx, "y": ny})


def click(x: float, y: float) -> str:
    nx, ny = norm(x, y)
    return json.dumps({"action": "click", "x": nx, "y": ny})


REPLIES = [
    type_into("t"), type_into("p"), type_into("a"),
    click(80, 216),   # Sign in: the form post
    click(100, 26),   # Send JSON: the fetch
    json.dumps({"action": "unknown-action-name-" + SECRET}),  # malformed: quoted back cut short
    f"I typed {SECRET}.\n" + json.dumps({"action": "done", "text": f"signed in with {SECRET}"}),
]


class Server:
    """A threaded HTTP server on 127.0.0.1 that records (method, path, body) and answers with
    ``route(method, path, body) -> (status, headers, body)``, one request per connection."""

    def __init__(self, route: Callable[[str, str, bytes], tuple[int, dict[str, str], bytes]]) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append((self.command, self.path, body))
                status, headers, payload = route(self.command, self.path, body)
                self.send_response(status)
                self.close_connection = True  # one request per connection: no handler thread outlives close()
                for key, value in {"Content-Length": str(len(payload)), "Cache-Control": "no-store",
                                   "Connection": "close", **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = False  # server_close() joins the handler threads
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def site_route(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    html_type = {"Content-Type": "text/html; charset=utf-8"}
    parts = urlsplit(path)
    if method == "GET" and parts.path == "/":
        return 200, html_type, LOGIN.encode()
    if method == "POST" and parts.path == "/submit":  # echo the form-encoded body in the next URL
        return 303, {"Location": "/done?" + body.decode("ascii")}, b""
    if method == "GET" and parts.path == "/done":
        values = parse_qs(parts.query, keep_blank_values=True)
        page = DONE.format(query=html.escape(parts.query), user=html.escape(values.get("t", [""])[0]))
        return 200, html_type, page.encode()
    if method == "POST" and parts.path == "/api":
        return 200, {"Content-Type": "application/json"}, json.dumps({"received": json.loads(body)}).encode()
    return 404, html_type, b"not found"


class FakeModel:
    """The OpenAI-compatible endpoint: answers chat completions with the next scripted reply."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.server = Server(self.route)

    def route(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method != "POST" or not path.endswith("/chat/completions") or not self.replies:
            return 404, {"Content-Type": "application/json"}, b'{"error": {"message": "no"}}'
        answer = {"id": "chatcmpl-0", "object": "chat.completion", "created": 0, "model": "fake",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": self.replies.pop(0)}}]}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    @property
    def bodies(self) -> list[bytes]:
        return [body for method, _, body in self.server.requests if method == "POST"]


def run_agent(tmp_path: Path, secrets: Secrets, *, mask: bool, name: str):
    from giraffe_agent.backends import OpenAIBackend
    from giraffe_agent.envs.browser import BrowserConfig, BrowserEnv
    from giraffe_agent.loop import Agent, AgentConfig
    from giraffe_core.memory import MemoryConfig

    site, model = Server(site_route), FakeModel(REPLIES)
    try:
        env = BrowserEnv(site.url + "/", BrowserConfig(viewport_css=VIEWPORT), secrets=secrets, mask_secrets=mask)
        config = AgentConfig(write_report=True, memory=MemoryConfig(budget_tokens=16384, reserve_tokens=256,
                                                                    full_max_tokens=256, low_max_tokens=64))
        agent = Agent("Sign in.", env, OpenAIBackend(model.server.url + "/v1", "fake", max_retries=0, timeout_s=60),
                      out_dir=tmp_path / name, config=config, secrets=secrets, approve=lambda action, obs: True)
        result = agent.run()
    finally:
        site.close()
        model.server.close()
    return result, site.requests, model.bodies


def png_chunks(data: bytes) -> list[bytes]:
    """Every chunk of a PNG other than its pixels and header, decompressed where compressed."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"zTXt":
            key, _, rest = chunk.partition(b"\0")
            chunk = key + b"\0" + zlib.decompress(rest[1:])
        elif kind == b"iTXt" and chunk.split(b"\0", 2)[1][:1] == b"\x01":
            head, _, rest = chunk.partition(b"\0")
            chunk = head + b"\0" + zlib.decompress(rest[2:].split(b"\0", 2)[2])
        if kind not in (b"IHDR", b"IDAT", b"IEND"):
            out.append(chunk)
        pos += 12 + length
    return out


def leaks_in_bytes(data: bytes) -> list[str]:
    found = [name for name, form in forms(SECRET).items() if form.encode("utf-8") in data]
    return found + leaks(data.decode("utf-8", "replace"))


def strings(value) -> list[str]:
    """Every string in a JSON value (image data URLs left out: their pixels are checked on disk)."""
    if isinstance(value, str):
        return [] if value.startswith("data:image/") else [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_a_secret_typed_posted_fetched_and_echoed_leaks_nowhere(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="giraffe_agent")
    result, received, bodies = run_agent(tmp_path, Secrets(PW=SECRET), mask=True, name="run")
    assert result.status == "done", result.error
    # the attack happened: the site received the secret by form post and by fetch
    posted = parse_qs(next(body for method, path, body in received if path == "/submit").decode(), True)
    one_line = SECRET.replace("\n", "")
    assert posted == {"t": [one_line], "p": [one_line], "a": [SECRET.replace("\n", "\r\n")]}
    fetched = json.loads(next(body for method, path, body in received if path == "/api"))
    assert fetched == {"t": one_line, "p": one_line, "a": SECRET.replace("\n", "\r\n")}
    # on the wire: every request the model endpoint received
    assert len(bodies) == len(REPLIES)
    for body in bodies:
        assert not leaks_in_bytes(body)
        for text in strings(json.loads(body)):
            assert not leaks(text), (leaks(text), text)
    # on disk: every file of the run, PNG text chunks included
    files = [p for p in result.run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"meta.json", "trajectory.jsonl", "result.json", "report.html"}
    for path in files:
        data = path.read_bytes()
        assert not [name for name, form in forms(SECRET).items() if form.encode("utf-8") in data], path.name
        for text in png_chunks(data) if path.suffix == ".png" else [data]:
            assert not leaks_in_bytes(text), (path.name, leaks_in_bytes(text))
    # on screen: what the result and the logs say
    assert not leaks(f"{result.answer} {result.error} {result.info}") and "{{secret:PW}}" in result.answer
    assert not leaks("\n".join(r.getMessage() for r in caplog.records))
    # in the pixels: each field is the solid mask in every frame after a secret was typed into it
    frames = sorted((result.run_dir / "frames").glob("f*.png"))
    assert len(frames) >= 6
    for index, field in enumerate("tpa", start=1):
        for frame in frames[index:4]:
            with Image.open(frame) as image:
                assert is_fill(region(image, FIELDS[field], 1.0)), (frame.name, field)
    with Image.open(frames[4]) as done_page:  # the echoed text on the next page is masked too
        assert not has_glyphs(region(done_page, (20, 60, 600, 24), 1.0))


def test_control_without_redaction_or_masking_the_same_run_leaks(tmp_path):
    result, _, bodies = run_agent(tmp_path, Unredacted(PW=SECRET), mask=False, name="control")
    assert result.status == "done", result.error
    assert any(leaks_in_bytes(body) for body in bodies)
    trajectory = (result.run_dir / "trajectory.jsonl").read_bytes()
    report = (result.run_dir / "report.html").read_bytes()
    assert leaks_in_bytes(trajectory) and leaks_in_bytes(report)
    frames = sorted((result.run_dir / "frames").glob("f*.png"))
    for index, field in enumerate("tpa", start=1):
        with Image.open(frames[3]) as image:
            assert has_glyphs(region(image, FIELDS[field], 1.0)), (field, index)
    with Image.open(frames[4]) as done_page:
        assert has_glyphs(region(done_page, (20, 60, 600, 24), 1.0))
