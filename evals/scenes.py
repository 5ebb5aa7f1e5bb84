"""Synthetic scenes drawn with PIL: coloured shapes and word signs on varied backgrounds.

A scene is a JSON-ready *spec* (:class:`Scene`): a background and a few placed objects, with
boxes in relative coordinates (0-1 of the width and height), so one spec renders at any size.
:func:`render_scene` draws it; the same spec and size always give the same pixels (for a given
Pillow version: words use Pillow's built-in font).

Concepts (:data:`CONCEPTS`, 80 of them): 64 coloured shapes (8 colours x 8 shapes, "a red
circle") and 16 word signs ("a sign that reads \\"RIVER\\""). Shapes are saturated and outlined
in near-black; backgrounds are muted (solid, gradient, stripes, checkerboard, noise, or a
horizon of sky over ground) so that every shape stands out on every background. Objects sit in
distinct cells of a 3 x 3 grid, so they never overlap: at most 9 objects per scene.

:func:`random_scene` draws a scene that contains every required concept and none of the
forbidden ones; fillers are other concepts, never repeated within a scene.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel, ConfigDict, Field

from giraffe_core.errors import ConfigError

__all__ = [
    "Background",
    "COLORS",
    "CONCEPTS",
    "Concept",
    "Placed",
    "SHAPES",
    "Scene",
    "WORDS",
    "draw_placed",
    "random_scene",
    "render_scene",
]

#: colour name -> RGB of the shapes
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38), "green": (22, 163, 74), "blue": (37, 99, 235), "yellow": (250, 204, 21),
    "purple": (147, 51, 234), "orange": (249, 115, 22), "pink": (236, 72, 153), "cyan": (6, 182, 212),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "arrow")
WORDS: tuple[str, ...] = ("RIVER", "PLANET", "GARDEN", "ROCKET", "CASTLE", "MARKET", "WINTER", "BRIDGE",
                          "ISLAND", "FOREST", "SILVER", "TIGER", "OCEAN", "PIANO", "LEMON", "CANDLE")
_OUTLINE = (20, 20, 28)
_GRID = 3


class Concept(BaseModel):
    """Something a scene can show: a coloured shape or a sign with a word."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["shape", "word"]
    color: str | None = None
    shape: str | None = None
    word: str | None = None

    @property
    def key(self) -> str:
        """A short unique name, e.g. ``"red circle"`` or ``"word RIVER"``."""
        return f"{self.color} {self.shape}" if self.kind == "shape" else f"word {self.word}"

    @property
    def phrase(self) -> str:
        """The concept in a question: ``a red circle``, ``a sign that reads "RIVER"``."""
        if self.kind == "shape":
            return f"a {self.color} {self.shape}"
        return f'a sign that reads "{self.word}"'


#: every concept: the 64 coloured shapes, then the 16 word signs
CONCEPTS: tuple[Concept, ...] = (
    *(Concept(kind="shape", color=c, shape=s) for c in COLORS for s in SHAPES),
    *(Concept(kind="word", word=w) for w in WORDS),
)

_INDEX = {c.key: i for i, c in enumerate(CONCEPTS)}


class Background(BaseModel):
    """A scene's background: ``kind`` drawn with two muted colours (RGB); ``period`` in 1/100 of the width."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["solid", "gradient", "stripes", "checker", "noise", "horizon"]
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    period: int = Field(10, ge=2, le=50)
    seed: int = 0


class Placed(BaseModel):
    """A concept drawn in ``box`` = (left, top, right, bottom), fractions of the width and height."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concept: Concept
    box: tuple[float, float, float, float]


class Scene(BaseModel):
    """A background and the objects on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    background: Background
    objects: tuple[Placed, ...]

    def contains(self, concept: Concept) -> bool:
        """Whether ``concept`` is drawn in this scene."""
        return any(p.concept == concept for p in self.objects)


def _muted(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(150, 236, size=3))  # type: ignore[return-value]


def _random_background(rng: np.random.Generator) -> Background:
    kind = ("solid", "gradient", "stripes", "checker", "noise", "horizon")[int(rng.integers(6))]
    return Background(kind=kind, colors=(_muted(rng), _muted(rng)), period=int(rng.integers(5, 21)),
                      seed=int(rng.integers(2**31)))


def random_scene(rng: np.random.Generator, *, required: tuple[Concept, ...] = (), forbidden: tuple[Concept, ...] = (),
                 objects: int = 3) -> Scene:
    """A scene with every ``required`` concept, none of the ``forbidden`` ones, ``objects`` objects in all.

    Raises:
        ConfigError: more than 9 objects, or more required concepts than objects.
    """
    objects = max(objects, len(required))
    if objects > _GRID * _GRID:
        raise ConfigError(f"a scene holds at most {_GRID * _GRID} objects, asked for {objects}")
    banned = {_INDEX[c.key] for c in (*required, *forbidden)}
    pool = [i for i in range(len(CONCEPTS)) if i not in banned]
    fillers = [CONCEPTS[pool[i]] for i in rng.choice(len(pool), objects - len(required), replace=False)]
    chosen = [*required, *fillers]
    order = rng.permutation(len(chosen))
    cells = rng.choice(_GRID * _GRID, len(chosen), replace=False)
    placed = []
    for index, cell in zip(order, cells):
        concept = chosen[int(index)]
        row, col = divmod(int(cell), _GRID)
        if concept.kind == "word":
            width, height = 0.96, float(rng.uniform(0.4, 0.55))
        else:
            width = height = float(rng.uniform(0.6, 0.9))
        left = (col + float(rng.uniform(0, 1 - width))) / _GRID
        top = (row + float(rng.uniform(0, 1 - height))) / _GRID
        placed.append(Placed(concept=concept, box=(round(left, 4), round(top, 4), round(left + width / _GRID, 4),
                                                   round(top + height / _GRID, 4))))
    return Scene(background=_random_background(rng), objects=tuple(placed))


def _draw_background(background: Background, size: tuple[int, int]) -> Image.Image:
    width, height = size
    a = np.array(background.colors[0], dtype=np.float64)
    b = np.array(background.colors[1], dtype=np.float64)
    ys, xs = np.mgrid[0:height, 0:width]
    period = max(2.0, background.period / 100 * width)
    if background.kind == "solid":
        mix = np.zeros((height, width))
    elif background.kind == "gradient":
        mix = ys / max(1, height - 1)
    elif background.kind == "stripes":
        mix = ((xs + ys) // period % 2).astype(np.float64)
    elif background.kind == "checker":
        mix = ((xs // period + ys // period) % 2).astype(np.float64)
    elif background.kind == "noise":
        cells = np.random.default_rng(background.seed).random((height // int(period) + 1, width // int(period) + 1))
        mix = cells[(ys // int(period)), (xs // int(period))]
    else:  # horizon: sky over ground at 40-60 % of the height
        mix = (ys > height * (0.4 + (background.seed % 21) / 100)).astype(np.float64)
    pixels = a * (1 - mix[..., None]) + b * mix[..., None]
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
        angles = [phase + 2 * math.pi * k / n for k in range(n)]
        return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]

    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return ring(3, r, -math.pi / 2)
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)]
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "star":
        outer, inner = ring(5, r, -math.pi / 2), ring(5, r * 0.42, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        t = r * 0.33
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
                (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
                (cx - r, cy - t), (cx - t, cy - t)]
    if shape == "arrow":  # pointing right
        t = r * 0.3
        return [(cx - r, cy - t), (cx, cy - t), (cx, cy - r * 0.75), (cx + r, cy), (cx, cy + r * 0.75),
                (cx, cy + t), (cx - r, cy + t)]
    raise ConfigError(f"unknown shape {shape!r}", hint=f"shapes: {list(SHAPES)}")


@lru_cache(maxsize=64)
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, size_px))


def _draw_object(draw: ImageDraw.ImageDraw, placed: Placed, size: tuple[int, int]) -> None:
    width, height = size
    left, top, right, bottom = (placed.box[0] * width, placed.box[1] * height, placed.box[2] * width,
                                placed.box[3] * height)
    line = max(1, round(min(width, height) / 160))
    concept = placed.concept
    if concept.kind == "word":
        draw.rounded_rectangle([left, top, right, bottom], radius=max(1, (bottom - top) / 5), fill=(250, 250, 245),
                               outline=_OUTLINE, width=line)
        box_w, box_h = right - left, bottom - top
        font_px = int(box_h * 0.6)
        font = _font(font_px)
        while font_px > 6 and draw.textlength(concept.word or "", font=font) > box_w * 0.9:
            font_px -= 1
            font = _font(font_px)
        draw.text(((left + right) / 2, (top + bottom) / 2), concept.word or "", fill=_OUTLINE, font=font, anchor="mm")
        return
    color = COLORS[concept.color or "red"]
    cx, cy = (left + right) / 2, (top + bottom) / 2
    r = min(right - left, bottom - top) / 2
    if concept.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color, outline=_OUTLINE, width=line)
    else:
        draw.polygon(_polygon(concept.shape or "square", cx, cy, r), fill=color, outline=_OUTLINE, width=line)


def draw_placed(image: Image.Image, placed: Placed) -> Image.Image:
    """Draw one object on ``image`` in place (its box relative to the image's size); returns ``image``."""
    _draw_object(ImageDraw.Draw(image), placed, image.size)
    return image


def render_scene(scene: Scene, size: tuple[int, int]) -> Image.Image:
    """Draw ``scene`` at ``size`` = (width, height) pixels, RGB."""
    if len(size) != 2 or min(size) < 8:
        raise ConfigError(f"scene size must be (width, height) of at least 8 pixels, got {size}")
    image = _draw_background(scene.background, (int(size[0]), int(size[1])))
    draw = ImageDraw.Draw(image)
    for placed in scene.objects:
        _draw_object(draw, placed, image.size)
    return image
