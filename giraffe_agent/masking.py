"""Masking: painting over the parts of a screenshot that may show a secret, before the frame is
stored (``frames/``), shown in a report or sent to a model.

Where the boxes come from is the environment's business (the browser environment's are described
in :mod:`giraffe_agent.envs.secret_masks`); this module only turns boxes in CSS pixels into
solid rectangles of device pixels. A mask is opaque (:data:`MASK_COLOR`) and padded by
:data:`MASK_PAD_CSS` on every side, so glyphs that overhang their box and anti-aliased edges are
covered too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from PIL import Image, ImageDraw

__all__ = ["MASK_COLOR", "MASK_PAD_CSS", "Box", "device_box", "hide_all", "paint_boxes"]

#: (x, y, width, height) in CSS pixels of the viewport (its top left corner is (0, 0))
Box = tuple[float, float, float, float]

#: the fill of a mask (RGB)
MASK_COLOR = (0, 0, 0)
#: padding of a mask on every side, CSS pixels
MASK_PAD_CSS = 2.0


def device_box(box: Box, scale: float, size: tuple[int, int],
               pad_css: float = MASK_PAD_CSS) -> tuple[int, int, int, int] | None:
    """``box`` (CSS px) as (x0, y0, x1, y1) device pixels of an image of ``size`` (width, height)
    at ``scale`` device pixels per CSS pixel: padded, rounded outwards, clipped to the image;
    ``None`` when nothing of it is on the image (or it is empty or not finite)."""
    x, y, width, height = box
    if not all(math.isfinite(v) for v in box) or width <= 0 or height <= 0:
        return None
    x0 = max(0, math.floor((x - pad_css) * scale))
    y0 = max(0, math.floor((y - pad_css) * scale))
    x1 = min(size[0], math.ceil((x + width + pad_css) * scale))
    y1 = min(size[1], math.ceil((y + height + pad_css) * scale))
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def paint_boxes(image: Image.Image, boxes: Iterable[Box], scale: float, *,
                color: tuple[int, int, int] = MASK_COLOR, pad_css: float = MASK_PAD_CSS) -> Image.Image:
    """A copy of ``image`` (RGB) with every box of ``boxes`` (CSS px) painted over in ``color``.

    Args:
        image: the screenshot, ``viewport_css * scale`` device pixels.
        boxes: (x, y, width, height) in CSS pixels of the viewport.
        scale: device pixels per CSS pixel (the device scale factor).
        color: the fill; pad_css: padding on every side, CSS px.
    """
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    for box in boxes:
        pixels = device_box(box, scale, out.size, pad_css)
        if pixels is not None:
            draw.rectangle((pixels[0], pixels[1], pixels[2] - 1, pixels[3] - 1), fill=color)
    return out


def hide_all(image: Image.Image, color: tuple[int, int, int] = MASK_COLOR) -> Image.Image:
    """An image of ``image``'s size filled with ``color``: the whole screen hidden."""
    return Image.new("RGB", image.size, color)
