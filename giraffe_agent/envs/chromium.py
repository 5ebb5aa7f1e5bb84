"""Which Chromium the browser environment launches: Playwright's own, else a system Chromium.

Order: the ``GIRAFFE_CHROMIUM`` environment variable (a path), Playwright's downloaded Chromium
when the ``playwright`` package is installed and its browser is present, then the first of
``chromium``, ``chromium-browser``, ``google-chrome``, ``google-chrome-stable`` on ``PATH``
(Debian's ``apt-get install chromium`` provides ``chromium``).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from giraffe_core.extras import is_available

__all__ = ["ChromiumInfo", "SYSTEM_NAMES", "find_chromium"]

logger = logging.getLogger(__name__)

SYSTEM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@dataclass(frozen=True)
class ChromiumInfo:
    """A Chromium executable and where it was found (``env``, ``playwright`` or ``system``)."""

    path: str
    source: Literal["env", "playwright", "system"]


def _playwright_chromium() -> str | None:
    if not is_available("playwright"):
        return None
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            path = pw.chromium.executable_path
    except Exception as exc:
        logger.debug("playwright could not report its chromium: %s", exc)
        return None
    return path if path and Path(path).is_file() else None


def find_chromium(*, use_playwright: bool = True) -> ChromiumInfo | None:
    """The Chromium the SDK would launch, or ``None`` when there is none.

    Args:
        use_playwright: look for Playwright's own browser (starts its driver, ~0.5 s).
    """
    override = os.environ.get("GIRAFFE_CHROMIUM")
    if override:
        if Path(override).is_file() and os.access(override, os.X_OK):
            return ChromiumInfo(override, "env")
        logger.warning("GIRAFFE_CHROMIUM=%s is not an executable file; ignoring it", override)
    if use_playwright and (path := _playwright_chromium()):
        return ChromiumInfo(path, "playwright")
    for name in SYSTEM_NAMES:
        if path := shutil.which(name):
            return ChromiumInfo(path, "system")
    return None
