"""Synthetic sample frames, drawn locally (nothing downloaded), for demos, examples and tests."""

from __future__ import annotations

from PIL import Image, ImageDraw

__all__ = ["sample_frames", "screenshot"]


def screenshot(width: int, height: int, *, title: str = "Example", seed: int = 0) -> Image.Image:
    """A drawn stand-in for a web-page screenshot: a title bar, a text field and buttons.

    Args:
        width, height: size in pixels.
        title: text of the title bar.
        seed: shifts colours and layout so different seeds give different frames.
    """
    image = Image.new("RGB", (width, height), (245 - seed % 40, 245, 250))
    draw = ImageDraw.Draw(image)
    bar = max(12, height // 10)
    draw.rectangle([0, 0, width, bar], fill=(40 + 30 * (seed % 5), 80, 160))
    draw.text((8, bar // 4), title, fill=(255, 255, 255))
    field_top = bar + height // 8
    draw.rectangle([width // 10, field_top, width * 7 // 10, field_top + bar], outline=(90, 90, 90), width=2)
    for i in range(3):
        left = width // 10 + i * width // 4
        top = field_top + 2 * bar
        draw.rectangle([left, top, left + width // 6, top + bar], fill=((50 * (i + seed)) % 255, 140, 90))
        draw.text((left + 4, top + bar // 4), f"Button {i + 1}", fill=(0, 0, 0))
    return image


def sample_frames() -> list[Image.Image]:
    """Three screenshots of different sizes (1280x800, 640x400 and 360x720 pixels)."""
    return [
        screenshot(1280, 800, title="Search results", seed=0),
        screenshot(640, 400, title="Login", seed=1),
        screenshot(360, 720, title="Phone view", seed=2),
    ]
