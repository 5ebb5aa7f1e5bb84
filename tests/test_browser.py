"""BrowserEnv in a real headless Chromium on loopback pages: viewport and scale factor, every action
type, settling before screenshots, DOM elements, failures that do not raise, which Chromium is
launched, the missing-browser error, and the async and sync APIs.

Positions: the tests use an identity transform (image_px == viewport), so ``space="image_px"``
coordinates are CSS pixels of the page; the transform itself is tested in test_coords.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time

import pytest
from browser_fixtures import LoopbackServer, Reply, requires_browser

from giraffe_agent.actions import (
    Back,
    Click,
    Done,
    DoubleClick,
    Drag,
    Fail,
    Goto,
    KeyPress,
    RightClick,
    Scroll,
    SelectOption,
    Type,
    Wait,
    ZoomBack,
)
from giraffe_agent.coords import CoordinateTransform
from giraffe_agent.envs.base import Environment

pytestmark = requires_browser

VIEWPORT = (800, 600)
#: image_px == viewport: image_px coordinates are CSS pixels
CSS = CoordinateTransform(viewport_css=VIEWPORT, device_scale_factor=1.0, image_px=VIEWPORT)

ACTIONS_PAGE = """<!doctype html><title>Actions</title>
<style>
  body { margin: 0; font: 16px sans-serif; }
  .abs { position: absolute; box-sizing: border-box; margin: 0; }
</style>
<button id="btn" class="abs" style="left:20px;top:20px;width:120px;height:40px">Click me</button>
<div id="dbl" class="abs" style="left:160px;top:20px;width:120px;height:40px;background:#ddd">dbl</div>
<div id="ctx" class="abs" style="left:300px;top:20px;width:120px;height:40px;background:#ccc">ctx</div>
<form id="form" onsubmit="event.preventDefault(); log.push('submit:' + q.value)">
  <input id="q" name="q" class="abs" style="left:20px;top:80px;width:200px;height:30px" placeholder="Search">
</form>
<input id="other" class="abs" style="left:300px;top:80px;width:200px;height:30px" value="prefilled">
<select id="sel" class="abs" style="left:20px;top:130px;width:160px;height:30px">
  <option value="r">Red</option><option value="g">Green</option><option value="b" disabled>Blue</option>
  <option value="y">  Light   Yellow </option>
</select>
<label id="sellabel" for="sel" class="abs" style="left:200px;top:130px;width:80px;height:30px">Colour</label>
<div id="drag" class="abs" style="left:20px;top:180px;width:300px;height:100px;background:#eef">drag area</div>
<div id="box" class="abs" style="left:400px;top:180px;width:200px;height:100px;overflow:auto">
  <div style="height:1000px">inner</div></div>
<div id="later" class="abs" style="left:20px;top:300px;width:200px;height:40px;background:#fff">before</div>
<button id="delay" class="abs" style="left:240px;top:300px;width:120px;height:40px"
  onclick="setTimeout(() => { later.textContent = 'after'; later.style.background = '#00c800'; }, 300)">
  Later</button>
<button id="fetcher" class="abs" style="left:380px;top:300px;width:120px;height:40px"
  onclick="fetch('/slow').then(r => r.text()).then(t => { later.textContent = t; })">Fetch</button>
<a id="link" class="abs" href="/page2" style="left:520px;top:300px;width:100px;height:24px">to page 2</a>
<button id="alerter" class="abs" style="left:20px;top:360px;width:120px;height:40px"
  onclick="log.push('confirm:' + confirm('Really?'))">Confirm</button>
<button id="opener" class="abs" style="left:160px;top:360px;width:120px;height:40px"
  onclick="window.open('/page2')">Popup</button>
<p id="para" class="abs" style="left:300px;top:360px;width:300px;height:40px">Some paragraph text</p>
<div style="position:absolute;top:0;left:0;width:10px;height:3000px"></div>
<script>
  window.log = [];
  const mods = e => (e.ctrlKey ? 'Control+' : '') + (e.shiftKey ? 'Shift+' : '') + (e.altKey ? 'Alt+' : '');
  document.addEventListener('click', e => log.push('click:' + e.target.id), true);
  document.addEventListener('dblclick', e => log.push('dblclick:' + e.target.id), true);
  document.addEventListener('contextmenu', e => { log.push('contextmenu:' + e.target.id); e.preventDefault(); }, true);
  document.addEventListener('keydown', e => log.push('keydown:' + mods(e) + e.key), true);
  sel.addEventListener('change', () => log.push('change:' + sel.value));
  let pressed = false;
  drag.addEventListener('mousedown', e => { pressed = true; log.push(`down:${e.clientX},${e.clientY}`); });
  document.addEventListener('mousemove', e => { if (pressed) log.push(`move:${e.clientX},${e.clientY}`); });
  document.addEventListener('mouseup', e => {
    if (pressed) log.push(`up:${e.clientX},${e.clientY}`);
    pressed = false;
  });
</script>
"""

PAGE2 = "<!doctype html><title>Page two</title><h1 id='h'>Second page</h1>"


@pytest.fixture(scope="module")
def server():
    srv = LoopbackServer({
        "/": Reply(ACTIONS_PAGE),
        "/page2": Reply(PAGE2),
        "/slow": Reply("fetched", content_type="text/plain", delay_s=0.4),
        "/stream": Reply("data: late\n\n", content_type="text/event-stream", delay_s=20),
        "/sse": Reply("<!doctype html><title>Stream</title><script>new EventSource('/stream')</script>"),
    })
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def env(server):
    from giraffe_agent.envs.browser import BrowserConfig, SyncBrowserEnv

    env = SyncBrowserEnv(server.url("/"), BrowserConfig(viewport_css=VIEWPORT, capture_elements=True))
    env.start()
    yield env
    env.close()


@pytest.fixture()
def page(env, server):
    """The module's environment, on a fresh copy of the actions page with an empty log."""
    result = env.act(Goto(url=server.url("/")), CSS)
    assert result.ok, result.message
    env.observe()
    return env


def log(env) -> list[str]:
    return env.evaluate("() => window.log.splice(0)")


def centre(box):
    left, top, width, height = box
    return {"x": left + width / 2, "y": top + height / 2, "space": "image_px"}


# ------------------------------------------------------------------ geometry


def test_screenshot_is_the_viewport_times_dpr(env):
    obs = env.observe()
    assert obs.image.size == VIEWPORT and obs.viewport_css == VIEWPORT and obs.device_scale_factor == 1.0
    assert env.evaluate("() => [innerWidth, innerHeight, devicePixelRatio]") == [800, 600, 1]


def test_fractional_device_scale_factor(server):
    from giraffe_agent.envs.browser import BrowserConfig, SyncBrowserEnv

    with SyncBrowserEnv(server.url("/page2"), BrowserConfig(viewport_css=(640, 400), device_scale_factor=1.5)) as env:
        obs = env.start()
        assert obs.image.size == (960, 600)
        assert obs.viewport_css == (640, 400) and obs.device_scale_factor == 1.5
        assert env.evaluate("() => [innerWidth, innerHeight, devicePixelRatio]") == [640, 400, 1.5]
        assert obs.title == "Page two" and obs.url == server.url("/page2")


# ------------------------------------------------------------------ every action


def test_click_double_click_right_click(page):
    assert page.act(Click(**centre((20, 20, 120, 40))), CSS).ok
    assert page.act(DoubleClick(**centre((160, 20, 120, 40))), CSS).ok
    assert page.act(RightClick(**centre((300, 20, 120, 40))), CSS).ok
    entries = log(page)
    assert entries[0] == "click:btn"
    assert entries[1:4] == ["click:dbl", "click:dbl", "dblclick:dbl"]
    assert entries[4:] == ["contextmenu:ctx"]


def test_type_with_click_then_without_click_then_submit(page):
    result = page.act(Type(text="hello", **centre((20, 80, 200, 30))), CSS)
    assert result.ok and "hello" in result.message
    assert page.act(Type(text=" world"), CSS).ok  # into the focused input
    assert page.evaluate("() => q.value") == "hello world"
    assert page.act(Type(text="!", submit=True), CSS).ok
    entries = log(page)
    assert entries[-3:] == ["keydown:!", "keydown:Enter", "submit:hello world!"]
    # a click elsewhere moves the focus: the next text goes into the other input
    assert page.act(Type(text="X", **centre((300, 80, 200, 30))), CSS).ok
    assert page.evaluate("() => [q.value, other.value]") == ["hello world!", "prefilledX"]


def test_key_press_combinations(page):
    page.act(Type(text="some text", **centre((20, 80, 200, 30))), CSS)
    log(page)
    assert page.act(KeyPress(keys="Control+A"), CSS).ok
    assert page.act(KeyPress(keys="Backspace"), CSS).ok
    assert page.evaluate("() => q.value") == ""
    assert page.act(KeyPress(keys="Shift+KeyB"), CSS).ok
    assert page.evaluate("() => q.value") == "B"
    assert log(page) == ["keydown:Control+Control", "keydown:Control+A", "keydown:Backspace",
                         "keydown:Shift+Shift", "keydown:Shift+B"]


def test_scroll_the_page_and_an_inner_box(page):
    assert page.act(Scroll(direction="down", amount=3), CSS).ok
    page.observe()
    assert page.evaluate("() => [scrollX, scrollY]") == [0, 300]
    assert page.act(Scroll(direction="up", amount=1), CSS).ok
    page.observe()
    assert page.evaluate("() => scrollY") == 200
    page.act(Scroll(direction="up", amount=5), CSS)
    page.observe()
    # at a point over the scrollable box, the box scrolls and the page does not
    assert page.act(Scroll(direction="down", amount=2, **centre((400, 180, 200, 100))), CSS).ok
    page.observe()
    assert page.evaluate("() => [box.scrollTop, scrollY]") == [200, 0]


def test_drag_presses_moves_and_releases(page):
    result = page.act(Drag(x=40, y=200, to_x=300, to_y=260, space="image_px"), CSS)
    assert result.ok, result.message
    entries = log(page)
    downs = [e for e in entries if e.startswith("down:")]
    moves = [e for e in entries if e.startswith("move:")]
    ups = [e for e in entries if e.startswith("up:")]
    assert downs == ["down:40,200"] and ups == ["up:300,260"]
    assert len(moves) >= 5 and moves[-1] == "move:300,260"
    xs = [int(m.split(":")[1].split(",")[0]) for m in moves]
    assert xs == sorted(xs) and 40 < xs[0] < 300  # intermediate positions on the way


def test_goto_back_relative_urls_and_no_history(page, server):
    result = page.act(Goto(url="/page2"), CSS)  # relative to the current page
    assert result.ok, result.message
    obs = page.observe()
    assert obs.url == server.url("/page2") and obs.title == "Page two"
    assert page.act(Back(), CSS).ok
    obs = page.observe()
    assert obs.url == server.url("/") and obs.title == "Actions"
    # scheme-less host:port gets the current page's scheme
    assert page.act(Goto(url=f"127.0.0.1:{server.port}/page2"), CSS).ok
    assert page.observe().title == "Page two"
    missing = page.act(Goto(url="/nowhere"), CSS)
    assert missing.ok and "HTTP 404" in missing.message


def test_back_without_history_fails_without_raising(server):
    from giraffe_agent.envs.browser import BrowserConfig, SyncBrowserEnv

    with SyncBrowserEnv(server.url("/page2"), BrowserConfig(viewport_css=VIEWPORT)) as env:
        env.start()
        result = env.act(Back(), CSS)
        assert not result.ok and "no previous page" in result.message


def test_wait_waits(page):
    started = time.monotonic()
    result = page.act(Wait(seconds=0.3), CSS)
    assert result.ok and time.monotonic() - started >= 0.3


def test_select_option_by_label_value_and_through_its_label(page):
    result = page.act(SelectOption(value="Green", **centre((20, 130, 160, 30))), CSS)
    assert result.ok, result.message
    assert page.evaluate("() => sel.value") == "g"
    assert page.act(SelectOption(value="r", **centre((20, 130, 160, 30))), CSS).ok  # by value
    assert page.evaluate("() => sel.value") == "r"
    assert page.act(SelectOption(value="light yellow", **centre((200, 130, 80, 30))), CSS).ok  # via <label for>
    assert page.evaluate("() => sel.value") == "y"
    assert log(page)[-3:] == ["change:g", "change:r", "change:y"]


def test_failed_actions_return_ok_false_without_raising(page):
    not_select = page.act(SelectOption(value="Red", **centre((20, 20, 120, 40))), CSS)
    assert not not_select.ok and "no <select>" in not_select.message and "<button>" in not_select.message
    no_option = page.act(SelectOption(value="Purple", **centre((20, 130, 160, 30))), CSS)
    assert not no_option.ok and "'Purple'" in no_option.message and "'Green'" in no_option.message
    disabled = page.act(SelectOption(value="Blue", **centre((20, 130, 160, 30))), CSS)
    assert not disabled.ok and "disabled" in disabled.message
    bad_key = page.act(KeyPress(keys="NoSuchKey"), CSS)
    assert not bad_key.ok and "NoSuchKey" in bad_key.message
    blocked = page.act(Goto(url="http://evil.test/"), CSS)
    assert not blocked.ok and "not in allowed domains" in blocked.message
    unknown_secret = page.act(Type(text="{{secret:NOPE}}"), CSS)
    assert not unknown_secret.ok and "NOPE" in unknown_secret.message
    for action in (ZoomBack(step=0), Done(text="42"), Fail(reason="stuck")):
        result = page.act(action, CSS)
        assert not result.ok and "agent loop" in result.message
    assert page.evaluate("() => [sel.value, q.value]") == ["r", ""]  # nothing happened
    assert page.observe().title == "Actions"


# ------------------------------------------------------------------ settling


def test_observation_waits_for_a_timer_change(page):
    assert page.act(Click(**centre((240, 300, 120, 40))), CSS).ok
    obs = page.observe()
    assert obs.image.getpixel((30, 320)) == (0, 200, 0)  # the box turned green 300 ms after the click
    later = next(e for e in obs.elements if e.id == "later")
    assert later.text == "after"


def test_observation_waits_for_a_slow_fetch(page):
    assert page.act(Click(**centre((380, 300, 120, 40))), CSS).ok
    obs = page.observe()  # the server answers after 400 ms
    assert next(e for e in obs.elements if e.id == "later").text == "fetched"


def test_observation_after_a_link_click_shows_the_new_page(page, server):
    assert page.act(Click(**centre((520, 300, 100, 24))), CSS).ok
    obs = page.observe()
    assert obs.title == "Page two" and obs.url == server.url("/page2")
    assert [e.text for e in obs.elements if e.id == "h"] == ["Second page"]


def test_a_stream_that_never_ends_does_not_hold_the_observation(page, server):
    assert page.act(Goto(url="/sse"), CSS).ok
    started = time.monotonic()
    obs = page.observe()
    assert obs.title == "Stream" and time.monotonic() - started < 2.0  # the settle cap is 5 s
    assert "/stream" in server.paths()


def test_dialogs_are_dismissed_and_reported(page):
    assert page.act(Click(**centre((20, 360, 120, 40))), CSS).ok
    obs = page.observe()
    assert "confirm:false" in log(page)
    assert any("confirm dialog said 'Really?'" in e and "dismissed" in e for e in obs.events)


def test_a_popup_becomes_the_current_tab(page, server):
    assert page.act(Click(**centre((160, 360, 120, 40))), CSS).ok
    obs = page.observe()
    assert obs.title == "Page two" and any("new tab" in e for e in obs.events)
    page.evaluate("() => window.close()")
    obs = page.observe()
    assert obs.title == "Actions" and any("previous tab" in e for e in obs.events)


# ------------------------------------------------------------------ DOM elements


def test_capture_elements_gives_css_boxes_text_and_values(page):
    page.act(Type(text="typed", **centre((20, 80, 200, 30))), CSS)
    page.act(SelectOption(value="Green", **centre((20, 130, 160, 30))), CSS)
    obs = page.observe()
    by_id = {e.id: e for e in obs.elements if e.id}
    assert by_id["btn"].tag == "button" and by_id["btn"].text == "Click me"
    assert by_id["btn"].box == (20, 20, 120, 40) and by_id["btn"].center_css == (80, 40)
    assert by_id["q"].tag == "input" and by_id["q"].value == "typed" and by_id["q"].text == "Search"
    assert by_id["q"].box == (20, 80, 200, 30)
    assert by_id["other"].value == "prefilled"
    assert by_id["sel"].tag == "select" and by_id["sel"].value == "g" and by_id["sel"].text == "Green"
    assert by_id["sel"].box == (20, 130, 160, 30)
    assert by_id["sellabel"].tag == "label" and by_id["sellabel"].text == "Colour"
    assert by_id["link"].tag == "a" and by_id["link"].box == (520, 300, 100, 24)
    assert by_id["para"].tag == "p" and by_id["para"].text == "Some paragraph text"
    assert by_id["para"].classes == "abs"
    # every box is inside the viewport and matches the page's own geometry
    rects = page.evaluate("() => Object.fromEntries([...document.querySelectorAll('[id]')].map(e => "
                          "{ const r = e.getBoundingClientRect(); return [e.id, [r.x, r.y, r.width, r.height]]; }))")
    for element in by_id.values():
        assert list(element.box) == rects[element.id]
    # the keyboard focus (what a keyboard demonstrator reads): on the input clicked last, only there
    page.act(Click(**centre((300, 80, 200, 30))), CSS)
    assert [e.id for e in page.observe().elements if e.focused] == ["other"]


def test_elements_leave_the_viewport_when_scrolled(page):
    page.act(Scroll(direction="down", amount=3), CSS)
    obs = page.observe()
    by_id = {e.id: e for e in obs.elements if e.id}
    assert "btn" not in by_id  # scrolled out of view (20..60 - 300 < 0)
    assert by_id["alerter"].box == (20, 60, 120, 40)  # 360 - 300


# ------------------------------------------------------------------ which Chromium, missing browser


@pytest.fixture()
def no_playwright_browsers(tmp_path, monkeypatch):
    """Point Playwright at an empty browser cache, so its own Chromium is 'not installed'."""
    empty = tmp_path / "ms-playwright"
    empty.mkdir()
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(empty))
    monkeypatch.delenv("GIRAFFE_CHROMIUM", raising=False)
    return empty


def _system_chromium() -> str:
    from giraffe_agent.envs.chromium import SYSTEM_NAMES

    found = next((p for p in map(shutil.which, SYSTEM_NAMES) if p), None)
    if found is None:
        pytest.skip("no system Chromium on PATH")
    return found


def test_system_chromium_is_used_when_playwright_has_none(server, no_playwright_browsers):
    from giraffe_agent.envs.browser import SyncBrowserEnv

    system = _system_chromium()
    with SyncBrowserEnv(server.url("/page2")) as env:
        assert env.start().title == "Page two"
        assert env.browser_info.source == "system" and env.browser_info.path == system
        assert env.browser_info.version[0].isdigit()


def test_giraffe_chromium_overrides(server, no_playwright_browsers, tmp_path, monkeypatch):
    from giraffe_agent.envs.browser import SyncBrowserEnv

    link = tmp_path / "my-chrome"
    link.symlink_to(_system_chromium())
    monkeypatch.setenv("GIRAFFE_CHROMIUM", str(link))
    with SyncBrowserEnv(server.url("/page2")) as env:
        env.start()
        assert env.browser_info.source == "env" and env.browser_info.path == str(link)


def test_playwrights_own_chromium_is_preferred_when_installed(server, no_playwright_browsers):
    """Fake a `playwright install chromium` (its expected path links to the system browser)."""
    from playwright.sync_api import sync_playwright

    from giraffe_agent.envs.browser import SyncBrowserEnv

    with sync_playwright() as pw:
        expected = pw.chromium.executable_path
    assert expected.startswith(str(no_playwright_browsers))
    os.makedirs(os.path.dirname(expected))
    os.symlink(_system_chromium(), expected)
    with SyncBrowserEnv(server.url("/page2")) as env:
        env.start()
        assert env.browser_info.source == "playwright" and env.browser_info.path == expected


def test_a_missing_browser_gives_the_clear_error(server, no_playwright_browsers, tmp_path, monkeypatch):
    from giraffe_agent.envs.browser import BrowserNotFoundError, SyncBrowserEnv
    from giraffe_core.errors import GiraffeError

    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    with SyncBrowserEnv(server.url("/")) as env, pytest.raises(BrowserNotFoundError) as info:
        env.start()
    text = str(info.value)
    assert isinstance(info.value, GiraffeError)
    for fix in ("apt-get install chromium", "playwright install chromium", "GIRAFFE_CHROMIUM"):
        assert fix in text


def test_a_bad_configured_executable_is_reported(server):
    from giraffe_agent.envs.browser import BrowserConfig, BrowserNotFoundError, SyncBrowserEnv

    with SyncBrowserEnv(server.url("/"), BrowserConfig(executable_path="/nonexistent/chrome")) as env, \
            pytest.raises(BrowserNotFoundError, match="/nonexistent/chrome"):
        env.start()


# ------------------------------------------------------------------ APIs and lifecycle


def test_async_api_implements_the_environment_protocol(server):
    from giraffe_agent.envs.browser import BrowserConfig, BrowserEnv

    async def episode():
        async with BrowserEnv(server.url("/"), BrowserConfig(viewport_css=VIEWPORT)) as env:
            assert isinstance(env, Environment)
            obs = await env.start()
            transform = obs.transform((400, 300))  # half size: image_px (40, 20) is CSS (80, 40)
            result = await env.act(Click(x=40, y=20, space="image_px"), transform)
            assert result.ok, result.message
            obs = await env.observe()
            return obs, await env.evaluate("() => window.log")

    obs, entries = asyncio.run(episode())
    assert entries == ["click:btn"] and obs.title == "Actions" and obs.elements is None


def test_close_is_idempotent_and_use_after_close_raises(server):
    from giraffe_agent.envs.browser import BrowserConfig, BrowserError, SyncBrowserEnv

    env = SyncBrowserEnv(server.url("/page2"), BrowserConfig(viewport_css=VIEWPORT))
    with pytest.raises(BrowserError, match="not started"):
        env.act(Click(x=1, y=1), CSS)
    env.start()
    env.close()
    env.close()
    with pytest.raises(BrowserError, match="closed"):
        env.observe()


def test_start_twice_raises(env):
    from giraffe_agent.envs.browser import BrowserError

    with pytest.raises(BrowserError, match="already started"):
        env.start()


def test_config_is_strict():
    from pydantic import ValidationError

    from giraffe_agent.envs.browser import BrowserConfig

    with pytest.raises(ValidationError):
        BrowserConfig(viewport=(800, 600))  # unknown field
    with pytest.raises(ValidationError):
        BrowserConfig(device_scale_factor=0)
    assert BrowserConfig().viewport_css == (1280, 800) and BrowserConfig().headless


def test_a_shared_browser_keeps_episodes_apart_and_launches_once(server):
    from giraffe_agent.envs.browser import BrowserConfig, BrowserEnv, SharedBrowser

    other = LoopbackServer({"/": Reply("<!doctype html><title>Other</title><p>other</p>")})

    async def episodes():
        async with SharedBrowser() as shared:
            first = BrowserEnv(server.url("/"), BrowserConfig(viewport_css=VIEWPORT), shared=shared)
            await first.start()
            browser = await shared.browser()
            await first.evaluate("() => { localStorage.setItem('k', 'v'); document.cookie = 'c=1'; }")
            # this episode's allowlist holds in the shared browser: the other host is refused
            await first.evaluate(f"() => fetch({other.url('/')!r}).catch(() => null)")
            blocked = (await first.observe()).events
            await first.close()
            assert browser.is_connected()  # closing an episode closes only its context
            second = BrowserEnv(other.url("/"), BrowserConfig(viewport_css=VIEWPORT), shared=shared)
            obs = await second.start()
            stored = await second.evaluate("() => [localStorage.getItem('k'), document.cookie]")
            same = await shared.browser() is browser
            await second.close()
            return blocked, obs.title, stored, same, second.browser_info

    try:
        blocked, title, stored, same, info = asyncio.run(episodes())
    finally:
        other.close()
    assert any("blocked" in e and other.url("/").split("/")[2] in e for e in blocked), blocked
    assert title == "Other" and stored == [None, ""] and same
    assert info is not None and info.version
