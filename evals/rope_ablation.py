"""Position-extension ablation: the visual haystack at several lengths under every rope method.

As in the GIRAFFE paper's Table 1 (Visual Haystacks accuracy of direct extrapolation, PI, NTK and
M-RoPE++), one model is loaded once per method of :data:`giraffe_core.ROPE_METHODS` with
``giraffe_core.load(model, context_length=L, rope=method)``, i.e. extended to the same ``L``
tokens by each method (``none``: the unmodified frequencies, context limit raised to ``L``:
direct extrapolation), and answers the same single-needle haystack questions (:mod:`evals.haystack`)
at each haystack size. ``L`` defaults to the smallest multiple of 1024 tokens that holds the
longest prompt plus the answer (never below the model's original context, where every method
equals the unmodified model).

Outputs: ``results.json`` (an :class:`AblationReport`: per method its rope parameters and
accuracy per size; per size the mean prompt tokens and largest position span), ``table.md``
(the Table 1 layout: methods down, sizes across, accuracy in percent, ``E`` where prompts
overflowed), ``accuracy.png`` (accuracy against images, one line per method, chance dashed), and
``methods/METHOD/answers.jsonl`` (the resumable ledger of every method's answers).

Reading it: Qwen-VL advances positions past an image by its grid's largest side, not by its
token count, so a haystack of many images spans far fewer position ids than tokens (the report's
``position_span``); a rope method can only matter once the span, not the token count, passes the
model's original context.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evals.answerers import EngineAnswerer
from evals.haystack import HaystackConfig, HaystackMode, generate_haystack, haystack_items
from evals.plots import plot_lines, plot_or_warn
from evals.results import PLOT_FILE, RESULTS_FILE, CellResult, QuestionResult, summarize, write_text_atomic
from evals.runner import ProgressFn, open_ledger, run_items
from giraffe_core import ROPE_METHODS, load, rope_parameters_for
from giraffe_core.errors import ModelLoadError
from giraffe_core.frames import layout_chat
from giraffe_core.positions import VisionTokenIds
from giraffe_core.resolution import VisionGeometry

__all__ = ["AblationConfig", "AblationReport", "AblationRow", "METHOD_LABELS", "TABLE_FILE", "run_rope_ablation"]

logger = logging.getLogger(__name__)

TABLE_FILE = "table.md"
#: how each rope method is named in tables and plots
METHOD_LABELS: dict[str, str] = {
    "none": "direct extrapolation", "pi": "PI", "ntk": "NTK-aware", "yarn": "YaRN", "mrope_plus_plus": "M-RoPE++",
    "mrope_plus_plus_index": "M-RoPE++ (pair-index ramp)", "giraffe_release": "M-RoPE++ (released code)",
}


class AblationConfig(BaseModel):
    """Methods, haystack sizes and the haystack's settings. Sizes in images, lengths in tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    methods: tuple[str, ...] = Field(ROPE_METHODS, description="rope methods (giraffe_core.ROPE_METHODS)")
    sizes: tuple[int, ...] = Field((10, 25, 50, 100), description="images per haystack")
    questions_per_size: int = Field(20, ge=2, description="questions per size (even: yes/no balanced)")
    mode: HaystackMode = Field("single", description="single needle (Table 1), or multi-needle any/all")
    context_length: int | None = Field(None, ge=1, description="extension target, tokens (None: fit the longest)")
    seed: int = Field(0, ge=0)
    image_size_px: tuple[int, int] = (336, 336)
    max_image_tokens: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _check(self) -> AblationConfig:
        unknown = [m for m in self.methods if m not in ROPE_METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct names from {list(ROPE_METHODS)}, got {self.methods}")
        return self

    def haystack(self) -> HaystackConfig:
        """The haystack every method answers."""
        return HaystackConfig(sizes=self.sizes, modes=(self.mode,), questions_per_cell=self.questions_per_size,
                              seed=self.seed, image_size_px=self.image_size_px, max_image_tokens=self.max_image_tokens,
                              max_new_tokens=self.max_new_tokens)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AblationRow(_Model):
    """One method: its rope parameters as loaded, accuracy per size, and every answer."""

    method: str
    label: str
    rope_parameters: dict[str, Any]
    overall: CellResult
    cells: list[CellResult]
    questions: list[QuestionResult]


class AblationReport(_Model):
    """``results.json`` of the ablation.

    Attributes:
        model: what was loaded; context_length: the extension target, tokens;
        original_context: the model's context before extension, tokens.
        sizes: haystack sizes (images); prompt_tokens: mean prompt tokens per size;
        position_span: largest position span per size (same for every method).
        rows: one per method, in the configured order.
    """

    eval: str = "rope_ablation"
    format_version: int = 1
    model: str
    context_length: int
    original_context: int
    config: dict[str, Any]
    sizes: list[int]
    prompt_tokens: list[float | None]
    position_span: list[int | None]
    rows: list[AblationRow]
    started_at: float
    seconds: float = 0.0

    def accuracy(self, method: str, size: int) -> float | None:
        """Accuracy of ``method`` at ``size`` images (``None``: every prompt overflowed)."""
        row = next(r for r in self.rows if r.method == method)
        return next(c for c in row.cells if c.cell["images"] == size).accuracy

    def table(self) -> str:
        """The Table 1 layout in markdown: methods down, haystack sizes across, accuracy in percent."""
        def tokens(v: float | None) -> str:
            return "-" if v is None else (f"{v / 1000:.1f}K" if v >= 1000 else f"{v:.0f}")

        head = "| method \\ images | " + " | ".join(str(n) for n in self.sizes) + " | all |"
        lines = [head, "|---" * (len(self.sizes) + 2) + "|",
                 "| prompt tokens (mean) | " + " | ".join(tokens(v) for v in self.prompt_tokens) + " | |",
                 "| position span (max) | " + " | ".join(tokens(v) for v in self.position_span) + " | |"]
        for row in self.rows:
            cells = {c.cell["images"]: c for c in row.cells}
            lines.append(f"| {row.label} | " + " | ".join(_pct(cells.get(n)) for n in self.sizes)
                         + f" | {_pct(row.overall)} |")
        return (f"Visual haystack ({self.config['mode']}-needle, chance 50%), {self.model} extended to "
                f"{self.context_length} tokens (original {self.original_context}); accuracy %, E = prompts over "
                "the context.\n\n" + "\n".join(lines) + "\n")


def _pct(cell: CellResult | None) -> str:
    if cell is None or cell.questions == 0:
        return "-"
    return "E" if cell.accuracy is None else f"{100 * cell.accuracy:.1f}"


def _original_context(model: str) -> int:
    """The model's context before any extension, tokens (read from its config, no weights loaded)."""
    from giraffe_core.engine import tiny_config

    if model == "tiny":
        config = tiny_config()
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(model)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the config of {model!r}: {exc}") from exc
    return int(rope_parameters_for(config, 1, "yarn")["original_max_position_embeddings"])


def _fitting_context(model: str, items: list, max_new_tokens: int) -> int:
    """Smallest multiple of 1024 tokens holding the longest prompt plus the answer."""
    from giraffe_core.engine import load_processor, tiny_processor

    processor = tiny_processor() if model == "tiny" else load_processor(model)
    tokenizer = processor.tokenizer
    tokens = VisionTokenIds(image_token_id=int(tokenizer.convert_tokens_to_ids("<|image_pad|>")),
                            video_token_id=int(tokenizer.convert_tokens_to_ids("<|video_pad|>")),
                            spatial_merge_size=VisionGeometry.from_processor(processor).merge_size)
    longest = max(items, key=lambda item: item.cell["images"])
    length = layout_chat(processor, longest.build().messages, tokens).num_tokens + max_new_tokens
    return 1024 * math.ceil(length / 1024)


def run_rope_ablation(model: str | os.PathLike, config: AblationConfig | None = None, *,
                      out_dir: str | Path | None = None, progress: ProgressFn | None = None,
                      device: str | None = None, dtype: torch.dtype | None = None) -> AblationReport:
    """Answer the haystack with ``model`` under every method; with ``out_dir``, write results, table and plot.

    Args:
        model: what :func:`giraffe_core.load` takes ("tiny", a directory, a hub id).
        config: methods, sizes and haystack settings.
        out_dir: where to write (and resume).
        progress: ``(done, total, label)`` after every question of every method.
        device, dtype: passed to ``load``.

    Raises:
        ModelLoadError, ConfigError: the model cannot be loaded or extended.
    """
    config = config or AblationConfig()
    model = os.fspath(model)
    began, started = time.perf_counter(), time.time()
    haystack = config.haystack()
    questions = generate_haystack(haystack)
    items = haystack_items(haystack, questions)
    original = _original_context(model)
    context = config.context_length or max(original, _fitting_context(model, items, config.max_new_tokens))
    total = len(items) * len(config.methods)
    rows: list[AblationRow] = []
    for index, method in enumerate(config.methods):
        engine = load(model, context_length=context, rope=method, device=device, dtype=dtype)
        params = engine.rope_parameters
        answerer = EngineAnswerer(engine, name=f"{engine.name}:{method}")
        ledger = open_ledger(None if out_dir is None else Path(out_dir) / "methods" / method, "rope_ablation",
                             {**config.model_dump(mode="json", exclude={"methods", "sizes"}), "method": method,
                              "context_length": context}, engine.name)
        offset = index * len(items)
        step = None if progress is None else (lambda done, _, label, o=offset, m=method: progress(o + done, total,
                                                                                               f"{m}: {label}"))
        results = run_items(items, answerer, ledger=ledger, progress=step)
        overall, cells = summarize(results, ("images",))
        rows.append(AblationRow(method=method, label=METHOD_LABELS.get(method, method), rope_parameters=params,
                                overall=overall, cells=cells, questions=results))
        logger.info("rope ablation: %s accuracy %s", method, overall.accuracy)
        del engine, answerer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    per_size = [_size_facts(rows, n) for n in config.sizes]
    report = AblationReport(model=model, context_length=context, original_context=original,
                            config=config.model_dump(mode="json"), sizes=list(config.sizes),
                            prompt_tokens=[p[0] for p in per_size], position_span=[p[1] for p in per_size],
                            rows=rows, started_at=started, seconds=round(time.perf_counter() - began, 3))
    if out_dir is not None:
        out = Path(out_dir)
        write_text_atomic(out / RESULTS_FILE, report.model_dump_json(indent=2) + "\n")
        write_text_atomic(out / TABLE_FILE, report.table())
        series = {row.label: [(c.cell["images"], c.accuracy, c.ci95) for c in row.cells] for row in rows}
        plot_or_warn(lambda: plot_lines(out / PLOT_FILE, series, chance=0.5, xlabel="images in the haystack",
                                        title=f"Rope methods on the visual haystack: {model} at {context} tokens"))
    return report


def _size_facts(rows: list[AblationRow], size: int) -> tuple[float | None, int | None]:
    """Mean prompt tokens and largest position span at ``size`` images, over every method's answers."""
    tokens = [q.prompt_tokens for r in rows for q in r.questions if q.cell["images"] == size and q.prompt_tokens]
    spans = [q.position_span for r in rows for q in r.questions if q.cell["images"] == size and q.position_span]
    return (sum(tokens) / len(tokens) if tokens else None), max(spans, default=None)
