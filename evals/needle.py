"""A needle in a long video, in the style of V-NIAH (LongVA; Zhang et al., 2024), generated offline.

Haystack: a long synthetic video (``video_frames`` frames, default 3000 as in V-NIAH) of coloured
shapes drifting over a slowly changing gradient, one per ``seed``; a haystack of ``n`` frames
samples it uniformly (frame ``j`` is video frame ``floor(j * video_frames / n)``), as a model
samples a long video. Needle: one extra frame inserted at depth ``d`` (index ``round(d * n)`` of
the ``n + 1`` frames: 0 % first, 100 % last) that shows a white card with either

* ``code``: a code such as ``KIWI-472`` (one of 12 words and a 3-digit number), or
* ``object``: a single coloured shape ("a red star").

Nothing else in the video shows a white card, a code or a card's shape, so only the needle
answers the question ("One frame of this video shows a white card with a code on it. What is the
code?"). For every (frames, depth) cell there are ``needles_per_cell`` questions, alternating the
needle kinds; everything follows from ``seed`` (``numpy.random.default_rng((seed, n, depth
per mille, k))``).

Answer formats (``answer_format``):

* ``choice`` (default, as V-NIAH): ``options`` options lettered A, B..., the gold one at a drawn
  letter, the others distinct codes (or shapes) that appear nowhere in the video; scored by
  :func:`~evals.scoring.score_choice`; chance ``1 / options``.
* ``exact``: no options; the reply must contain the code (or colour and shape) after
  normalization (:func:`~evals.scoring.score_exact`); chance 0.

Results: ``results.json`` (cells ``{"frames", "depth"}``) and ``accuracy.png``, a V-NIAH heatmap
of accuracy by needle depth (rows) and number of frames (columns).
"""

from __future__ import annotations

import colorsys
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evals.answerers import Answerer, Query
from evals.plots import plot_heatmap, plot_or_warn
from evals.results import PLOT_FILE, EvalReport, format_accuracy
from evals.runner import EvalItem, ProgressFn, finish_report, open_ledger, run_items
from evals.scenes import COLORS, CONCEPTS, Background, Concept, Placed, Scene, draw_placed, render_scene
from evals.scoring import CHOICE_LETTERS, score_choice, score_exact

__all__ = ["NeedleConfig", "NeedleKind", "NeedleQuestion", "generate_needles", "needle_frames", "needle_items",
           "plot_needle", "run_needle", "video_frame"]

logger = logging.getLogger(__name__)

NeedleKind = Literal["code", "object"]
_CODE_WORDS = ("KIWI", "MANGO", "PEAR", "PLUM", "LIME", "FIG", "GRAPE", "MELON", "APPLE", "CHERRY", "PEACH", "BERRY")
_SHAPE_CONCEPTS = tuple(c for c in CONCEPTS if c.kind == "shape")
_SPRITES = 5


class NeedleConfig(BaseModel):
    """What to generate and how to show it. Sizes in pixels, budgets in tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: tuple[int, ...] = Field((8, 32, 128), description="haystack frames (the needle not counted)")
    depths: tuple[float, ...] = Field((0.0, 0.25, 0.5, 0.75, 1.0), description="needle depths, 0 first to 1 last")
    needles_per_cell: int = Field(2, ge=1, description="questions per (frames, depth) cell")
    kinds: tuple[NeedleKind, ...] = Field(("code", "object"), description="needle kinds, alternated in a cell")
    answer_format: Literal["choice", "exact"] = "choice"
    options: int = Field(4, ge=2, le=len(CHOICE_LETTERS), description="options of a multiple-choice question")
    seed: int = Field(0, ge=0)
    video_frames: int = Field(3000, ge=1, description="length of the synthetic video the haystack samples")
    frame_size_px: tuple[int, int] = Field((448, 252), description="(width, height) of every frame")
    max_frame_tokens: int | None = Field(None, ge=1, description="visual-token budget per frame (None: the "
                                                                 "processor's cap)")
    max_new_tokens: int = Field(16, ge=1, description="most tokens of an answer")

    @model_validator(mode="after")
    def _check(self) -> NeedleConfig:
        if not self.frames or any(n < 1 for n in self.frames) or len(set(self.frames)) != len(self.frames):
            raise ValueError(f"frames must be distinct positive numbers, got {self.frames}")
        if max(self.frames) > self.video_frames:
            raise ValueError(f"video_frames ({self.video_frames}) must be at least the longest haystack "
                             f"({max(self.frames)} frames)")
        depths = self.depths
        if not depths or any(not 0.0 <= d <= 1.0 for d in depths) or len(set(depths)) != len(depths):
            raise ValueError(f"depths must be distinct fractions in [0, 1], got {self.depths}")
        if not self.kinds or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds must be distinct, got {self.kinds}")
        if min(self.frame_size_px) < 28:
            raise ValueError(f"frame_size_px must be at least 28 x 28, got {self.frame_size_px}")
        return self


class NeedleQuestion(BaseModel):
    """One generated question.

    Attributes:
        id: ``needle-fN-dDEPTH-qK``; frames, depth: its cell; position: the needle's index among
            the ``frames + 1`` frames.
        kind: what the needle shows; needle: the code, or the shape's concept key ("red star").
        question: the question text; options: the option texts (``None`` for exact answers).
        answer: the gold letter (choice) or the gold text (exact).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    frames: int
    depth: float
    position: int
    kind: NeedleKind
    needle: str
    question: str
    options: tuple[str, ...] | None
    answer: str


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255


def video_frame(seed: int, index: int, size_px: tuple[int, int]) -> Image.Image:
    """Frame ``index`` of the synthetic haystack video of ``seed``: shapes drifting over a moving gradient."""
    width, height = size_px
    rng = np.random.default_rng((seed, 7_919))
    hue = float(rng.random()) + index * 0.0007
    top, bottom = _hsv(hue, 0.25, 0.85), _hsv(hue + 0.15, 0.3, 0.7)
    ys = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = np.broadcast_to(top * (1 - ys) + bottom * ys, (height, width, 3))
    image = Image.fromarray(pixels.round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    colors = list(COLORS.values())
    for k in range(_SPRITES):
        start, speed = rng.random(2), (rng.random(2) - 0.5) * 0.004
        radius = float(rng.uniform(0.06, 0.12)) * min(width, height)
        color = colors[int(rng.integers(len(colors)))]
        pos = (start + speed * index) % 2.0
        pos = np.where(pos > 1.0, 2.0 - pos, pos)  # bounce between the edges
        cx, cy = radius + pos[0] * (width - 2 * radius), radius + pos[1] * (height - 2 * radius)
        if k % 2:
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=color)
        else:
            angle = index * 0.01 + k
            draw.polygon([(cx + radius * math.cos(angle + 2 * math.pi * i / 3),
                           cy + radius * math.sin(angle + 2 * math.pi * i / 3)) for i in range(3)], fill=color)
    return image


def _needle_frame(question: NeedleQuestion, size_px: tuple[int, int]) -> Image.Image:
    """The needle: a white card (the code, or one shape) on a plain grey background."""
    if question.kind == "code":
        card = Placed(concept=Concept(kind="word", word=question.needle), box=(0.15, 0.3, 0.85, 0.7))
    else:
        color, shape = question.needle.split(" ")
        card = Placed(concept=Concept(kind="shape", color=color, shape=shape), box=(0.3, 0.15, 0.7, 0.85))
    scene = Scene(background=Background(kind="solid", colors=((128, 128, 132), (128, 128, 132))), objects=())
    image = render_scene(scene, size_px)
    width, height = size_px
    ImageDraw.Draw(image).rounded_rectangle([0.1 * width, 0.1 * height, 0.9 * width, 0.9 * height],
                                            radius=0.05 * height, fill=(252, 252, 250))
    return draw_placed(image, card)


def _code(rng: np.random.Generator) -> str:
    return f"{_CODE_WORDS[int(rng.integers(len(_CODE_WORDS)))]}-{int(rng.integers(100, 1000))}"


def _one(config: NeedleConfig, frames: int, depth: float, k: int) -> NeedleQuestion:
    rng = np.random.default_rng((config.seed, frames, round(depth * 1000), k))
    kind = config.kinds[k % len(config.kinds)]
    if kind == "code":
        pool: list[str] = []
        while len(pool) < config.options:
            code = _code(rng)
            if code not in pool:
                pool.append(code)
        needle, texts = pool[0], pool
        question = "One frame of this video shows a white card with a code on it. What is the code?"
        exact_hint = "Answer with the code only."
    else:
        picks = rng.choice(len(_SHAPE_CONCEPTS), config.options, replace=False)
        concepts = [_SHAPE_CONCEPTS[int(i)] for i in picks]
        needle, texts = concepts[0].key, [c.phrase for c in concepts]
        question = "One frame of this video shows a white card with a single shape on it. Which shape is it?"
        exact_hint = "Answer with its colour and shape."
    position = round(depth * frames)
    ident = f"needle-f{frames}-d{round(depth * 100):03d}-q{k:02d}"
    if config.answer_format == "exact":
        return NeedleQuestion(id=ident, frames=frames, depth=depth, position=position, kind=kind, needle=needle,
                              question=f"{question} {exact_hint}", options=None, answer=texts[0])
    order = rng.permutation(config.options)
    options = tuple(texts[int(i)] for i in order)
    answer = CHOICE_LETTERS[int(np.flatnonzero(order == 0)[0])]
    return NeedleQuestion(id=ident, frames=frames, depth=depth, position=position, kind=kind, needle=needle,
                          question=question, options=options, answer=answer)


def generate_needles(config: NeedleConfig) -> list[NeedleQuestion]:
    """Every question of ``config``: frames, then depths, then needles, in the configured order."""
    return [_one(config, n, d, k) for n in config.frames for d in config.depths for k in range(config.needles_per_cell)]


def needle_frames(question: NeedleQuestion, config: NeedleConfig) -> Iterator[Image.Image]:
    """The ``frames + 1`` frames of a question: the sampled haystack with the needle at ``position``."""
    for j in range(question.frames + 1):
        if j == question.position:
            yield _needle_frame(question, config.frame_size_px)
        else:
            source = j if j < question.position else j - 1
            yield video_frame(config.seed, source * config.video_frames // question.frames, config.frame_size_px)


def _prompt(question: NeedleQuestion) -> str:
    head = f"Above are {question.frames + 1} frames of a video, in order. {question.question}"
    if question.options is None:
        return head
    lines = "\n".join(f"{CHOICE_LETTERS[i]}. {text}" for i, text in enumerate(question.options))
    return f"{head}\n{lines}\nAnswer with the option's letter from the given choices directly."


def needle_items(config: NeedleConfig, questions: list[NeedleQuestion] | None = None) -> list[EvalItem]:
    """The questions as evaluation items (frames rendered when each is asked)."""
    questions = generate_needles(config) if questions is None else questions

    def build(q: NeedleQuestion) -> Query:
        content: list[dict] = []
        for frame in needle_frames(q, config):
            part: dict = {"type": "image", "image": frame}
            if config.max_frame_tokens is not None:
                part["max_tokens"] = config.max_frame_tokens
            content.append(part)
        content.append({"type": "text", "text": _prompt(q)})
        choices = tuple(CHOICE_LETTERS[:len(q.options)]) if q.options else None
        return Query(id=q.id, messages=[{"role": "user", "content": content}], choices=choices,
                     max_new_tokens=config.max_new_tokens)

    def score(q: NeedleQuestion, reply: str):
        return score_choice(reply, q.options, q.answer) if q.options else score_exact(reply, q.answer)

    return [EvalItem(id=q.id, cell={"frames": q.frames, "depth": q.depth}, question=q.question, answer=q.answer,
                     build=lambda q=q: build(q), score=lambda reply, q=q: score(q, reply),
                     meta={"kind": q.kind, "needle": q.needle, "position": q.position,
                           "options": list(q.options) if q.options else None})
            for q in questions]


def plot_needle(report: EvalReport, config: NeedleConfig, path: str | Path) -> Path:
    """V-NIAH heatmap: accuracy by depth (rows) and number of frames (columns)."""
    cells = {(c.cell["frames"], c.cell["depth"]): c for c in report.cells}
    values = [[cells[(n, d)].accuracy if (n, d) in cells else None for n in config.frames] for d in config.depths]
    return plot_heatmap(path, values, rows=[f"{100 * d:g}%" for d in config.depths],
                        columns=[str(n) for n in config.frames], title=f"Needle in a video: {report.answerer}",
                        xlabel="haystack frames", ylabel="needle depth")


def run_needle(answerer: Answerer, config: NeedleConfig | None = None, *, out_dir: str | Path | None = None,
               progress: ProgressFn | None = None) -> EvalReport:
    """Generate, ask and score the needle questions; with ``out_dir``, write (and resume) results and heatmap."""
    config = config or NeedleConfig()
    began, started = time.perf_counter(), time.time()
    items = needle_items(config)
    # frames and depths may grow between runs: question (frames, depth, k) does not depend on the others
    ledger = open_ledger(out_dir, "needle", config.model_dump(mode="json", exclude={"frames", "depths"}),
                         answerer.name)
    results = run_items(items, answerer, ledger=ledger, progress=progress)
    chance = 1.0 / config.options if config.answer_format == "choice" else None
    report = finish_report("needle", results, answerer=answerer, config=config.model_dump(mode="json"),
                           breakdown=("frames", "depth"), chance=chance, started_at=started,
                           seconds=time.perf_counter() - began, out_dir=out_dir)
    if out_dir is not None:
        plot_or_warn(lambda: plot_needle(report, config, Path(out_dir) / PLOT_FILE))
    logger.info("needle: %s, accuracy %s", answerer.name, format_accuracy(report.overall))
    return report
