"""The browser environment: Chromium driven by Playwright's async API, behind a network allowlist.

:class:`BrowserEnv` implements :class:`~giraffe_agent.envs.base.Environment`::

    async with BrowserEnv("http://127.0.0.1:8000/", BrowserConfig(device_scale_factor=2)) as env:
        obs = await env.start()
        transform = obs.transform(image_px=(1148, 728))      # the size the model saw
        result = await env.act(Click(x=500, y=300), transform)
        obs = await env.observe()

:class:`SyncBrowserEnv` runs the same core on a private event loop in a background thread, for
plain scripts: ``with SyncBrowserEnv(url) as env: obs = env.start()``.

Which Chromium: ``BrowserConfig.executable_path``, else ``GIRAFFE_CHROMIUM``, else Playwright's own
Chromium when ``playwright install chromium`` put it there, else a system Chromium on ``PATH``
(:func:`~giraffe_agent.envs.chromium.find_chromium`; Debian: ``apt-get install chromium``).

Actions (CSS pixels come from ``transform.to_css``; the device scale factor never enters):

* click, double click, right click, drag (press, move in ``drag_steps`` steps, release) and scroll
  (``amount`` wheel notches of 100 CSS px at the given point, else the viewport centre) go
  through Playwright's mouse; type (``{{secret:NAME}}`` filled from :class:`~giraffe_agent.safety.
  Secrets` at the last moment) and key presses through its keyboard;
* goto (checked against the allowlist first; relative and scheme-less URLs are resolved against
  the current page), back, wait, and select (the ``<select>`` under the point, or the one a
  ``<label>`` there names; the option whose label, else value, else case-insensitive label
  matches; ``input`` and ``change`` events fire);
* ``zoom``, ``done`` and ``fail`` belong to the agent loop: :meth:`BrowserEnv.act` returns
  ``ActResult(ok=False)`` for them and does nothing.

A failed action returns ``ActResult(ok=False, message)`` and never raises; only misuse (acting
before :meth:`~BrowserEnv.start` or after :meth:`~BrowserEnv.close`) raises :class:`BrowserError`.

Settling (before every observation), within ``settle_timeout_s`` in all:

1. no request of any tab in flight, and none started or ended for ``network_quiet_s`` (the
   window also starts when the last action ended, so a request the action triggers is waited
   for). Only what changes the rendered page counts: documents, stylesheets, images, fonts,
   scripts, fetch/XHR; streams that may never end (event sources, WebSockets, media) do not;
2. the page's ``document.readyState`` is ``complete``;
3. no pending ``setTimeout`` callback with a delay up to ``timer_horizon_s`` (an init script
   counts them; ``0`` turns this off), no running finite CSS/Web animation, and the scroll
   position unchanged between two probes;
4. then a fixed ``animation_delay_s``.

Safety (:class:`~giraffe_agent.safety.SafetyPolicy`), enforced at the network layer:

* every request of every page and frame (documents, subresources, fetch/XHR, iframes, popups,
  beacons, ``file://``) goes through ``context.route``: a URL the allowlist refuses is aborted,
  logged, and reported in the next observation's ``events`` (``"blocked request to URL (not in
  allowed domains)"``);
* Playwright does not route redirects or WebSockets, so Chromium also sends ALL its traffic
  through a small forward proxy on 127.0.0.1 run by this environment, which refuses every
  connection to a host:port outside the allowlist (redirect hops, WebSockets, anything a page
  could start). Blocked redirects and WebSockets are reported as events too. Chromium's own
  background traffic (update checks, sign-in) is refused by the same proxy and only logged;
* service workers are blocked (they would hide requests from the route); WebRTC may not use
  UDP outside the proxy;
* downloads are refused unless ``allow_downloads`` (an event says so); allowed ones are saved
  to ``BrowserConfig.download_dir`` (a fresh temporary directory by default);
* dialogs (alert, confirm, prompt) are dismissed (or accepted, ``BrowserConfig.dialogs``) and
  reported; a popup or ``target=_blank`` tab becomes the current tab (reported), and one whose
  first page is refused is closed again at once (reported), since no action closes tabs.

Secrets (:class:`~giraffe_agent.safety.Secrets`): a value never reaches a log record, an
:class:`ActResult` message, an event, an element of an observation, or an observation's URL or
title, in any encoding redaction knows: everything this module emits passes through
``Secrets.redact``, and is shortened only after (``Secrets.shorten``). A Type action that
fills a secret types it character by character, a newline inserted as text (never pressed as
Enter), and follows every element it goes into; every screenshot then has each place a secret
may show painted over (``mask_secrets``, on by default): those elements, fields and text that
hold a secret (:mod:`giraffe_agent.envs.secret_masks` says what is found and what is not); a
page that cannot be checked is hidden whole. Masking happens before the observation is
returned, so before a frame is stored or sent to a model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar
from urllib.parse import urljoin, urlsplit

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from giraffe_agent.actions import (
    Action,
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
    action_to_json,
)
from giraffe_agent.coords import CoordinateTransform
from giraffe_agent.envs.base import ActResult, Element, Observation
from giraffe_agent.envs.chromium import find_chromium
from giraffe_agent.envs.chromium_flags import DEFAULT_CHROMIUM_ARGS, launch_args
from giraffe_agent.envs.page_scripts import ELEMENTS_JS, PROBE_JS, SELECT_JS, TIMER_INIT_JS
from giraffe_agent.envs.proxy import AllowlistProxy
from giraffe_agent.envs.secret_masks import SecretMasks
from giraffe_agent.masking import Box, hide_all, paint_boxes
from giraffe_agent.safety import SafetyError, SafetyPolicy, SecretError, Secrets
from giraffe_core.errors import GiraffeError
from giraffe_core.extras import require

if TYPE_CHECKING:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        Dialog,
        Download,
        Page,
        Playwright,
        Request,
        Route,
        WebSocket,
    )

__all__ = [
    "BrowserConfig",
    "BrowserEnv",
    "BrowserError",
    "BrowserInfo",
    "BrowserNotFoundError",
    "DEFAULT_CHROMIUM_ARGS",
    "SharedBrowser",
    "SyncBrowserEnv",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_AGENT_LOOP_ACTIONS = (ZoomBack, Done, Fail)
#: requests that settling waits for: what changes the rendered page. Streams that may never end
#: (eventsource, websocket, media), beacons, prefetches and the like are not waited for.
_SETTLE_RESOURCE_TYPES = frozenset({"document", "stylesheet", "image", "font", "script", "xhr", "fetch"})

_POLL_S = 0.03


class BrowserError(GiraffeError, RuntimeError):
    """The browser could not be launched or driven (not a failed action: those return ``ok=False``)."""

    code = "browser-error"


class BrowserNotFoundError(BrowserError):
    """No Chromium to launch; the hint names the three ways to get one."""

    code = "browser-not-found"


_Side = Annotated[int, Field(ge=16, le=16384)]
_Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class BrowserConfig(BaseModel):
    """How the browser is launched and how long it waits. Sizes in CSS pixels, times in seconds.

    Attributes:
        viewport_css: (width, height) of the viewport, CSS px.
        device_scale_factor: device pixels per CSS pixel; screenshots are ``viewport_css * dpr``.
        headless: run without a window.
        executable_path: the Chromium to launch; ``None`` = auto (GIRAFFE_CHROMIUM, Playwright's
            own, a system one).
        chromium_args: command-line flags added to :data:`DEFAULT_CHROMIUM_ARGS` (never replacing
            them); flags that undo a safeguard (command prefixes, proxy, resolver and WebRTC
            overrides, ``--disable-web-security``, ...) raise
            :class:`~giraffe_agent.envs.chromium_flags.UnsafeChromiumFlagError` when the config is made.
        allow_unsafe_chromium_args: accept such flags anyway (the user's explicit choice; never
            set it for flags from someone else's run or model directory).
        sandbox: Chromium's own sandbox (off by default, as in Playwright; it cannot run as root).
        launch_timeout_s: launching Chromium.
        navigation_timeout_s: ``start``, ``goto`` and ``back`` until the new page commits.
        action_timeout_s: any other single action (mouse, keyboard, select).
        connect_timeout_s: the proxy's connection to an allowed server.
        settle_timeout_s: cap on waiting for the page to settle before an observation.
        network_quiet_s: how long the network must be quiet to count as settled.
        timer_horizon_s: ``setTimeout`` callbacks due within this delay are waited for (0: off).
        animation_delay_s: fixed pause after settling, before the screenshot.
        capture_elements: attach the visible DOM elements to every observation (scripted
            demonstrators and tests only; never shown to a model).
        user_agent, locale, timezone_id: the browser context's identity (``None`` = Chromium's).
        dialogs: what to do with alert/confirm/prompt dialogs.
        download_dir: where allowed downloads go (``None`` = a fresh temporary directory).
        drag_steps: intermediate mouse moves of a drag.
        max_events: events reported per observation (more are summarized).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    viewport_css: tuple[_Side, _Side] = (1280, 800)
    device_scale_factor: float = Field(1.0, gt=0, le=8, allow_inf_nan=False)
    headless: bool = True
    executable_path: str | None = None
    chromium_args: tuple[str, ...] = ()
    allow_unsafe_chromium_args: bool = False
    sandbox: bool = False
    launch_timeout_s: float = Field(30.0, gt=0, allow_inf_nan=False)
    navigation_timeout_s: float = Field(30.0, gt=0, allow_inf_nan=False)
    action_timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False)
    connect_timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False)
    settle_timeout_s: _Seconds = 5.0
    network_quiet_s: _Seconds = 0.15
    timer_horizon_s: _Seconds = 1.0
    animation_delay_s: _Seconds = 0.05
    capture_elements: bool = False
    user_agent: str | None = None
    locale: str | None = "en-US"
    timezone_id: str | None = None
    dialogs: Literal["dismiss", "accept"] = "dismiss"
    download_dir: Path | None = None
    drag_steps: int = Field(10, ge=1, le=1000)
    max_events: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _check_flags(self) -> BrowserConfig:
        launch_args(self.chromium_args, allow_unsafe=self.allow_unsafe_chromium_args)  # raises when refused
        return self


@dataclass(frozen=True)
class BrowserInfo:
    """The Chromium an environment launched: its path, where it was found, and its version."""

    path: str
    source: Literal["config", "env", "playwright", "system"]
    version: str


# --------------------------------------------------------------------------------------------
# JavaScript run in the page
# --------------------------------------------------------------------------------------------

#: counts pending short setTimeout callbacks so that settling can wait for them
def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


# --------------------------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------------------------

_NO_SECRETS = Secrets()
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:(?!\d)")


def _resolve_chromium(pw: Playwright, config: BrowserConfig) -> tuple[str, Literal["config", "env", "playwright",
                                                                                    "system"]]:
    configured = config.executable_path
    if configured:
        if Path(configured).is_file() and os.access(configured, os.X_OK):
            return configured, "config"
        raise BrowserNotFoundError(f"BrowserConfig.executable_path {configured} is not an executable file")
    found = find_chromium(use_playwright=False)  # GIRAFFE_CHROMIUM, then PATH
    if found is not None and found.source == "env":
        return found.path, "env"
    try:
        own = pw.chromium.executable_path
    except Exception as exc:  # Playwright raises when it knows no browser for this platform
        logger.debug("playwright reports no chromium: %s", exc)
        own = ""
    if own and Path(own).is_file():
        return own, "playwright"
    if found is not None:
        return found.path, "system"
    raise BrowserNotFoundError(
        "no Chromium to launch: GIRAFFE_CHROMIUM is unset, Playwright's own Chromium is not installed, "
        "and no chromium, chromium-browser, google-chrome or google-chrome-stable is on PATH",
        hint="install one: `apt-get install chromium` (Debian/Ubuntu) or `playwright install chromium`, "
             "or set GIRAFFE_CHROMIUM=/path/to/chrome")


async def _launch(pw: Playwright, config: BrowserConfig, proxy: dict[str, str] | None = None) -> tuple[Browser,
                                                                                                      BrowserInfo]:
    """Launch Chromium as ``config`` says (through ``proxy`` when given)."""
    from playwright.async_api import Error as PlaywrightError

    path, source = _resolve_chromium(pw, config)
    try:
        browser = await pw.chromium.launch(
            executable_path=path, headless=config.headless,
            args=launch_args(config.chromium_args, allow_unsafe=config.allow_unsafe_chromium_args),
            chromium_sandbox=config.sandbox, proxy=proxy, timeout=config.launch_timeout_s * 1000)
    except PlaywrightError as exc:
        raise BrowserError(f"Chromium at {path} ({source}) failed to start: {_first_line(exc)}",
                           hint="check that it runs (`chromium --headless --version`), or set "
                                "GIRAFFE_CHROMIUM / BrowserConfig.executable_path to another") from exc
    logger.info("launched Chromium %s from %s (%s)", browser.version, path, source)
    return browser, BrowserInfo(path, source, browser.version)


class SharedBrowser:
    """One Chromium for many :class:`BrowserEnv` episodes (``BrowserEnv(..., shared=...)``).

    Launching Chromium and Playwright's driver costs about a second per episode; a shared one is
    launched on first use and every episode opens its own browser context in it (separate
    cookies, storage, and its own allowlist proxy), so episodes stay isolated. Use it inside one
    event loop (``async with SharedBrowser() as shared: ... await agent.run_async()``).

    Args:
        config: launch settings (executable, headless, arguments, sandbox, timeout); an episode's
            viewport and timing come from its own :class:`BrowserConfig`.
    """

    def __init__(self, config: BrowserConfig | None = None) -> None:
        self.config = config or BrowserConfig()
        self.info: BrowserInfo | None = None
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._lock = asyncio.Lock()

    async def browser(self) -> Browser:
        """The running Chromium (launched on the first call).

        Raises:
            BrowserNotFoundError, BrowserError, MissingExtraError: as :meth:`BrowserEnv.start`.
        """
        async with self._lock:
            if self._browser is None or not self._browser.is_connected():
                require("playwright", extra="agent", purpose="drive the browser environment")
                from playwright.async_api import async_playwright

                if self._pw is None:
                    self._pw = await async_playwright().start()
                self._browser, self.info = await _launch(self._pw, self.config)
            return self._browser

    async def close(self) -> None:
        """Close Chromium and Playwright's driver; safe to call twice."""
        if self._browser is not None:
            try:
                await self._browser.close()
            except Exception as exc:
                logger.debug("closing the shared browser: %s", exc)
        if self._pw is not None:
            try:
                await self._pw.stop()
            except Exception as exc:
                logger.debug("stopping playwright: %s", exc)
        self._browser = self._pw = None

    async def __aenter__(self) -> SharedBrowser:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class BrowserEnv:
    """A Chromium page the agent sees (screenshots) and acts in (mouse and keyboard), async.

    Args:
        start_url: the first page; it must pass the safety policy.
        config: launch, viewport and timing settings (:class:`BrowserConfig`).
        safety: the allowlist and switches (:class:`~giraffe_agent.safety.SafetyPolicy`); the
            default allows only the start URL's host.
        secrets: values a Type action may reference as ``{{secret:NAME}}``.
        shared: run in this already-launched Chromium (:class:`SharedBrowser`) instead of launching
            one: the episode gets its own browser context (cookies, storage, allowlist proxy) and
            closing the environment closes only that context. Much faster for many episodes.
        mask_secrets: paint over every place a secret may show (the fields it was typed into,
            fields and text holding it; see :mod:`giraffe_agent.envs.secret_masks`) in every
            screenshot before it is returned, so before it is stored or sent to a model. On by
            default; ``False`` is the user's explicit choice to let screenshots show them.

    Attributes:
        browser_info: the Chromium launched (after :meth:`start`).
        downloads: paths of the downloads saved (when the policy allows downloads).
    """

    def __init__(self, start_url: str, config: BrowserConfig | None = None, safety: SafetyPolicy | None = None,
                 secrets: Secrets | None = None, *, shared: SharedBrowser | None = None,
                 mask_secrets: bool = True) -> None:
        self.start_url = start_url
        self.shared = shared
        self.config = config or BrowserConfig()
        self.safety = safety or SafetyPolicy()
        self.secrets = secrets or _NO_SECRETS
        self.mask_secrets = mask_secrets
        self._masks = SecretMasks(self.secrets) if len(self.secrets) else None
        self.guard = self.safety.url_guard(start_url)
        self.browser_info: BrowserInfo | None = None
        self.downloads: list[Path] = []
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._context: BrowserContext | None = None
        self._proxy: AllowlistProxy | None = None
        self._pages: list[Page] = []
        self._blocked_tabs: set[Page] = set()
        self._blocked_popups: list[str] = []
        self._opening_first_page = False
        self._events: dict[str, int] = {}
        self._inflight: set[Request] = set()
        self._last_network = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._download_dir: Path | None = self.config.download_dir
        self._started = False
        self._closed = False

    def describe(self) -> dict[str, Any]:
        """What rebuilds this environment (recorded in a run's metadata; used by replays)."""
        return {"kind": "browser", "start_url": self.start_url, "browser": self.config.model_dump(mode="json")}

    @classmethod
    def sync(cls, start_url: str, config: BrowserConfig | None = None, safety: SafetyPolicy | None = None,
             secrets: Secrets | None = None, *, mask_secrets: bool = True) -> SyncBrowserEnv:
        """The same environment behind a synchronous API (:class:`SyncBrowserEnv`)."""
        return SyncBrowserEnv(start_url, config, safety, secrets, mask_secrets=mask_secrets)

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> BrowserEnv:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> Observation:
        """Launch Chromium, open the start URL, and return the first (settled) observation.

        Raises:
            SafetyError: the start URL is outside the allowlist (or ``file://`` while not allowed).
            BrowserNotFoundError: no Chromium anywhere (the hint names the fixes).
            BrowserError: Chromium failed to launch, the start URL could not be opened, or the
                environment was already started or closed.
            MissingExtraError: playwright is not installed (``pip install 'giraffe[agent]'``).
        """
        if self._started or self._closed:
            raise BrowserError("this BrowserEnv was already started" if not self._closed else
                               "this BrowserEnv is closed", hint="create a new BrowserEnv for a new episode")
        if (reason := self.guard.check(self.start_url)) is not None:
            raise SafetyError(f"the start URL {self._short(self.start_url)} is refused: {reason} "
                              f"(allowed: {self.guard.describe()})",
                              hint="add its host to SafetyPolicy.allowed_domains (or set allow_file_urls)")
        require("playwright", extra="agent", purpose="drive the browser environment")
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import async_playwright

        self._started = True
        try:
            self._proxy = AllowlistProxy(self.guard, connect_timeout_s=self.config.connect_timeout_s,
                                      redact=self._redact)
            proxy_url = await self._proxy.start()
            if self.shared is not None:  # a context of a running Chromium, with this episode's proxy
                self._browser = await self.shared.browser()
                self.browser_info = self.shared.info
                await self._open_context(proxy={"server": proxy_url})
            else:
                self._pw = await async_playwright().start()
                self._browser, self.browser_info = await _launch(self._pw, self.config, proxy={"server": proxy_url})
                await self._open_context()
            try:
                await self._page.goto(self.start_url, wait_until="commit",
                                      timeout=self.config.navigation_timeout_s * 1000)
            except PlaywrightError as exc:
                raise BrowserError(f"could not open the start URL {self._short(self.start_url)}: "
                                   f"{self._redact(_first_line(exc))}") from exc
            self._last_network = time.monotonic()
            return await self.observe()
        except BaseException:
            await self.close()
            raise

    async def _open_context(self, proxy: dict[str, str] | None = None) -> None:
        assert self._browser is not None
        cfg = self.config
        context = await self._browser.new_context(
            proxy=proxy, viewport={"width": cfg.viewport_css[0], "height": cfg.viewport_css[1]},
            device_scale_factor=cfg.device_scale_factor, accept_downloads=self.safety.allow_downloads,
            service_workers="block", user_agent=cfg.user_agent, locale=cfg.locale, timezone_id=cfg.timezone_id)
        self._context = context
        context.set_default_timeout(cfg.action_timeout_s * 1000)
        context.set_default_navigation_timeout(cfg.navigation_timeout_s * 1000)
        if cfg.timer_horizon_s > 0:
            await context.add_init_script(TIMER_INIT_JS % {"horizon_ms": round(cfg.timer_horizon_s * 1000)})
        await context.route("**/*", self._route)
        context.on("request", self._on_request)
        context.on("requestfinished", self._on_request_done)
        context.on("requestfailed", self._on_request_done)
        context.on("page", lambda page: self._adopt(page, announce=not self._opening_first_page))
        self._opening_first_page = True
        try:
            page = await context.new_page()
        finally:
            self._opening_first_page = False
        self._adopt(page, announce=False)

    async def close(self) -> None:
        """Close the browser (with a shared one: this episode's context), the proxy and Playwright;
        safe to call twice (and after a failed start)."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._masks is not None:
            await self._masks.close()
        if self.shared is not None and self._context is not None:  # the shared Chromium stays up
            try:
                await self._context.close()
            except Exception as exc:
                logger.debug("closing the browser context: %s", exc)
        elif self.shared is None and self._browser is not None:
            try:
                await self._browser.close()
            except Exception as exc:
                logger.debug("closing the browser: %s", exc)
        if self._proxy is not None:
            await self._proxy.close()
        if self._pw is not None:
            try:
                await self._pw.stop()
            except Exception as exc:
                logger.debug("stopping playwright: %s", exc)
        self._pages.clear()
        self._browser = self._context = self._pw = self._proxy = None

    # ---------------------------------------------------------------- pages and events

    @property
    def page(self) -> Page:
        """The current Playwright page (the newest open tab). For tests and scripted demonstrators."""
        return self._page

    @property
    def _page(self) -> Page:
        if self._closed:
            raise BrowserError("this BrowserEnv is closed")
        if not self._started or self._context is None:
            raise BrowserError("this BrowserEnv is not started", hint="await env.start() first")
        if not self._pages:
            raise BrowserError("every tab of the browser is closed")
        return self._pages[-1]

    def _redact(self, text: str) -> str:
        return self.secrets.redact(text)

    def _short(self, text: str, limit: int = 200) -> str:
        """``text`` redacted, then cut to ``limit`` characters (never leaving a secret's prefix)."""
        return self.secrets.shorten(text, limit)

    def _note(self, message: str) -> None:
        message = self._redact(message)
        self._events[message] = self._events.get(message, 0) + 1

    def _drain_events(self) -> list[str]:
        items = [m if n == 1 else f"{m} (x{n})" for m, n in self._events.items()]
        self._events.clear()
        limit = self.config.max_events
        if len(items) > limit:
            items = [*items[: limit - 1], f"... and {len(items) - limit + 1} more events"]
        return items

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _adopt(self, page: Page, *, announce: bool) -> None:
        if page in self._pages:
            return
        self._pages.append(page)
        page.on("dialog", lambda dialog: self._spawn(self._on_dialog(dialog)))
        page.on("download", lambda download: self._spawn(self._on_download(download)))
        page.on("websocket", self._on_websocket)
        page.on("crash", lambda _page: self._note("the page crashed"))
        page.on("close", self._on_close)
        if announce:
            self._note("a new tab opened and is now the current tab")
            logger.info("a new tab opened: %s", self._short(page.url))
            self._spawn(self._watch_new_tab(page))

    def _on_close(self, page: Page) -> None:
        self._forget_requests_of(page)
        was_current = bool(self._pages) and self._pages[-1] is page
        if page in self._pages:
            self._pages.remove(page)
        if page in self._blocked_tabs:
            self._blocked_tabs.discard(page)
            self._note("the new tab was closed because its page is blocked; the previous tab is current again")
        elif was_current and self._pages and not self._closed:
            self._note("the current tab closed; the previous tab is current again")

    async def _watch_new_tab(self, page: Page) -> None:
        """Close a new tab whose first page was refused (an error page after a blocked popup)."""
        try:
            await page.wait_for_load_state("domcontentloaded", timeout=self.config.settle_timeout_s * 1000)
        except Exception as exc:
            logger.debug("waiting for a new tab: %s", exc)
            return
        if page.url.startswith("chrome-error://") and self._blocked_popups:
            self._blocked_popups.clear()
            self._blocked_tabs.add(page)
            await self._close_tab(page)

    async def _close_tab(self, page: Page) -> None:
        try:
            await page.close()
        except Exception as exc:
            logger.debug("closing a blocked tab: %s", exc)

    async def _route(self, route: Route, request: Request) -> None:
        from playwright.async_api import Error as PlaywrightError

        url = request.url
        reason = self.guard.check(url)
        try:
            if reason is None:
                await route.continue_()
                return
            text = f"blocked request to {self._short(url)} ({reason})"
            self._note(text)
            logger.warning("%s [%s]", self._redact(text), request.resource_type)
            await route.abort("blockedbyclient")
            if request.is_navigation_request():
                try:
                    request.frame  # noqa: B018 - raises for the first navigation of a new tab (a popup)
                except PlaywrightError:
                    self._blocked_popups.append(url)
        except PlaywrightError as exc:  # the page or context went away meanwhile
            logger.debug("route for %s: %s", self._short(url), exc)

    def _on_request(self, request: Request) -> None:
        if request.resource_type in _SETTLE_RESOURCE_TYPES:
            self._inflight.add(request)
            self._last_network = time.monotonic()
        if request.redirected_from is not None and (reason := self.guard.check(request.url)) is not None:
            text = f"blocked redirect to {self._short(request.url)} ({reason})"
            self._note(text)
            logger.warning("%s", self._redact(text))

    def _on_request_done(self, request: Request) -> None:
        if request in self._inflight:
            self._inflight.discard(request)
            self._last_network = time.monotonic()

    def _forget_requests_of(self, page: Page) -> None:
        """Drop in-flight requests of a closed tab (they may never report an end)."""
        for request in list(self._inflight):
            try:
                owner = request.frame.page
            except Exception:  # no frame (a popup's first navigation, a worker)
                owner = None
            if owner is page or owner is None:
                self._inflight.discard(request)

    def _on_websocket(self, ws: WebSocket) -> None:
        if (reason := self.guard.check(ws.url)) is not None:
            text = f"blocked WebSocket to {self._short(ws.url)} ({reason})"
            self._note(text)
            logger.warning("%s", self._redact(text))

    async def _on_dialog(self, dialog: Dialog) -> None:
        accept = self.config.dialogs == "accept" or dialog.type == "beforeunload"
        kind, message = dialog.type, self._short(dialog.message, 300)
        try:
            await (dialog.accept() if accept else dialog.dismiss())
        except Exception as exc:
            logger.debug("handling a %s dialog: %s", kind, exc)
        self._note(f"a {kind} dialog said {message!r} and was {'accepted' if accept else 'dismissed'}")

    async def _on_download(self, download: Download) -> None:
        name = Path(download.suggested_filename.replace("\\", "/")).name or "download"
        source = self._short(download.url)
        if not self.safety.allow_downloads:
            try:
                await download.cancel()
            except Exception as exc:
                logger.debug("cancelling a download: %s", exc)
            text = f"refused download of {name} from {source} (downloads are off)"
            self._note(text)
            logger.warning("%s", self._redact(text))
            return
        if self._download_dir is None:
            self._download_dir = Path(tempfile.mkdtemp(prefix="giraffe-downloads-"))
        self._download_dir.mkdir(parents=True, exist_ok=True)
        target = self._download_dir / name
        stem, suffix, n = target.stem, target.suffix, 1
        while target.exists():
            target = self._download_dir / f"{stem} ({n}){suffix}"
            n += 1
        try:
            await download.save_as(target)
        except Exception as exc:
            self._note(f"download of {name} failed: {_first_line(exc)}")
            return
        self.downloads.append(target)
        self._note(f"downloaded {name} ({target.stat().st_size} bytes)")
        logger.info("saved download %s from %s to %s", name, self._redact(source), target)

    # ---------------------------------------------------------------- observe

    async def _probe(self, page: Page, timeout_s: float) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(page.evaluate(PROBE_JS), max(timeout_s, 0.05))
        except asyncio.TimeoutError:
            return None
        except Exception as exc:  # navigating: the execution context was destroyed
            logger.debug("settle probe: %s", _first_line(exc))
            return None

    async def _settle(self) -> None:
        cfg = self.config
        deadline = time.monotonic() + cfg.settle_timeout_s
        last_scroll: tuple[float, float] | None = None
        busy: str | None = "unknown"
        while (now := time.monotonic()) < deadline:
            if self._inflight or now - self._last_network < cfg.network_quiet_s:
                busy = "network"
            elif any(not t.done() for t in self._tasks):
                busy = "event handlers"
            else:
                probe = await self._probe(self._page, deadline - now)
                if probe is None:
                    busy = "navigating"
                elif probe["ready"] != "complete":
                    busy = "loading"
                elif probe["timers"] or probe["anims"]:
                    busy = "timers or animations"
                elif (probe["sx"], probe["sy"]) != last_scroll:
                    busy = "scrolling"
                else:
                    busy = None
                if probe is not None:
                    last_scroll = (probe["sx"], probe["sy"])
            if busy is None:
                break
            await asyncio.sleep(_POLL_S)
        if busy is not None:
            logger.debug("the page did not settle within %.1f s (%s); observing anyway", cfg.settle_timeout_s, busy)
        if cfg.animation_delay_s:
            await asyncio.sleep(cfg.animation_delay_s)

    async def _elements(self, page: Page) -> list[Element]:
        rows = await page.evaluate(ELEMENTS_JS, 1 << 20)  # cut here, after redaction
        return [Element(tag=r["tag"], text=self.secrets.shorten(r["text"], 200, ellipsis=""),
                        box=(float(r["box"][0]), float(r["box"][1]), float(r["box"][2]), float(r["box"][3])),
                        id=r["id"], classes=r["classes"],
                        value=None if r["value"] is None else self._redact(str(r["value"])),
                        focused=bool(r["focused"]))
                for r in rows]

    async def _mask_boxes(self, page: Page) -> list[Box] | None:
        """Where a secret may show now (CSS px), ``[]`` without secrets or with masking off;
        ``None`` when the page cannot be checked (the whole screen is then hidden)."""
        if self._masks is None or not self.mask_secrets:
            return []
        try:
            return await asyncio.wait_for(self._masks.boxes(page), self.config.action_timeout_s)
        except Exception as exc:  # unreadable, timed out, crashed: fail closed
            reason = self._redact(_first_line(exc))
            logger.warning("hiding the whole screen: the page could not be checked for secrets (%s)", reason)
            return None

    def _masked(self, image: Image.Image, *boxes: list[Box] | None) -> Image.Image:
        if any(b is None for b in boxes):
            self._note("the whole screen is hidden: the page could not be checked for secrets")
            return hide_all(image)
        found = [box for group in boxes if group for box in group]
        return paint_boxes(image, found, self.config.device_scale_factor) if found else image

    async def observe(self) -> Observation:
        """Wait for the page to settle (see the module doc), then screenshot the viewport.

        Returns an observation whose image is ``viewport_css * device_scale_factor`` device
        pixels, with every place a secret may show painted over (unless ``mask_secrets`` is off),
        and the URL, title, and the events since the previous observation.

        Raises:
            BrowserError: not started, closed, or the page cannot be captured (crashed).
        """
        await self._settle()
        page = self._page
        before = await self._mask_boxes(page)
        try:
            png = await page.screenshot(type="png", timeout=self.config.action_timeout_s * 1000)
            elements = await self._elements(page) if self.config.capture_elements else None
        except Exception as exc:
            raise BrowserError(f"could not capture the page: {self._redact(_first_line(exc))}") from exc
        after = await self._mask_boxes(page)  # the union of both: a box that moved is covered
        image = Image.open(io.BytesIO(png))
        image.load()
        image = self._masked(image.convert("RGB"), before, after)
        try:
            title: str | None = self._redact(await page.title())
        except Exception:
            title = None
        size = page.viewport_size
        viewport = (size["width"], size["height"]) if size else self.config.viewport_css
        return Observation(image=image, viewport_css=viewport,
                           device_scale_factor=self.config.device_scale_factor, wall_time=time.time(),
                           url=self._redact(page.url), title=title, events=self._drain_events(), elements=elements)

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        """Evaluate JavaScript in the current page (tests and scripted demonstrators only)."""
        return await self._page.evaluate(expression, arg)

    # ---------------------------------------------------------------- act

    async def act(self, action: Action, transform: CoordinateTransform) -> ActResult:
        """Execute ``action`` with positions mapped by ``transform`` (the frame the model looked at).

        Returns ``ActResult(ok=False, message)`` for a failed action (nothing at the point, an
        unknown key, a refused URL, a timeout, an unknown secret...) and for ``zoom``/``done``/
        ``fail``, which the agent loop handles. Messages are safe to show to the model and to log.

        Raises:
            BrowserError: the environment is not started or is closed.
        """
        page = self._page
        tag = getattr(action, "action", type(action).__name__)
        limit = self.config.action_timeout_s + self.config.navigation_timeout_s
        if isinstance(action, Wait):
            limit += action.seconds
        try:
            result = await asyncio.wait_for(self._dispatch(page, action, transform), limit)
        except asyncio.TimeoutError:
            result = ActResult(False, f"{tag} timed out after {limit:.0f} s")
        except SecretError as exc:
            result = ActResult(False, f"{tag} failed: {exc.message}")
        except Exception as exc:
            result = ActResult(False, f"{tag} failed: {_first_line(exc)}")
        result = ActResult(result.ok, self._redact(result.message))
        self._last_network = max(self._last_network, time.monotonic())
        logger.info("action %s -> %s: %s", self._redact(action_to_json(action)),
                    "ok" if result.ok else "failed", result.message)
        return result

    async def _dispatch(self, page: Page, action: Action, transform: CoordinateTransform) -> ActResult:
        cfg = self.config
        mouse, keyboard = page.mouse, page.keyboard
        if isinstance(action, _AGENT_LOOP_ACTIONS):
            return ActResult(False, f"'{action.action}' is handled by the agent loop, not by the browser environment")
        if isinstance(action, Click):
            x, y = transform.to_css(action.x, action.y, action.space)
            await mouse.click(x, y)
            return ActResult(True, f"clicked at ({x:.0f}, {y:.0f}) CSS px")
        if isinstance(action, DoubleClick):
            x, y = transform.to_css(action.x, action.y, action.space)
            await mouse.dblclick(x, y)
            return ActResult(True, f"double-clicked at ({x:.0f}, {y:.0f}) CSS px")
        if isinstance(action, RightClick):
            x, y = transform.to_css(action.x, action.y, action.space)
            await mouse.click(x, y, button="right")
            return ActResult(True, f"right-clicked at ({x:.0f}, {y:.0f}) CSS px")
        if isinstance(action, Type):
            text = self.secrets.fill(action.text)  # SecretError for an unknown name, before any input
            where = ""
            if action.x is not None and action.y is not None:
                x, y = transform.to_css(action.x, action.y, action.space)
                await mouse.click(x, y)
                where = f" at ({x:.0f}, {y:.0f}) CSS px"
            if self._masks is not None and (Secrets.references(action.text) or self.secrets.contains_value(text)):
                await self._masks.type_text(page, text)  # follows the fields it goes into
            else:
                await keyboard.type(text)
            if action.submit:
                await keyboard.press("Enter")
            shown = self._short(action.text, 80)  # the placeholders, never the filled text
            return ActResult(True, f"typed {shown!r}{where}" + (" and pressed Enter" if action.submit else ""))
        if isinstance(action, KeyPress):
            await keyboard.press(action.keys)
            return ActResult(True, f"pressed {action.keys}")
        if isinstance(action, Scroll):
            if action.x is not None and action.y is not None:
                x, y = transform.to_css(action.x, action.y, action.space)
            else:
                x, y = transform.viewport_css[0] / 2, transform.viewport_css[1] / 2
            step = 100.0 * action.amount
            dx, dy = {"down": (0.0, step), "up": (0.0, -step), "right": (step, 0.0), "left": (-step, 0.0)}[
                action.direction]
            await mouse.move(x, y)
            await mouse.wheel(dx, dy)
            return ActResult(True, f"scrolled {action.direction} {step:.0f} CSS px at ({x:.0f}, {y:.0f})")
        if isinstance(action, Drag):
            x0, y0 = transform.to_css(action.x, action.y, action.space)
            x1, y1 = transform.to_css(action.to_x, action.to_y, action.space)
            await mouse.move(x0, y0)
            await mouse.down()
            await mouse.move(x1, y1, steps=cfg.drag_steps)
            await mouse.up()
            return ActResult(True, f"dragged from ({x0:.0f}, {y0:.0f}) to ({x1:.0f}, {y1:.0f}) CSS px")
        if isinstance(action, Goto):
            return await self._goto(page, action.url)
        if isinstance(action, Back):
            if not await self._can_go_back(page):
                return ActResult(False, "there is no previous page to go back to")
            await page.go_back(wait_until="commit", timeout=cfg.navigation_timeout_s * 1000)
            return ActResult(True, f"went back to {self._short(page.url)}")
        if isinstance(action, Wait):
            await asyncio.sleep(action.seconds)
            return ActResult(True, f"waited {action.seconds:g} s")
        if isinstance(action, SelectOption):
            x, y = transform.to_css(action.x, action.y, action.space)
            out = await page.evaluate(SELECT_JS, [x, y, action.value])
            where = f"({x:.0f}, {y:.0f}) CSS px"
            error = out.get("error")
            if error == "not-select" or error == "nothing":
                found = f" (found <{out['tag']}>)" if out.get("tag") else ""
                return ActResult(False, f"there is no <select> at {where}{found}")
            if error == "no-option":
                options = ", ".join(repr(o) for o in out["options"])
                return ActResult(False, f"the <select> at {where} has no option {action.value!r}; options: {options}")
            if error == "disabled":
                return ActResult(False, f"the option {out['label']!r} of the <select> at {where} is disabled")
            return ActResult(True, f"selected {out['label']!r} in the <select> at {where}")
        return ActResult(False, f"unsupported action {type(action).__name__}")

    async def _can_go_back(self, page: Page) -> bool:
        """Whether the tab has a previous history entry other than the blank page it was born with."""
        session = await page.context.new_cdp_session(page)
        try:
            history = await session.send("Page.getNavigationHistory")
        finally:
            await session.detach()
        index, entries = history["currentIndex"], history["entries"]
        return index > 0 and not (index == 1 and entries[0]["url"] == "about:blank")

    def _resolve_url(self, page: Page, url: str) -> str:
        url = url.strip()
        current = page.url
        current_scheme = urlsplit(current).scheme.lower() if current else ""
        web_scheme = current_scheme if current_scheme in ("http", "https") else "https"
        if _SCHEME.match(url):
            return url
        if url.startswith("//"):
            return f"{web_scheme}:{url}"
        if url.startswith(("/", "?", "#", "./", "../")) and current_scheme in ("http", "https", "file"):
            return urljoin(current, url)
        return f"{web_scheme}://{url}"

    async def _goto(self, page: Page, raw_url: str) -> ActResult:
        url = self._resolve_url(page, raw_url)
        if (reason := self.guard.check(url)) is not None:
            logger.warning("goto blocked: %s (%s)", self._short(url), reason)
            return ActResult(False, f"goto blocked: {self._short(url)} is {reason}"
                             + (f" (allowed: {self.guard.describe()})" if reason.startswith("not in") else ""))
        response = await page.goto(url, wait_until="commit", timeout=self.config.navigation_timeout_s * 1000)
        status = f" (HTTP {response.status})" if response is not None and response.status >= 400 else ""
        return ActResult(True, f"opened {self._short(page.url)}{status}")


# --------------------------------------------------------------------------------------------
# Synchronous API
# --------------------------------------------------------------------------------------------

class SyncBrowserEnv:
    """:class:`BrowserEnv` behind a blocking API, for plain scripts and notebooks.

    The async core runs on a private event loop in a daemon thread; every method submits to it
    and waits (at most ``call_timeout_s`` seconds). Use it from one thread at a time::

        with SyncBrowserEnv("http://127.0.0.1:8000/") as env:
            obs = env.start()
            env.act(Click(x=500, y=500), obs.transform((1148, 728)))
    """

    def __init__(self, start_url: str, config: BrowserConfig | None = None, safety: SafetyPolicy | None = None,
                 secrets: Secrets | None = None, *, call_timeout_s: float = 600.0,
                 mask_secrets: bool = True) -> None:
        self.env = BrowserEnv(start_url, config, safety, secrets, mask_secrets=mask_secrets)
        self._call_timeout_s = call_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="giraffe-browser-loop", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self, factory: Callable[[], Awaitable[T]]) -> T:
        if self._closed:
            raise BrowserError("this SyncBrowserEnv is closed")
        if threading.current_thread() is self._thread:
            raise BrowserError("SyncBrowserEnv methods cannot be called from its own event loop thread")

        async def call() -> T:
            return await factory()

        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        try:
            return future.result(self._call_timeout_s)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise BrowserError(f"the browser did not answer within {self._call_timeout_s:g} s") from exc

    @property
    def config(self) -> BrowserConfig:
        """The environment's :class:`BrowserConfig`."""
        return self.env.config

    @property
    def browser_info(self) -> BrowserInfo | None:
        """The Chromium launched (after :meth:`start`)."""
        return self.env.browser_info

    @property
    def downloads(self) -> list[Path]:
        """Paths of the downloads saved."""
        return list(self.env.downloads)

    def start(self) -> Observation:
        """:meth:`BrowserEnv.start`, blocking."""
        return self._run(self.env.start)

    def act(self, action: Action, transform: CoordinateTransform) -> ActResult:
        """:meth:`BrowserEnv.act`, blocking."""
        return self._run(lambda: self.env.act(action, transform))

    def observe(self) -> Observation:
        """:meth:`BrowserEnv.observe`, blocking."""
        return self._run(self.env.observe)

    def evaluate(self, expression: str, arg: Any = None) -> Any:
        """:meth:`BrowserEnv.evaluate`, blocking (tests and scripted demonstrators only)."""
        return self._run(lambda: self.env.evaluate(expression, arg))

    def close(self) -> None:
        """Close the browser and stop the private loop; safe to call twice."""
        if self._closed:
            return
        try:
            self._run(self.env.close)
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> SyncBrowserEnv:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
