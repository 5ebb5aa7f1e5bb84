"""Optional dependencies ("extras") and the error that names the ``pip install`` fixing them.

The core package imports and runs with its base requirements only. Heavier parts live in extras
declared in ``pyproject.toml``::

    agent    playwright, mss, openai, av  (browser and desktop, OpenAI-compatible endpoints, video)
    miniwob  miniwob                      (MiniWoB++ task pages, for tests, evals and demos)
    train  accelerate, peft, deepspeed
    gpu    flash-attn
    serve  fastapi, uvicorn, httpx   (``giraffe serve``, the OpenAI-compatible server)
    dev    pytest and tools

Code that needs one calls :func:`require` at the point of use, never at import time.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from types import ModuleType

from giraffe_core.errors import MissingExtraError

__all__ = ["EXTRAS", "extra_status", "is_available", "require"]

#: extra name -> {import name: distribution name}
EXTRAS: dict[str, dict[str, str]] = {
    "agent": {"playwright": "playwright", "mss": "mss", "openai": "openai", "av": "av"},
    "miniwob": {"miniwob": "miniwob"},
    "train": {"accelerate": "accelerate", "peft": "peft", "deepspeed": "deepspeed", "datasets": "datasets",
              "tensorboard": "tensorboard"},
    "gpu": {"flash_attn": "flash-attn"},
    "evals": {"matplotlib": "matplotlib"},
    "serve": {"fastapi": "fastapi", "uvicorn": "uvicorn", "httpx": "httpx"},
    "dev": {"pytest": "pytest"},
}


def is_available(module: str) -> bool:
    """True if ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _extra_of(module: str) -> str | None:
    for extra, modules in EXTRAS.items():
        if module in modules:
            return extra
    return None


def require(module: str, *, extra: str | None = None, purpose: str | None = None) -> ModuleType:
    """Import and return ``module``, or raise :class:`MissingExtraError` naming the fix.

    Args:
        module: import name, e.g. ``"playwright"`` or ``"flash_attn"``.
        extra: the Giraffe extra that provides it; looked up in :data:`EXTRAS` when omitted.
        purpose: what the caller wanted to do, quoted in the message.
    """
    extra = extra or _extra_of(module)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if extra is not None:
            fix = f"pip install 'giraffe[{extra}]'"
        else:
            fix = f"pip install {module}"
        what = f" (needed to {purpose})" if purpose else ""
        raise MissingExtraError(
            f"the optional dependency '{module}' is not installed{what}: {exc}",
            hint=f"run: {fix}",
        ) from exc


def extra_status() -> dict[str, dict[str, str | None]]:
    """For each extra, the installed version of each of its distributions (``None`` if missing)."""
    status: dict[str, dict[str, str | None]] = {}
    for extra, modules in EXTRAS.items():
        status[extra] = {}
        for module, dist in modules.items():
            version: str | None = None
            if is_available(module):
                try:
                    version = importlib.metadata.version(dist)
                except importlib.metadata.PackageNotFoundError:
                    version = "unknown"
            status[extra][dist] = version
    return status
