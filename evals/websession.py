"""A small local shop site, scripted browsing sessions on it, and their screen recordings.

:class:`ShopSite` serves a five-section shop (Home, Products, eight product pages, Search with
its results, Contact) from memory on ``http://127.0.0.1:PORT/``. Every page has a navigation bar,
a cart counter and a large title; a product page's "Add to cart" button adds it to the cart
(counted in the page's ``localStorage``) and shows "NAME was added to your cart."

:func:`generate_session` writes a session script from a seed, without a browser: events at known
times (whole seconds since the start, ``gap_s`` apart), each one of

* ``open``: click a navigation or product link (``page`` is the title that opens);
* ``type``: type a word into the search box (always followed, 2 s later, by ``submit``: press
  Enter, and the "Search results" page shows the word);
* ``add``: click "Add to cart" on the product page on screen (each product at most once).

:func:`record_session` plays a script in headless Chromium (Playwright's sync API; the ``agent``
extra) and pushes one screenshot per event, taken after the event and stamped with its script
time, into a :class:`~giraffe_agent.recording.Recorder` (kept whatever its change score, so every
event has its frame at its exact time), then closes the recording at the script's end. The text
caret is hidden, so the same script gives the same frames.
"""

from __future__ import annotations

import html
import io
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from giraffe_agent.recording import CaptureError, Recorder, RecorderConfig, Recording
from giraffe_core.errors import ConfigError
from giraffe_core.extras import require

__all__ = ["PRODUCTS", "SEARCH_WORDS", "SECTIONS", "START_TIME", "SessionEvent", "SessionScript", "ShopSite",
           "generate_session", "record_session"]

logger = logging.getLogger(__name__)

PRODUCTS: tuple[str, ...] = ("Lamp", "Kettle", "Backpack", "Umbrella", "Headphones", "Notebook", "Teapot", "Camera")
SEARCH_WORDS: tuple[str, ...] = ("garden", "violet", "harbor", "meteor", "pepper", "lantern", "glacier", "walnut",
                                 "saffron", "copper", "orchid", "falcon")
#: the navigation bar's sections, in its order
SECTIONS: tuple[str, ...] = ("Home", "Products", "Search", "Contact")
_BANDS = {"Home": "#2f6db5", "Products": "#2e8b57", "Search": "#8e44ad", "Contact": "#c0392b",
          "Search results": "#6c3483"}
#: the recording's origin: a fixed epoch time, so recordings of one script are identical
START_TIME = 1_700_000_000.0


class SessionEvent(BaseModel):
    """One scripted event: at ``t`` seconds, ``kind``; ``page`` is the title on screen afterwards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    t: int
    kind: Literal["start", "open", "type", "submit", "add"]
    page: str
    text: str | None = None
    product: str | None = None


class SessionScript(BaseModel):
    """A whole session: its events in time order and its length, seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: tuple[int, ...]
    events: tuple[SessionEvent, ...]
    duration_s: int

    def page_at(self, t: float) -> str:
        """The page on screen at ``t`` seconds (the last event at or before it)."""
        return [e for e in self.events if e.t <= t][-1].page


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def generate_session(seed: tuple[int, ...], *, events: int = 10, gap_s: tuple[int, int] = (20, 90)) -> SessionScript:
    """A session of ``events`` events after the start on the Home page, drawn from ``seed``."""
    if events < 1 or not 3 <= gap_s[0] <= gap_s[1]:
        raise ConfigError(f"a session needs events >= 1 and 3 <= gap_s[0] <= gap_s[1], got {events}, {gap_s}")
    rng = np.random.default_rng(seed)
    out = [SessionEvent(t=0, kind="start", page="Home")]
    added: set[str] = set()
    searched: set[str] = set()
    t, page = 0, "Home"
    while len(out) - 1 < events:
        t += int(rng.integers(gap_s[0], gap_s[1] + 1))
        choices = ["nav"]
        if page == "Products":
            choices += ["product", "product"]
        if page in PRODUCTS and page not in added:
            choices += ["add", "add"]
        if page == "Search" and len(out) - 1 <= events - 2 and len(searched) < len(SEARCH_WORDS):
            choices += ["type", "type", "type"]
        action = choices[int(rng.integers(len(choices)))]
        if action == "nav":
            page = [s for s in SECTIONS if s != page][int(rng.integers(len(SECTIONS) - (page in SECTIONS)))]
            out.append(SessionEvent(t=t, kind="open", page=page))
        elif action == "product":
            page = PRODUCTS[int(rng.integers(len(PRODUCTS)))]
            out.append(SessionEvent(t=t, kind="open", page=page, product=page))
        elif action == "add":
            added.add(page)
            out.append(SessionEvent(t=t, kind="add", page=page, product=page))
        else:
            word = [w for w in SEARCH_WORDS if w not in searched][int(rng.integers(len(SEARCH_WORDS) - len(searched)))]
            searched.add(word)
            out.append(SessionEvent(t=t, kind="type", page="Search", text=word))
            t += 2
            page = "Search results"
            out.append(SessionEvent(t=t, kind="submit", page=page, text=word))
    return SessionScript(seed=tuple(int(s) for s in seed), events=tuple(out),
                         duration_s=t + int(rng.integers(gap_s[0], gap_s[1] + 1)))


def _page(title: str, body: str) -> bytes:
    band = _BANDS.get(title, "#b9770e")
    nav = " ".join(f'<a id="nav-{_slug(s)}" href="/{"" if s == "Home" else _slug(s)}">{s}</a>' for s in SECTIONS)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body {{ margin: 0; font-family: sans-serif; background: #f7f7f4; caret-color: transparent; }}
nav {{ background: #222; padding: 10px 16px; font-size: 18px; }}
nav a {{ color: #fff; margin-right: 22px; text-decoration: none; }}
#cart {{ float: right; color: #ffd54f; }}
header {{ background: {band}; color: #fff; padding: 14px 16px; }}
h1 {{ margin: 0; font-size: 34px; }}
main {{ padding: 16px; font-size: 20px; }}
input {{ font-size: 22px; padding: 6px; width: 60%; }}
button {{ font-size: 22px; padding: 8px 18px; }}
.msg {{ margin-top: 16px; padding: 10px; background: #fff3cd; border: 2px solid #e0a800; }}
</style></head><body>
<nav>{nav}<span id="cart">Cart (0)</span></nav><header><h1>{html.escape(title)}</h1></header><main>{body}</main>
<script>
const n = () => JSON.parse(localStorage.getItem("cart") || "[]");
document.getElementById("cart").textContent = "Cart (" + n().length + ")";
function addToCart(name) {{
  const items = n(); items.push(name); localStorage.setItem("cart", JSON.stringify(items));
  document.getElementById("cart").textContent = "Cart (" + items.length + ")";
  document.getElementById("msg").textContent = name + " was added to your cart.";
  document.getElementById("msg").className = "msg";
}}
</script></body></html>""".encode()


def _route(path: str, query: dict[str, list[str]]) -> bytes | None:
    if path in ("/", "/home"):
        return _page("Home", "<p>Welcome to the shop. Browse the products or search the catalogue.</p>")
    if path == "/products":
        links = "".join(f'<li><a id="product-{_slug(p)}" href="/product/{_slug(p)}">{p}</a></li>' for p in PRODUCTS)
        return _page("Products", f"<ul>{links}</ul>")
    if path.startswith("/product/"):
        name = next((p for p in PRODUCTS if _slug(p) == path.rsplit("/", 1)[1]), None)
        if name is None:
            return None
        return _page(name, f'<p>The {name.lower()} is in stock.</p><button id="add" '
                           f'onclick="addToCart(\'{name}\')">Add to cart</button><div id="msg"></div>')
    if path == "/search":
        return _page("Search", '<form action="/results"><input id="q" name="q" autocomplete="off" '
                               'placeholder="Search the catalogue"></form>')
    if path == "/results":
        word = html.escape(query.get("q", [""])[0])
        return _page("Search results", f"<p>You searched for &ldquo;{word}&rdquo;.</p><p>No products match.</p>")
    if path == "/contact":
        return _page("Contact", "<p>Write to shop@example.test or call 555-0100.</p>")
    return None


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        body = _route(parts.path, parse_qs(parts.query))
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        body = body if body is not None else b"not found"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("shop site: " + format, *args)


class ShopSite:
    """The shop on ``http://127.0.0.1:PORT/`` (a free port), served from a background thread."""

    def __init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="shop-site", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The home page."""
        return f"http://127.0.0.1:{self.port}/"

    def close(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ShopSite:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _play(page: Any, event: SessionEvent) -> None:
    if event.kind == "open":
        page.click(f"#product-{_slug(event.page)}" if event.product else f"#nav-{_slug(event.page)}")
        page.wait_for_load_state("load")
    elif event.kind == "type":
        page.fill("#q", event.text or "")
    elif event.kind == "submit":
        page.press("#q", "Enter")
        page.wait_for_load_state("load")
    elif event.kind == "add":
        page.click("#add")


def record_session(script: SessionScript, out: str | Path, *, viewport: tuple[int, int] = (640, 400)) -> Recording:
    """Play ``script`` in headless Chromium on a fresh :class:`ShopSite` and record it into ``out``.

    Raises:
        MissingExtraError: Playwright is not installed (``pip install 'giraffe[agent]'``).
        CaptureError: no Chromium, or the browser failed while playing the script.
        RecordingError: ``out`` already holds files.
    """
    require("playwright", extra="agent", purpose="record synthetic web sessions")
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    from giraffe_agent.envs import DEFAULT_CHROMIUM_ARGS, find_chromium

    chromium = find_chromium()
    if chromium is None:
        raise CaptureError("no Chromium to play the session in",
                           hint="`apt-get install chromium` or `playwright install chromium`, or set GIRAFFE_CHROMIUM")
    config = RecorderConfig(fps=1.0, fsync=False)
    with ShopSite() as site, sync_playwright() as pw, Recorder(out, config, start_time=START_TIME) as recorder:
        try:
            browser = pw.chromium.launch(executable_path=chromium.path, headless=True, chromium_sandbox=False,
                                         args=list(DEFAULT_CHROMIUM_ARGS))
            try:
                context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                              device_scale_factor=1)
                page = context.new_page()
                page.goto(site.url, wait_until="load")
                for event in script.events:
                    if event.kind != "start":
                        _play(page, event)
                    image = Image.open(io.BytesIO(page.screenshot(type="png"))).convert("RGB")
                    recorder.add(image, t=float(event.t), force=True)
            finally:
                browser.close()
        except PlaywrightError as exc:
            raise CaptureError(f"the browser failed while playing session {script.seed}: {exc.message}") from exc
        recorder.close(t=float(script.duration_s))
    return Recording.open(out)

