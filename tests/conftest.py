"""Shared fixtures: the tiny offline engine and small images of mixed sizes.

Tests never touch the network: ``HF_HUB_OFFLINE`` is set before transformers is imported, so a
hub id that is not in the local cache fails at once instead of retrying for ~20 s.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from PIL import Image


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
