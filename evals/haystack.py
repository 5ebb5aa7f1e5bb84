"""A visual haystack in the style of Visual Haystacks (VHs; Wu et al., 2024), generated offline.

Generator (:func:`generate_haystack`): for every haystack size ``N`` (images) and mode, a cell of
``questions_per_cell`` questions about a haystack of ``N`` drawn scenes (:mod:`evals.scenes`:
coloured shapes and word signs on varied backgrounds). Each question names an *anchor* concept
and a *target* concept:

* ``single`` (VHs single-needle): "For the image with ANCHOR, is there TARGET?" Exactly one
  image (the needle, at a uniformly drawn position) shows the anchor; the answer is whether it
  also shows the target.
* ``any`` / ``all`` (VHs multi-needle): "For all images with ANCHOR, do any (all) of them
  contain TARGET?" ``needles`` = 2-5 images (never more than ``N``) show the anchor. ``any`` is
  yes when at least one of them shows the target, ``all`` when every one does; a "no" of
  ``all`` leaves the target out of a random non-empty subset of the needles.

Invariants (checked by the tests): no other image shows the anchor; the anchor and the target
differ; whenever the haystack has an image that is not a needle, at least one such image shows
the target, so "is the target anywhere?" never gives the answer away; every cell has exactly as
many yes as no answers (``questions_per_cell`` must be even), so chance is 50 %. Everything
follows from ``seed``: question ``k`` of a cell is drawn from ``numpy.random.default_rng((seed,
mode, N, k))``, so it does not change when other sizes or modes are added.

Prompt: the ``N`` images in order (each at most ``max_image_tokens`` visual tokens when set),
then "You are given N images. QUESTION Answer with Yes or No."

Scoring (:func:`~evals.scoring.score_yes_no`): the first yes/no word of the reply; accuracy per
(mode, size) cell as VHs reports it, chance 50 %; prompts over the model's context are ``E``.
Results: ``results.json`` (:class:`~evals.results.EvalReport`, cells ``{"mode", "images"}``) and
``accuracy.png`` (accuracy against the number of images, one line per mode).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evals.answerers import Answerer, Query
from evals.plots import plot_lines, plot_or_warn
from evals.results import PLOT_FILE, EvalReport
from evals.runner import EvalItem, ProgressFn, finish_report, open_ledger, run_items
from evals.scenes import CONCEPTS, Concept, Scene, random_scene, render_scene
from evals.scoring import score_yes_no

__all__ = [
    "HaystackConfig",
    "HaystackMode",
    "HaystackQuestion",
    "generate_haystack",
    "haystack_items",
    "haystack_prompt",
    "plot_haystack",
    "run_haystack",
]

logger = logging.getLogger(__name__)

HaystackMode = Literal["single", "any", "all"]
_MODE_IDS = {"single": 0, "any": 1, "all": 2}


class HaystackConfig(BaseModel):
    """What to generate and how to show it to the model. Sizes in pixels, budgets in tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sizes: tuple[int, ...] = Field((1, 2, 5, 10, 20, 50, 100), description="images per haystack, one cell each")
    modes: tuple[HaystackMode, ...] = Field(("single",), description="single needle, multi-needle any/all")
    questions_per_cell: int = Field(20, ge=2, description="questions per (mode, size); even: yes/no balanced")
    seed: int = Field(0, ge=0)
    image_size_px: tuple[int, int] = Field((336, 336), description="(width, height) of every image")
    objects_per_image: tuple[int, int] = Field((2, 4), description="min and max objects per image (at most 9)")
    needles: tuple[int, int] = Field((2, 5), description="min and max needle images of multi-needle questions")
    max_image_tokens: int | None = Field(None, ge=1, description="visual-token budget per image (None: the "
                                                                 "processor's cap)")
    max_new_tokens: int = Field(8, ge=1, description="most tokens of an answer")

    @model_validator(mode="after")
    def _check(self) -> HaystackConfig:
        if not self.sizes or any(n < 1 or n > 10000 for n in self.sizes) or len(set(self.sizes)) != len(self.sizes):
            raise ValueError(f"sizes must be distinct numbers of images in [1, 10000], got {self.sizes}")
        if not self.modes or len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes must be distinct, got {self.modes}")
        if self.questions_per_cell % 2:
            raise ValueError(f"questions_per_cell must be even (half yes, half no), got {self.questions_per_cell}")
        low, high = self.objects_per_image
        if not 2 <= low <= high <= 9:
            raise ValueError(f"objects_per_image must satisfy 2 <= min <= max <= 9, got {self.objects_per_image}")
        if not 1 <= self.needles[0] <= self.needles[1]:
            raise ValueError(f"needles must satisfy 1 <= min <= max, got {self.needles}")
        if min(self.image_size_px) < 28:
            raise ValueError(f"image_size_px must be at least 28 x 28, got {self.image_size_px}")
        return self


class HaystackQuestion(BaseModel):
    """One generated question with its haystack (scene specs; images are rendered on demand).

    Attributes:
        id: ``haystack-MODE-nN-qK``; mode, size: its cell; anchor, target: the two concepts.
        question: the question text; answer: "yes" or "no".
        needle_positions: indices of the images that show the anchor.
        target_positions: indices of every image that shows the target.
        scenes: the ``size`` scenes, in order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    mode: HaystackMode
    size: int
    anchor: Concept
    target: Concept
    question: str
    answer: Literal["yes", "no"]
    needle_positions: tuple[int, ...]
    target_positions: tuple[int, ...]
    scenes: tuple[Scene, ...]

    @property
    def depth(self) -> float:
        """Mean relative position of the needles in the haystack: 0 first, 1 last."""
        if self.size == 1:
            return 0.0
        return float(np.mean(self.needle_positions)) / (self.size - 1)

    def images(self, size_px: tuple[int, int]) -> Iterator[Image.Image]:
        """The haystack's images, rendered one at a time."""
        for scene in self.scenes:
            yield render_scene(scene, size_px)


def _question_text(mode: HaystackMode, anchor: Concept, target: Concept) -> str:
    if mode == "single":
        return f"For the image with {anchor.phrase}, is there {target.phrase}?"
    quantifier = "any" if mode == "any" else "all"
    return f"For all images with {anchor.phrase}, do {quantifier} of them contain {target.phrase}?"


def haystack_prompt(question: HaystackQuestion) -> str:
    """The text after the images: how many there are, the question, and the answer format."""
    images = "1 image" if question.size == 1 else f"{question.size} images"
    return f"You are given {images}. {question.question} Answer with Yes or No."


def _targets_in_needles(rng: np.random.Generator, mode: HaystackMode, needles: int, yes: bool) -> np.ndarray:
    """Which needle images also show the target, for the wanted answer."""
    if mode == "single":
        return np.array([yes])
    if mode == "any":
        count = int(rng.integers(1, needles + 1)) if yes else 0
    else:
        count = needles if yes else int(rng.integers(0, needles))
    has = np.zeros(needles, dtype=bool)
    has[rng.choice(needles, count, replace=False)] = True
    return has


def _one_question(config: HaystackConfig, mode: HaystackMode, size: int, k: int, yes: bool) -> HaystackQuestion:
    rng = np.random.default_rng((config.seed, _MODE_IDS[mode], size, k))
    first, second = rng.choice(len(CONCEPTS), 2, replace=False)
    anchor, target = CONCEPTS[int(first)], CONCEPTS[int(second)]
    if mode == "single":
        count = 1
    else:
        count = int(rng.integers(min(config.needles[0], size), min(config.needles[1], size) + 1))
    needles = sorted(int(i) for i in rng.choice(size, count, replace=False))
    shows_target = dict(zip(needles, _targets_in_needles(rng, mode, count, yes).tolist()))
    others = [i for i in range(size) if i not in shows_target]
    for i in others:
        shows_target[i] = bool(rng.random() < 0.5)
    if others and not any(shows_target[i] for i in others):
        shows_target[others[int(rng.integers(len(others)))]] = True
    low, high = config.objects_per_image
    scenes = []
    for i in range(size):
        required = ((anchor,) if i in needles else ()) + ((target,) if shows_target[i] else ())
        forbidden = ((anchor,) if i not in needles else ()) + ((target,) if not shows_target[i] else ())
        objects = int(rng.integers(low, high + 1))
        scenes.append(random_scene(rng, required=required, forbidden=forbidden, objects=objects))
    return HaystackQuestion(
        id=f"haystack-{mode}-n{size}-q{k:03d}", mode=mode, size=size, anchor=anchor, target=target,
        question=_question_text(mode, anchor, target), answer="yes" if yes else "no",
        needle_positions=tuple(needles), target_positions=tuple(i for i in range(size) if shows_target[i]),
        scenes=tuple(scenes))


def generate_haystack(config: HaystackConfig) -> list[HaystackQuestion]:
    """Every question of ``config``: modes, then sizes, then questions, in the configured order."""
    out = []
    for mode in config.modes:
        for size in config.sizes:
            balance = np.random.default_rng((config.seed, _MODE_IDS[mode], size, 1_000_003))
            half = config.questions_per_cell // 2
            answers = balance.permutation(np.array([True] * half + [False] * half))
            out.extend(_one_question(config, mode, size, k, bool(yes)) for k, yes in enumerate(answers))
    return out


def haystack_items(config: HaystackConfig, questions: list[HaystackQuestion] | None = None) -> list[EvalItem]:
    """The questions as evaluation items (images rendered when each is asked)."""
    questions = generate_haystack(config) if questions is None else questions

    def build(q: HaystackQuestion) -> Query:
        content: list[dict] = []
        for image in q.images(config.image_size_px):
            part: dict = {"type": "image", "image": image}
            if config.max_image_tokens is not None:
                part["max_tokens"] = config.max_image_tokens
            content.append(part)
        content.append({"type": "text", "text": haystack_prompt(q)})
        return Query(id=q.id, messages=[{"role": "user", "content": content}], choices=("yes", "no"),
                     max_new_tokens=config.max_new_tokens)

    return [EvalItem(id=q.id, cell={"mode": q.mode, "images": q.size}, question=q.question, answer=q.answer,
                     build=lambda q=q: build(q), score=lambda reply, q=q: score_yes_no(reply, q.answer),
                     meta={"anchor": q.anchor.key, "target": q.target.key, "needles": list(q.needle_positions),
                           "depth": round(q.depth, 4)})
            for q in questions]


def plot_haystack(report: EvalReport, path: str | Path) -> Path:
    """Accuracy against the number of images, one line per mode."""
    series: dict[str, list] = {}
    for cell in report.cells:
        series.setdefault(str(cell.cell["mode"]), []).append((cell.cell["images"], cell.accuracy, cell.ci95))
    return plot_lines(path, {m: sorted(p, key=lambda t: t[0]) for m, p in series.items()},
                      title=f"Visual haystack: {report.answerer}", xlabel="images in the haystack",
                      chance=report.chance)


def run_haystack(answerer: Answerer, config: HaystackConfig | None = None, *, out_dir: str | Path | None = None,
                 progress: ProgressFn | None = None) -> EvalReport:
    """Generate, ask and score the haystack; with ``out_dir``, write (and resume) its results and plot."""
    config = config or HaystackConfig()
    began, started = time.perf_counter(), time.time()
    items = haystack_items(config)
    # sizes and modes may grow between runs: question (mode, size, k) does not depend on the others
    ledger = open_ledger(out_dir, "haystack", config.model_dump(mode="json", exclude={"sizes", "modes"}),
                         answerer.name)
    results = run_items(items, answerer, ledger=ledger, progress=progress)
    report = finish_report("haystack", results, answerer=answerer, config=config.model_dump(mode="json"),
                           breakdown=("mode", "images"), chance=0.5, started_at=started,
                           seconds=time.perf_counter() - began, out_dir=out_dir)
    if out_dir is not None:
        plot_or_warn(lambda: plot_haystack(report, Path(out_dir) / PLOT_FILE))
    logger.info("haystack: %s, accuracy %s over %d questions", answerer.name, report.overall.accuracy,
                report.overall.questions)
    return report
