"""Environments the agent sees and acts in: a Playwright browser, MiniWoB++ tasks in it, and which
Chromium to launch."""

from giraffe_agent.envs.base import ActResult, Element, Environment, Observation
from giraffe_agent.envs.browser import (
    DEFAULT_CHROMIUM_ARGS,
    BrowserConfig,
    BrowserEnv,
    BrowserError,
    BrowserInfo,
    BrowserNotFoundError,
    SharedBrowser,
    SyncBrowserEnv,
)
from giraffe_agent.envs.chromium import SYSTEM_NAMES, ChromiumInfo, find_chromium
from giraffe_agent.envs.chromium_flags import (
    SAFETY_CHROMIUM_ARGS,
    UnsafeChromiumFlagError,
    check_chromium_args,
    launch_args,
)
from giraffe_agent.envs.miniwob import MINIWOB_VIEWPORT, MiniWoBEnv, MiniWoBServer, miniwob_html_dir
from giraffe_agent.envs.proxy import AllowlistProxy

__all__ = [
    "ActResult",
    "AllowlistProxy",
    "BrowserConfig",
    "BrowserEnv",
    "BrowserError",
    "BrowserInfo",
    "BrowserNotFoundError",
    "ChromiumInfo",
    "DEFAULT_CHROMIUM_ARGS",
    "Element",
    "Environment",
    "MINIWOB_VIEWPORT",
    "MiniWoBEnv",
    "MiniWoBServer",
    "Observation",
    "SAFETY_CHROMIUM_ARGS",
    "SYSTEM_NAMES",
    "SharedBrowser",
    "SyncBrowserEnv",
    "UnsafeChromiumFlagError",
    "check_chromium_args",
    "find_chromium",
    "launch_args",
    "miniwob_html_dir",
]
