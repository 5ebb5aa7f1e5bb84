"""PNG plots of evaluation results (matplotlib, the ``evals`` extra), written atomically.

* :func:`plot_lines`: accuracy against a length (number of images, tokens), one line per series
  (a mode, a rope method), with Wilson 95 % intervals as error bars and the chance level dashed;
  a logarithmic x axis when the lengths span more than a factor of 10.
* :func:`plot_heatmap`: accuracy over two factors, V-NIAH style (needle depth down, number of
  frames across), every cell annotated with its percentage (``E``: every prompt overflowed).
* :func:`plot_bars`: one bar per group (question kind, MiniWoB++ task) with its interval.

:func:`plot_or_warn` runs a plot and, when matplotlib is missing, logs the ``pip install`` that
fixes it instead of raising (the results are written before any plot).

Figures are drawn on matplotlib's Agg canvas without pyplot, so plotting keeps no global state
and works without a display.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evals.results import write_bytes_atomic
from giraffe_core.errors import MissingExtraError
from giraffe_core.extras import require

__all__ = ["Point", "plot_bars", "plot_heatmap", "plot_lines", "plot_or_warn"]

logger = logging.getLogger(__name__)

#: ``(x, accuracy or None, (ci_low, ci_high) or None)``; accuracies in [0, 1]
Point = tuple[float, float | None, tuple[float, float] | None]


def plot_or_warn(draw: Callable[[], Path]) -> Path | None:
    """Run ``draw`` (a plot call); without matplotlib, log a warning naming the fix and return ``None``.

    The evaluations call their plots through this after ``results.json`` is written, so a missing
    ``evals`` extra never costs the results.
    """
    try:
        return draw()
    except MissingExtraError as exc:
        logger.warning("no plot: %s", exc)
        return None


def _figure(width_in: float, height_in: float) -> tuple[Any, Any]:
    require("matplotlib", extra="evals", purpose="plot evaluation results")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def _save(figure: Any, path: str | Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return write_bytes_atomic(path, buffer.getvalue())


def plot_lines(path: str | Path, series: Mapping[str, Sequence[Point]], *, title: str, xlabel: str,
               ylabel: str = "accuracy (%)", chance: float | None = None) -> Path:
    """Accuracy (percent) against a length, one line per series; points without accuracy are skipped."""
    figure, ax = _figure(7.0, 4.2)
    xs = [x for points in series.values() for x, _, _ in points]
    for label, points in series.items():
        shown = [(x, acc, ci) for x, acc, ci in points if acc is not None]
        if not shown:
            continue
        x = [p[0] for p in shown]
        y = [100 * p[1] for p in shown]
        low = [max(0.0, 100 * (p[1] - p[2][0])) if p[2] else 0.0 for p in shown]
        high = [max(0.0, 100 * (p[2][1] - p[1])) if p[2] else 0.0 for p in shown]
        ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=label)
    if chance is not None:
        ax.axhline(100 * chance, color="gray", linestyle="--", linewidth=1, label=f"chance ({100 * chance:g}%)")
    if xs and min(xs) > 0 and max(xs) / min(xs) > 10:
        ax.set_xscale("log")
    if xs:
        ticks = sorted(set(xs))
        ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_ylim(-2, 102)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    return _save(figure, path)


def plot_heatmap(path: str | Path, values: Sequence[Sequence[float | None]], *, rows: Sequence[str],
                 columns: Sequence[str], title: str, xlabel: str, ylabel: str) -> Path:
    """A grid of accuracies (``values[row][column]`` in [0, 1], ``None`` = overflow), red to green."""
    figure, ax = _figure(max(4.0, 1.0 + 0.9 * len(columns)), max(3.0, 1.0 + 0.5 * len(rows)))
    grid = [[math.nan if v is None else 100 * v for v in row] for row in values]
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(columns)), labels=list(columns))
    ax.set_yticks(range(len(rows)), labels=list(rows))
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, "E" if v is None else f"{100 * v:.0f}", ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(figure, path)


def plot_bars(path: str | Path, bars: Sequence[tuple[str, float | None, tuple[float, float] | None]], *,
              title: str, ylabel: str = "accuracy (%)", chance: float | None = None) -> Path:
    """One bar per ``(label, value in [0, 1] or None, interval)``; ``None`` draws no bar."""
    figure, ax = _figure(max(4.5, 0.8 * len(bars) + 2.0), 4.0)
    labels = [b[0] for b in bars]
    heights = [0.0 if b[1] is None else 100 * b[1] for b in bars]
    low = [max(0.0, 100 * (b[1] - b[2][0])) if b[1] is not None and b[2] else 0.0 for b in bars]
    high = [max(0.0, 100 * (b[2][1] - b[1])) if b[1] is not None and b[2] else 0.0 for b in bars]
    ax.bar(range(len(bars)), heights, yerr=[low, high], capsize=3, color="#4c78a8")
    ax.set_xticks(range(len(bars)), labels=labels, rotation=30 if len(bars) > 4 else 0, ha="right"
                  if len(bars) > 4 else "center")
    if chance is not None:
        ax.axhline(100 * chance, color="gray", linestyle="--", linewidth=1, label=f"chance ({100 * chance:g}%)")
        ax.legend(fontsize="small")
    ax.set_ylim(0, 102)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(figure, path)
