"""Safety: the domain allowlist at the network layer (real Chromium, two loopback servers that
count their hits), file:// and downloads, secrets (filled when typing, redacted everywhere else),
approval rules and budgets."""

from __future__ import annotations

import asyncio
import logging

import pytest
from browser_fixtures import LoopbackServer, Reply, requires_browser
from pydantic import ValidationError

from giraffe_agent.actions import Click, Done, Goto, KeyPress, Type, ZoomBack
from giraffe_agent.coords import CoordinateTransform
from giraffe_agent.masking import MASK_COLOR
from giraffe_agent.safety import (
    Budget,
    BudgetExceededError,
    HostPattern,
    SafetyError,
    SafetyPolicy,
    SecretError,
    Secrets,
)
from giraffe_core.errors import GiraffeError

# ------------------------------------------------------------------ allowlist rules (no browser)


@pytest.mark.parametrize(("pattern", "host", "port", "expected"), [
    ("example.com", "example.com", 443, True),
    ("example.com", "example.com", 8080, True),          # no port in the pattern: any port
    ("example.com", "www.example.com", 443, False),      # not its subdomains
    ("example.com", "badexample.com", 443, False),
    ("Example.COM", "example.com", 80, True),            # case-insensitive
    ("*.example.com", "a.example.com", 443, True),
    ("*.example.com", "a.b.example.com", 443, True),
    ("*.example.com", "example.com", 443, False),        # the apex needs its own entry
    ("*.example.com", "evilexample.com", 443, False),
    ("127.0.0.1:8000", "127.0.0.1", 8000, True),
    ("127.0.0.1:8000", "127.0.0.1", 8001, False),
    ("[::1]:8000", "::1", 8000, True),
    ("*", "anything.test", 1234, True),
])
def test_host_patterns(pattern, host, port, expected):
    assert HostPattern.parse(pattern).matches(host, port) is expected


@pytest.mark.parametrize("bad", ["", "http://example.com", "example.com/path", "a:b:c", "host:99999",
                                 "ex*ample.com", "[::1", "host:port"])
def test_bad_patterns_are_rejected_by_the_policy(bad):
    with pytest.raises(ValidationError):
        SafetyPolicy(allowed_domains=[bad])


def test_policy_is_strict_and_normalizes_patterns():
    with pytest.raises(ValidationError):
        SafetyPolicy(allowed_domain=["x.com"])  # typo: extra fields are forbidden
    with pytest.raises(ValidationError):
        SafetyPolicy(risky_actions={"clik"})
    assert SafetyPolicy(allowed_domains=[" Shop.Example.com ", "*.CDN.example:443"]).allowed_domains == (
        "shop.example.com", "*.cdn.example:443")
    policy = SafetyPolicy(allowed_domains=["a.test"], risky_actions={"secret", "goto"}, max_steps=None)
    assert SafetyPolicy.model_validate_json(policy.model_dump_json()) == policy  # stored with trajectories


def test_empty_allowlist_means_the_start_urls_host():
    policy = SafetyPolicy()
    guard = policy.url_guard("http://127.0.0.1:8000/start")  # explicit port: that port only
    assert guard.allows("http://127.0.0.1:8000/other?x=1")
    assert guard.allows("ws://127.0.0.1:8000/socket")
    assert guard.check("http://127.0.0.1:8001/") == "not in allowed domains"
    assert not guard.allows("http://localhost:8000/")
    guard = policy.url_guard("https://shop.example/")  # no port: the host on any port
    assert guard.allows("https://shop.example/cart") and guard.allows("http://shop.example:8443/")
    assert not guard.allows("https://cdn.shop.example/x.js")
    assert policy.url_guard("file:///tmp/x.html").check("http://127.0.0.1/") == "not in allowed domains"


def test_explicit_allowlist_and_default_ports():
    guard = SafetyPolicy(allowed_domains=["example.com:443", "*.example.org"]).url_guard("https://example.com/")
    assert guard.allows("https://example.com/a")            # https default port 443
    assert not guard.allows("http://example.com/a")         # port 80
    assert guard.allows("wss://live.example.org/feed")
    assert not guard.allows("https://example.org/")


def test_schemes():
    guard = SafetyPolicy().url_guard("http://127.0.0.1:8000/")
    assert guard.check("file:///etc/passwd") == "file:// URLs are not allowed"
    assert SafetyPolicy(allow_file_urls=True).url_guard("http://127.0.0.1:8000/").allows("file:///tmp/x")
    assert guard.allows("data:text/html,hi") and guard.allows("blob:http://127.0.0.1:8000/uuid")
    assert guard.allows("about:blank") and not guard.allows("about:version")
    assert guard.check("javascript:alert(1)") == "javascript: URLs are not allowed"
    assert guard.check("chrome://settings") == "chrome: URLs are not allowed"
    assert guard.check("http://127.0.0.1:99999/") == "malformed URL"


# ------------------------------------------------------------------ secrets (no browser)

SECRET = "hunter2 s3cr3t!"


def test_fill_replaces_references_and_unknown_names_raise():
    secrets = Secrets({"PASSWORD": SECRET}, USER="alice")
    assert secrets.fill("{{secret:USER}} / {{ secret:PASSWORD }}") == f"alice / {SECRET}"
    assert secrets.fill("no references") == "no references"
    with pytest.raises(SecretError) as info:
        secrets.fill("{{secret:PIN}}")
    message = str(info.value)
    assert "PIN" in message and "PASSWORD" in message and "USER" in message and SECRET not in message
    assert isinstance(info.value, GiraffeError) and isinstance(info.value, LookupError)
    assert Secrets.references("a {{secret:A}} b {{secret:B.c-d}}") == ["A", "B.c-d"]


def test_redact_strings_and_nested_structures():
    secrets = Secrets(PASSWORD=SECRET, TOKEN="tok-123")
    record = {
        "action": {"text": f"pw is {SECRET}", "tags": [SECRET, "plain", ("tok-123", 7)]},
        "url": "http://127.0.0.1/echo?pw=hunter2+s3cr3t%21",     # form-encoded
        "path": "/echo/hunter2%20s3cr3t%21",                       # percent-encoded
        f"key {SECRET}": None,
        "n": 3,
    }
    out = secrets.redact(record)
    assert out == {
        "action": {"text": "pw is {{secret:PASSWORD}}",
                   "tags": ["{{secret:PASSWORD}}", "plain", ("{{secret:TOKEN}}", 7)]},
        "url": "http://127.0.0.1/echo?pw={{secret:PASSWORD}}",
        "path": "/echo/{{secret:PASSWORD}}",
        "key {{secret:PASSWORD}}": None,
        "n": 3,
    }
    assert record["action"]["text"] == f"pw is {SECRET}"  # the input is not modified
    assert Secrets().redact(record) is record


def test_redact_prefers_the_longest_overlapping_secret():
    secrets = Secrets(SHORT="abc", LONG="abcdef")
    assert secrets.redact("abcdef abc") == "{{secret:LONG}} {{secret:SHORT}}"


def test_secrets_never_show_their_values():
    secrets = Secrets(PASSWORD=SECRET)
    assert SECRET not in repr(secrets) and "PASSWORD" in repr(secrets)
    assert secrets.names == ("PASSWORD",) and "PASSWORD" in secrets and len(secrets) == 1
    with pytest.raises(SecretError):
        Secrets(EMPTY="")
    with pytest.raises(SecretError):
        Secrets({"bad name": "x"})


def test_secrets_from_environment(monkeypatch):
    monkeypatch.setenv("SHOP_PASSWORD", SECRET)
    assert Secrets.from_env({"PASSWORD": "SHOP_PASSWORD"}).fill("{{secret:PASSWORD}}") == SECRET
    monkeypatch.delenv("SHOP_PASSWORD")
    with pytest.raises(SecretError, match="SHOP_PASSWORD"):
        Secrets.from_env({"PASSWORD": "SHOP_PASSWORD"})


# ------------------------------------------------------------------ approval and budgets (no browser)


def test_needs_approval_defaults_to_typing_secrets():
    policy, secrets = SafetyPolicy(), Secrets(PASSWORD=SECRET)
    assert policy.needs_approval(Type(text="{{secret:PASSWORD}}"), secrets)
    assert policy.needs_approval(Type(text=f"my password is {SECRET}"), secrets)  # the value verbatim
    assert not policy.needs_approval(Type(text="hello", submit=True), secrets)
    assert not policy.needs_approval(Click(x=1, y=1), secrets)
    assert not policy.needs_approval(Goto(url="http://evil.test/"))  # refused outright, not approved
    assert not policy.needs_approval(KeyPress(keys="Enter"))


def test_needs_approval_rules_are_configurable():
    policy = SafetyPolicy(risky_actions={"submit", "goto", "click"})
    assert policy.needs_approval(Type(text="q", submit=True))
    assert policy.needs_approval(KeyPress(keys="Enter")) and policy.needs_approval(KeyPress(keys="Control+Enter"))
    assert not policy.needs_approval(KeyPress(keys="Tab"))
    assert policy.needs_approval(Goto(url="http://127.0.0.1/")) and policy.needs_approval(Click(x=0, y=0))
    assert not policy.needs_approval(Type(text="{{secret:PASSWORD}}"))  # "secret" is not listed
    assert not policy.needs_approval(ZoomBack(step=0)) and not policy.needs_approval(Done())
    assert not SafetyPolicy(risky_actions=frozenset()).needs_approval(Type(text="{{secret:X}}"))


def test_budget_counts_steps_and_seconds():
    now = [100.0]
    budget = SafetyPolicy(max_steps=3, max_seconds=10).budget(clock=lambda: now[0])
    assert budget.exhausted() is None and budget.remaining_steps == 3 and budget.remaining_s == 10
    budget.record_step()
    budget.record_step()
    now[0] = 104.5
    assert budget.steps == 2 and budget.elapsed_s == 4.5 and budget.remaining_s == 5.5
    budget.check()
    budget.record_step()
    assert budget.exhausted() == "step budget used up (3 of 3 steps)"
    with pytest.raises(BudgetExceededError) as info:
        budget.check()
    assert isinstance(info.value, SafetyError) and isinstance(info.value, PermissionError)
    budget.restart()
    assert budget.steps == 0 and budget.exhausted() is None
    now[0] = 114.5
    assert budget.exhausted() == "time budget used up (10.0 s of 10 s)"
    unlimited = Budget()
    unlimited.record_step()
    assert unlimited.exhausted() is None and unlimited.remaining_steps is None and unlimited.remaining_s is None


# ------------------------------------------------------------------ the network layer (real Chromium)

#: image_px == viewport: image_px coordinates are CSS pixels
CSS = CoordinateTransform(viewport_css=(800, 600), image_px=(800, 600))
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0000003010100c9fe92ef0000000049454e44ae426082")


def mixed_page(b: LoopbackServer) -> str:
    """A page on server A whose every kind of subresource points at server B."""
    return f"""<!doctype html><title>Mixed</title>
<img id="own" src="/ok.png">
<img src="{b.url('/img.png')}">
<script src="{b.url('/s.js')}"></script>
<link rel="stylesheet" href="{b.url('/s.css')}">
<iframe src="{b.url('/frame.html')}" width="50" height="50"></iframe>
<img src="/redirect">
<script>
  fetch("{b.url('/api')}").catch(() => {{}});
  const xhr = new XMLHttpRequest(); xhr.open("GET", "{b.url('/xhr')}"); xhr.onerror = () => {{}}; xhr.send();
  navigator.sendBeacon("{b.url('/beacon')}", "x");
  try {{ const ws = new WebSocket("ws://127.0.0.1:{b.port}/ws"); ws.onerror = () => {{}}; }} catch (e) {{}}
</script>
<a id="out" href="{b.url('/page')}" style="position:absolute;left:0;top:300px;width:100px;height:30px">out</a>
<button id="pop" onclick="window.open('{b.url('/popup')}')"
  style="position:absolute;left:200px;top:300px;width:100px;height:30px">popup</button>"""


LOGIN = """<!doctype html><title>Login</title>
<form action="/echo" method="get">
  <input id="user" name="user" style="position:absolute;left:0;top:0;width:200px;height:30px">
  <input id="pw" name="pw" type="password" style="position:absolute;left:0;top:50px;width:200px;height:30px">
  <button style="position:absolute;left:0;top:100px">Sign in</button>
</form>"""

DOWNLOAD = """<!doctype html><title>Download</title>
<a id="dl" href="/report.csv" style="position:absolute;left:0;top:0;width:100px;height:30px">report</a>"""
CSV = "a,b\n1,2\n"


@pytest.fixture(scope="module")
def servers():
    b = LoopbackServer({"/img.png": Reply(PNG, content_type="image/png"), "/page": Reply("<title>B</title>")})
    a = LoopbackServer({
        "/": Reply("<title>A</title>home"),
        "/mixed": Reply(mixed_page(b)),
        "/ok.png": Reply(PNG, content_type="image/png"),
        "/redirect": Reply(status=302, headers={"Location": b.url("/landing")}),
        "/login": Reply(LOGIN),
        "/echo": lambda handler: Reply(f"<title>Echo {handler.path}</title>"),
        "/download": Reply(DOWNLOAD),
        "/report.csv": Reply(CSV, content_type="text/csv",
                             headers={"Content-Disposition": "attachment; filename=report.csv"}),
    })
    yield a, b
    a.close()
    b.close()


def _env(url, **policy):
    from giraffe_agent.envs.browser import BrowserConfig, SyncBrowserEnv

    download_dir = policy.pop("download_dir")
    env = SyncBrowserEnv(url, BrowserConfig(viewport_css=(800, 600), download_dir=download_dir),
                         SafetyPolicy(**policy), Secrets(PASSWORD=SECRET))
    env.start()
    return env


@pytest.fixture(scope="module")
def strict(servers, tmp_path_factory):
    """The default policy: only server A (the start URL's host and port)."""
    a, _ = servers
    downloads = tmp_path_factory.mktemp("strict-downloads")
    env = _env(a.url("/"), download_dir=downloads)
    yield env, downloads
    env.close()


@pytest.fixture(scope="module")
def permissive(servers, tmp_path_factory):
    """An explicit allowlist of A and B, file:// URLs and downloads allowed."""
    a, b = servers
    downloads = tmp_path_factory.mktemp("permissive-downloads")
    env = _env(a.url("/"), download_dir=downloads, allowed_domains=[f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"],
               allow_file_urls=True, allow_downloads=True)
    yield env, downloads
    env.close()


def _goto(env, url):
    result = env.act(Goto(url=url), CSS)
    assert result.ok, result.message
    return env.observe()


@requires_browser
def test_every_request_to_a_non_allowed_host_is_blocked_and_reported(strict, servers):
    env, _ = strict
    a, b = servers
    b.clear()
    a.clear()
    obs = _goto(env, a.url("/mixed"))
    assert b.hits == []  # not one request reached the other server: no img, script, css, iframe...
    assert "/ok.png" in a.paths() and "/redirect" in a.paths()  # the page's own resources load
    assert env.evaluate("() => document.getElementById('own').naturalWidth") == 1
    events = "\n".join(obs.events)
    for path in ("/img.png", "/s.js", "/s.css", "/frame.html", "/api", "/xhr", "/beacon"):
        assert f"blocked request to {b.url(path)} (not in allowed domains)" in events, path
    assert f"blocked redirect to {b.url('/landing')} (not in allowed domains)" in events
    assert f"blocked WebSocket to ws://127.0.0.1:{b.port}/ws (not in allowed domains)" in events
    # a link and a popup to B are blocked too
    assert env.act(Click(x=50, y=315, space="image_px"), CSS).ok
    obs = env.observe()
    assert f"blocked request to {b.url('/page')} (not in allowed domains)" in obs.events
    assert obs.url != b.url("/page")
    _goto(env, a.url("/mixed"))
    assert env.act(Click(x=250, y=315, space="image_px"), CSS).ok
    obs = env.observe()
    assert f"blocked request to {b.url('/popup')} (not in allowed domains)" in obs.events
    assert any("closed because its page is blocked" in e for e in obs.events)
    assert obs.url == a.url("/mixed")  # the blocked popup is gone: back on the page that opened it
    assert b.hits == []


@requires_browser
def test_the_same_page_reaches_hosts_that_are_allowed(permissive, servers):
    env, _ = permissive
    a, b = servers
    b.clear()
    obs = _goto(env, a.url("/mixed"))
    for path in ("/img.png", "/s.js", "/s.css", "/frame.html", "/api", "/xhr", "/beacon", "/landing", "/ws"):
        assert path in b.paths(), path
    assert not any("blocked" in e for e in obs.events)


@requires_browser
def test_goto_outside_the_allowlist_is_refused_before_any_request(strict, servers):
    env, _ = strict
    a, b = servers
    b.clear()
    for url in (b.url("/page"), "http://evil.test/x", "javascript:alert(1)"):
        result = env.act(Goto(url=url), CSS)
        assert not result.ok and "blocked" in result.message, result
    assert b.hits == []
    assert env.observe().url.startswith(a.origin)


@requires_browser
def test_start_url_must_pass_the_policy(servers, tmp_path):
    from giraffe_agent.envs.browser import SyncBrowserEnv

    a, b = servers
    page = tmp_path / "local.html"
    page.write_text("<title>Local</title>")
    with SyncBrowserEnv(page.as_uri()) as env, pytest.raises(SafetyError, match="file://"):
        env.start()
    policy = SafetyPolicy(allowed_domains=[f"127.0.0.1:{b.port}"])
    with SyncBrowserEnv(a.url("/"), safety=policy) as env, pytest.raises(SafetyError, match="not in allowed"):
        env.start()


@requires_browser
def test_file_urls_are_blocked_by_default_and_allowed_when_configured(strict, permissive, tmp_path):
    page = tmp_path / "local.html"
    page.write_text("<title>Local file</title>")
    env, _ = strict
    result = env.act(Goto(url=page.as_uri()), CSS)
    assert not result.ok and "file:// URLs are not allowed" in result.message
    env, _ = permissive
    obs = _goto(env, page.as_uri())
    assert obs.title == "Local file" and obs.url == page.as_uri()


@requires_browser
def test_downloads_are_refused_by_default_and_saved_when_allowed(strict, permissive, servers):
    a, _ = servers
    env, downloads = strict
    _goto(env, a.url("/download"))
    assert env.act(Click(x=20, y=10, space="image_px"), CSS).ok
    obs = env.observe()
    assert any(e.startswith("refused download of report.csv") and "downloads are off" in e for e in obs.events)
    assert env.downloads == [] and list(downloads.iterdir()) == []
    env, downloads = permissive
    _goto(env, a.url("/download"))
    assert env.act(Click(x=20, y=10, space="image_px"), CSS).ok
    obs = env.observe()
    assert "downloaded report.csv (8 bytes)" in obs.events
    assert env.downloads == [downloads / "report.csv"] and (downloads / "report.csv").read_text() == CSV


@requires_browser
def test_a_typed_secret_reaches_the_page_but_no_log_message_or_observation(strict, servers, caplog):
    a, _ = servers
    env, _ = strict
    _goto(env, a.url("/login"))
    caplog.set_level(logging.DEBUG)
    a.clear()
    results = [
        env.act(Type(text="alice", x=100, y=15, space="image_px"), CSS),
        env.act(Type(text="{{secret:PASSWORD}}", x=100, y=65, space="image_px"), CSS),
    ]
    assert env.evaluate("() => [user.value, pw.value]") == ["alice", SECRET]
    results.append(env.act(Type(text=SECRET, x=100, y=15, space="image_px"), CSS))  # the value verbatim
    typed = env.observe()  # both fields hold the secret: each is painted over in the screenshot
    for top in (0, 50):
        colors = typed.image.crop((3, top + 3, 197, top + 27)).getcolors(1 << 16)
        assert {color for _, color in colors} == {MASK_COLOR}, top
    results.append(env.act(KeyPress(keys="Enter"), CSS))  # GET form: the secret travels in the URL
    obs = env.observe()
    assert any(SECRET.replace(" ", "+").replace("!", "%21") in p for _, p in a.hits), a.hits  # the server got it
    assert obs.title.startswith("Echo /echo?user=alice") and "pw={{secret:PASSWORD}}" in obs.url
    everything = [r.message for r in results] + obs.events + [obs.url, obs.title, caplog.text]
    for text in everything:
        for form in (SECRET, "hunter2+s3cr3t%21", "hunter2%20s3cr3t%21", "hunter2+s3cr3t%21".lower(),
                     "hunter2%20s3cr3t!", "hunter2 s3cr3t\u0021", "hunter2 s3cr3t&#33;"):
            assert form not in text
    assert "{{secret:PASSWORD}}" in results[1].message
    assert "typed '{{secret:PASSWORD}}'" in caplog.text or "{{secret:PASSWORD}}" in caplog.text


@requires_browser
def test_the_proxy_refuses_other_hosts_and_never_reuses_a_connection(servers):
    """The backstop under context.route: a raw client through the allowlist proxy."""
    from giraffe_agent.envs.proxy import AllowlistProxy

    a, b = servers
    b.clear()
    guard = SafetyPolicy().url_guard(a.url("/"))

    async def exchange(proxy_url: str, data: bytes) -> bytes:
        host, port = proxy_url.rsplit("//", 1)[1].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(data)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)  # until the proxy closes the connection
        writer.close()
        return reply

    async def run() -> list[bytes]:
        proxy = AllowlistProxy(guard, connect_timeout_s=5, redact=str)
        url = await proxy.start()
        try:
            return [
                await exchange(url, f"GET {a.url('/')} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n\r\n".encode()),
                await exchange(url, f"CONNECT 127.0.0.1:{b.port} HTTP/1.1\r\n\r\n".encode()),
                await exchange(url, f"GET {b.url('/page')} HTTP/1.1\r\nHost: 127.0.0.1:{b.port}\r\n\r\n".encode()),
                # an allowed CONNECT tunnel (https, wss) carries bytes both ways
                await exchange(url, (f"CONNECT 127.0.0.1:{a.port} HTTP/1.1\r\n\r\n"
                                     f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\nConnection: close\r\n\r\n"
                                     ).encode()),
                # keep-alive: a second request on the same connection must not reach another host
                await exchange(url, (f"GET {a.url('/')} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n"
                                     f"Connection: keep-alive\r\n\r\n"
                                     f"GET {b.url('/page')} HTTP/1.1\r\nHost: 127.0.0.1:{b.port}\r\n\r\n").encode()),
            ]
        finally:
            await proxy.close()

    allowed, connect_b, get_b, tunnel, pipelined = asyncio.run(run())
    assert allowed.startswith(b"HTTP/1.0 200") or allowed.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in allowed and allowed.endswith(b"home")
    assert connect_b.startswith(b"HTTP/1.1 403") and get_b.startswith(b"HTTP/1.1 403")
    assert b"not in allowed domains" in get_b
    assert tunnel.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200") and tunnel.endswith(b"home")
    assert pipelined.count(b" 200 ") == 1 and b"<title>B</title>" not in pipelined
    assert b.hits == []
