"""Shared fixtures: the tiny offline engine and small images of mixed sizes; the leak check.

Tests never touch the network: ``HF_HUB_OFFLINE`` is set before transformers is imported, so a
hub id that is not in the local cache fails at once instead of retrying for ~20 s.

Every test is checked for leaks (:mod:`leak_check`): a thread, listening socket or child process
it started and did not stop fails it, naming it. ``-p no:leak-check`` turns the check off.

Every test that needs Chromium (marked with ``browser_fixtures.requires_browser``) is also marked
``slow``: a browser takes seconds to start, so ``python -m pytest -m "not slow"`` runs without one.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
from browser_fixtures import requires_browser
from leak_check import LeakChecker
from PIL import Image


def pytest_configure(config: pytest.Config) -> None:
    """Register the leak check (unless ``-p no:leak-check`` blocked the name).

    tqdm (used by transformers and accelerate when they load weights) starts one monitor thread per
    process that never ends; ``monitor_interval = 0`` is tqdm's switch for running without it, so
    no test appears to leak it.
    """
    import tqdm

    tqdm.tqdm.monitor_interval = 0
    if not config.pluginmanager.is_blocked("leak-check"):
        config.pluginmanager.register(LeakChecker(Path(__file__).parent), "leak-check")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs Chromium ``slow`` (before ``-m`` selects)."""
    for item in items:
        if any(mark == requires_browser.mark for mark in item.iter_markers("skipif")):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_engine():
    """``load("tiny")``: the offline preset (seed 0, 4096-token context, CPU). Do not mutate it."""
    from giraffe_core.engine import load

    return load("tiny")


@pytest.fixture(scope="session")
def mixed_images() -> list[Image.Image]:
    """Three small screenshots of different sizes and aspect ratios (landscape, portrait, square)."""
    from giraffe_core.samples import screenshot

    return [
        screenshot(300, 200, title="Results", seed=0),
        screenshot(120, 260, title="Phone", seed=1),
        screenshot(200, 200, title="Dialog", seed=2),
    ]


@pytest.fixture()
def mixed_chat(mixed_images) -> list[dict]:
    """A chat holding the three ``mixed_images`` with mixed tiers (60 tokens, 20 tokens, default)."""
    a, b, c = mixed_images
    return [
        {"role": "user", "content": [
            {"type": "image", "image": a, "max_tokens": 60},
            {"type": "text", "text": "Frame one, then"},
            {"type": "image", "image": b, "max_tokens": 20},
            {"type": "image", "image": c},
            {"type": "text", "text": "What changed between the frames?"},
        ]},
    ]
