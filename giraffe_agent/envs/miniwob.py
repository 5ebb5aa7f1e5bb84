"""MiniWoB++ tasks in the browser environment, scored by MiniWoB's own reward.

The task pages ship in the ``miniwob`` PyPI package (``miniwob/html/miniwob/*.html``);
:class:`MiniWoBServer` serves them on loopback and :class:`MiniWoBEnv` drives one episode through
:class:`~giraffe_agent.envs.browser.BrowserEnv`, exactly as MiniWoB's own Selenium driver does:
seed the page's random generator (``Math.seedrandom(seed)``), start the episode
(``core.startEpisodeReal()``), read the instruction (``core.getUtterance()``), and after every
action read the page's reward globals (``WOB_DONE_GLOBAL``, ``WOB_RAW_REWARD_GLOBAL``). The model
sees screenshots of the 160x210 CSS-pixel task area only; the reward is never shown to it (MiniWoB's
reward display beside the task area is hidden, so the page cannot scroll sideways to it).

MiniWoB ends an episode after 10 seconds by default; :class:`MiniWoBEnv` sets
``core.EPISODE_MAX_TIME`` to ``episode_seconds`` (default 600) so that slow models on CPUs are not
cut off. The raw reward (+1 success, -1 failure, 0 unfinished) is not scaled by time.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from giraffe_agent.envs.base import Observation
from giraffe_agent.envs.browser import BrowserConfig, BrowserEnv, SharedBrowser
from giraffe_agent.safety import SafetyPolicy
from giraffe_core.errors import InputError, MissingExtraError

__all__ = ["MINIWOB_VIEWPORT", "MiniWoBEnv", "MiniWoBServer", "miniwob_html_dir"]

logger = logging.getLogger(__name__)

#: the task area of every (non-flight) MiniWoB++ task, CSS pixels
MINIWOB_VIEWPORT = (160, 210)

#: MiniWoB's own HUD for humans (reward display, click and attention canvases) sits at x >= 165 CSS
#: px, outside the task area. In a 160 px wide viewport it makes the page scrollable sideways, and
#: a task that focuses an element when it starts (click-dialog's jQuery UI dialog) scrolls the
#: task area out of view. MiniWoB's own driver crops a larger window instead; hiding the HUD gives
#: the same picture. The reward globals the environment reads are unaffected.
_HIDE_HUD_JS = (
    "(() => { const s = document.createElement('style');"
    " s.textContent = '#reward-display, #click-canvas, #attention-canvas { display: none !important; }';"
    " document.head.appendChild(s); })();"
)


#: a MiniWoB++ task name: the file name of its page without ``.html`` (no path, no dots)
_TASK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def miniwob_html_dir() -> Path:
    """The ``html/`` folder of the installed ``miniwob`` package (found without importing it)."""
    spec = importlib.util.find_spec("miniwob")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("the MiniWoB++ task pages are not installed",
                                hint="run: pip install 'giraffe[miniwob]' (or pip install miniwob)")
    return Path(next(iter(spec.submodule_search_locations))) / "html"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("miniwob server: " + format, *args)


class MiniWoBServer:
    """The MiniWoB++ pages on ``http://127.0.0.1:PORT/`` (a free port), in a background thread."""

    def __init__(self, html_dir: Path | None = None) -> None:
        self.html_dir = html_dir or miniwob_html_dir()
        handler = functools.partial(_QuietHandler, directory=str(self.html_dir))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="miniwob-http", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, task: str) -> str:
        """URL of a task such as ``"click-button"``."""
        if not _TASK_NAME.fullmatch(task) or not (self.html_dir / "miniwob" / f"{task}.html").is_file():
            raise InputError(f"unknown MiniWoB++ task {task!r}",
                             hint=f"tasks are the file names in {self.html_dir / 'miniwob'} without .html")
        return f"{self.base_url}miniwob/{task}.html"

    def close(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MiniWoBServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class MiniWoBEnv(BrowserEnv):
    """One MiniWoB++ episode of ``task`` with ``seed``.

    After :meth:`start`, :attr:`utterance` (also :attr:`instruction`) holds the task's instruction:
    an :class:`~giraffe_agent.loop.Agent` given no task uses it as the task text.
    Every observation carries ``terminal`` (the page ended the episode) and ``info``
    (``reward``: MiniWoB's raw reward, ``env_reward``: its time-scaled reward, ``reason``,
    ``task``, ``seed``).
    """

    def __init__(self, task: str, seed: int, server: MiniWoBServer, *, config: BrowserConfig | None = None,
                 safety: SafetyPolicy | None = None, episode_seconds: float = 600.0,
                 shared: SharedBrowser | None = None) -> None:
        config = config or BrowserConfig(viewport_css=MINIWOB_VIEWPORT)
        super().__init__(server.url(task), config, safety, shared=shared)
        self.task, self.seed = task, int(seed)
        self.episode_seconds = float(episode_seconds)
        self.utterance: str | None = None

    def describe(self) -> dict[str, Any]:
        """What rebuilds this environment: the task, the seed and the browser settings."""
        return {**super().describe(), "kind": "miniwob", "task": self.task, "seed": self.seed,
                "episode_seconds": self.episode_seconds}

    @property
    def instruction(self) -> str | None:
        """The task's instruction once started (what :class:`~giraffe_agent.loop.Agent` uses
        when it is given no task)."""
        return self.utterance

    async def start(self) -> Observation:
        await super().start()
        await self.evaluate(
            _HIDE_HUD_JS +
            f"core.EPISODE_MAX_TIME = {int(self.episode_seconds * 1000)};"
            f"Math.seedrandom({json.dumps(str(self.seed))});"
            "core.startEpisodeReal();"
        )
        for _ in range(100):  # MiniWoB's own driver waits up to 1 s for WOB_TASK_READY
            if await self.evaluate("WOB_TASK_READY"):
                break
            await asyncio.sleep(0.05)
        else:
            raise InputError(f"MiniWoB++ task {self.task} did not become ready within 5 s")
        await self.evaluate("window.scrollTo(0, 0)")
        utterance = await self.evaluate("core.getUtterance()")
        self.utterance = utterance["utterance"] if isinstance(utterance, dict) else str(utterance)
        return await self.observe()

    async def observe(self) -> Observation:
        observation = await super().observe()
        state = await self.evaluate(
            "({done: WOB_DONE_GLOBAL, reward: WOB_RAW_REWARD_GLOBAL, env_reward: WOB_REWARD_GLOBAL,"
            " reason: WOB_REWARD_REASON})"
        )
        observation.terminal = bool(state["done"])
        observation.info = {"task": self.task, "seed": self.seed, "reward": float(state["reward"]),
                            "env_reward": float(state["env_reward"]), "reason": state["reason"]}
        return observation
