"""Result formats of the question-answering evaluations, the resumable ledger, and atomic files.

An evaluation's output directory holds::

    answers.jsonl   the ledger: a header line, then one line per finished question (appended,
                    flushed and fsynced as each finishes); a rerun with the same evaluation,
                    configuration and answerer skips what it holds (resume)
    results.json    an :class:`EvalReport`: configuration, accuracy overall and per cell, and every
                    question with its reply, prediction, score and token counts
    accuracy.png    the plot (accuracy against number of images, needle depth...)

Accuracy of a cell (the questions sharing the same factors, e.g. ``{"mode": "single", "images":
10}``) is ``correct / (questions - overflow)``: a question whose prompt did not fit the model's
context (or its memory) is left out and counted in ``overflow``, as Visual Haystacks marks such
cells ``E``; a question that failed for another reason (an unreachable endpoint) counts as wrong
and in ``errors``. ``ci95`` is the Wilson 95 % interval of the accuracy.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from evals.errors import EvalError
from evals.scoring import wilson_interval
from giraffe_agent.trajectory import replace_atomic

__all__ = [
    "CellResult",
    "EvalReport",
    "LEDGER_FILE",
    "Ledger",
    "PLOT_FILE",
    "QuestionResult",
    "RESULTS_FILE",
    "format_accuracy",
    "summarize",
    "write_bytes_atomic",
    "write_text_atomic",
]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
LEDGER_FILE = "answers.jsonl"
PLOT_FILE = "accuracy.png"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuestionResult(_Model):
    """One asked question.

    Attributes:
        id: the question's id; cell: the factors it is grouped by (e.g. ``{"images": 10}``).
        question: the question text; answer: the gold answer (as an oracle would reply).
        reply: the model's raw reply (``None`` when it gave none); prediction: what the scorer
            read from it (``None``: nothing readable); correct: the score.
        overflow: the prompt did not fit the model's context or memory (left out of accuracy).
        error: why there is no reply (``None`` when there is one).
        prompt_tokens, completion_tokens: counts when known; position_span: largest position
            id of the prompt + 1 (local engines).
        seconds: wall time of building the prompt and answering, seconds.
        meta: generator facts (needle positions, depth, evidence frames...).
    """

    id: str
    cell: dict[str, Any]
    question: str
    answer: str
    reply: str | None = None
    prediction: str | None = None
    correct: bool = False
    overflow: bool = False
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    position_span: int | None = None
    seconds: float = 0.0
    meta: dict[str, Any] = Field(default_factory=dict)


class CellResult(_Model):
    """Accuracy of a group of questions (a cell of the breakdown, or all of them).

    Attributes:
        cell: the shared factors (``{}`` for the overall row).
        questions: questions asked; answered: with a reply; correct: scored correct.
        overflow: prompts over the context (excluded); errors: failures that count as wrong.
        accuracy: ``correct / (questions - overflow)``, ``None`` when every prompt overflowed.
        ci95: Wilson 95 % interval of the accuracy.
        mean_prompt_tokens: mean prompt length of the questions that had one, tokens.
        max_position_span: largest position span among them (local engines).
    """

    cell: dict[str, Any]
    questions: int
    answered: int
    correct: int
    overflow: int
    errors: int
    accuracy: float | None
    ci95: tuple[float, float] | None
    mean_prompt_tokens: float | None
    max_position_span: int | None


class EvalReport(_Model):
    """``results.json`` of a question-answering evaluation.

    Attributes:
        eval: "haystack", "needle" or "recording_qa"; format_version: of this file (1).
        answerer: the answerer's name; model: engine facts (name, rope, context length) when local.
        config: the evaluation's configuration; chance: the accuracy of random guessing
            (``None`` for open answers).
        breakdown: the factors ``cells`` are grouped by.
        overall, cells, questions: see :class:`CellResult` and :class:`QuestionResult`.
        started_at, finished_at: epoch seconds; seconds: wall time of this run (resumed
            questions not included).
    """

    eval: str
    format_version: int = 1
    answerer: str
    model: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any]
    chance: float | None
    breakdown: list[str]
    overall: CellResult
    cells: list[CellResult]
    questions: list[QuestionResult]
    started_at: float
    finished_at: float = Field(default_factory=time.time)
    seconds: float = 0.0

    def cell(self, **factors: Any) -> CellResult:
        """The cell whose factors are exactly ``factors``; :class:`KeyError` when there is none."""
        for cell in self.cells:
            if cell.cell == factors:
                return cell
        raise KeyError(f"no cell {factors}; cells: {[c.cell for c in self.cells]}")


def _cell(results: Sequence[QuestionResult], factors: dict[str, Any]) -> CellResult:
    counted = [r for r in results if not r.overflow]
    correct = sum(r.correct for r in counted)
    tokens = [r.prompt_tokens for r in results if r.prompt_tokens is not None]
    spans = [r.position_span for r in results if r.position_span is not None]
    return CellResult(
        cell=factors, questions=len(results), answered=sum(r.reply is not None for r in results), correct=correct,
        overflow=len(results) - len(counted), errors=sum(r.error is not None and not r.overflow for r in results),
        accuracy=correct / len(counted) if counted else None, ci95=wilson_interval(correct, len(counted)),
        mean_prompt_tokens=sum(tokens) / len(tokens) if tokens else None, max_position_span=max(spans, default=None))


def summarize(results: Sequence[QuestionResult], by: Sequence[str]) -> tuple[CellResult, list[CellResult]]:
    """The overall row and one row per distinct combination of the factors ``by``, in first-seen order."""
    groups: dict[tuple, list[QuestionResult]] = {}
    for result in results:
        key = tuple(result.cell.get(name) for name in by)
        groups.setdefault(key, []).append(result)
    cells = [_cell(group, dict(zip(by, key))) for key, group in groups.items()]
    return _cell(results, {}), cells


def format_accuracy(cell: CellResult | None) -> str:
    """A table entry: accuracy in percent with one decimal, ``E`` when every prompt overflowed, ``-`` for none."""
    if cell is None or cell.questions == 0:
        return "-"
    return "E" if cell.accuracy is None else f"{100 * cell.accuracy:.1f}"


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (its directory created) with
    :func:`giraffe_agent.trajectory.replace_atomic`: a temporary file, fsynced, then renamed.

    Raises:
        EvalError: the file cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return replace_atomic(path, data)
    except OSError as exc:
        raise EvalError(f"cannot write {path}: {exc}") from exc


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


class Ledger:
    """An append-only JSON-lines file of finished items (questions or episodes), for resuming.

    The first line is a header naming what the items belong to (the evaluation, its
    configuration, the answerer or backend). Opening an existing ledger with a different header
    is an :class:`EvalError`: results of two configurations are never mixed. Every later line is
    one finished item (a dict with an ``id``), appended, flushed and fsynced; a torn last line (a
    crash mid-write) is skipped; when an id appears twice the later line wins.

    Attributes:
        path: the file; done: id -> the last record of that id.
    """

    def __init__(self, path: str | os.PathLike, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.header = json.loads(_canonical(header))
        self.done: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"kind": "header", **self.header})

    def _read(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                if number == len(lines) and not raw.endswith(b"\n"):
                    logger.warning("%s: skipping a torn last line (a crash while writing it)", self.path)
                    break
                raise EvalError(f"{self.path} line {number} is not JSON: {exc}",
                                hint="the ledger was edited or damaged; only its last line may be torn") from exc
            if number == 1:
                found = {k: v for k, v in obj.items() if k != "kind"}
                if obj.get("kind") != "header" or _canonical(found) != _canonical(self.header):
                    raise EvalError(
                        f"{self.path.parent} holds results of another evaluation, configuration or model "
                        f"({_canonical(found)[:300]})",
                        hint="write to a new --out directory, or delete this one to start again")
                continue
            if not isinstance(obj, dict) or "id" not in obj:
                raise EvalError(f"{self.path} line {number} is not a ledger record", hint="the ledger is damaged")
            self.done[str(obj["id"])] = obj
        if raw and not raw.endswith(b"\n"):  # cut the torn tail so the next append starts a fresh line
            with open(self.path, "r+b") as handle:
                handle.truncate(raw.rfind(b"\n") + 1)

    def _append(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        try:
            with open(self.path, "ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise EvalError(f"cannot append to {self.path}: {exc}") from exc

    def append(self, record: dict[str, Any]) -> None:
        """Record one finished item (a JSON-ready dict with an ``id``)."""
        if "id" not in record:
            raise EvalError("a ledger record needs an 'id'")
        self._append(record)
        self.done[str(record["id"])] = json.loads(json.dumps(record, default=str))

    def records(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """The records of ``ids`` that are done, in the order of ``ids``."""
        return [self.done[i] for i in ids if i in self.done]
