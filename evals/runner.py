"""The question loop every question-answering evaluation shares: ask, score, record, resume.

:func:`run_items` asks each :class:`EvalItem` through an answerer, scores the reply, and appends
the :class:`~evals.results.QuestionResult` to the output directory's ledger as soon as it is
known, so a rerun into the same directory skips what is done. Nothing one question does stops
the run: a prompt over the model's context (:class:`~evals.errors.ContextOverflowError`) or
memory (``torch.cuda.OutOfMemoryError``) is recorded as an overflow, any other
:class:`~giraffe_core.errors.GiraffeError` (an unreachable endpoint, an unreadable image) as a
wrong answer with its error. Errors are asked again on resume; overflows are not (the prompt
would not fit again).

:func:`finish_report` builds the :class:`~evals.results.EvalReport` and writes ``results.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evals.answerers import Answerer, Query
from evals.errors import ContextOverflowError
from evals.results import LEDGER_FILE, RESULTS_FILE, EvalReport, Ledger, QuestionResult, summarize, write_text_atomic
from evals.scoring import Score
from giraffe_core.errors import GiraffeError

__all__ = ["EvalItem", "ProgressFn", "finish_report", "open_ledger", "oracle_answers", "run_items"]

logger = logging.getLogger(__name__)

#: ``(done, total, label)``: called after every item (the CLI draws its progress bar from it)
ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class EvalItem:
    """One question of an evaluation, built lazily.

    Attributes:
        id: stable id (same configuration and seed -> same id and question).
        cell: the factors its accuracy is grouped by, e.g. ``{"mode": "single", "images": 10}``.
        question: the question text; answer: the gold answer as an oracle would write it.
        build: builds the :class:`~evals.answerers.Query` (renders the images) when it is asked.
        score: reads a reply and scores it against the gold answer.
        meta: generator facts kept in the results (needle positions, depth...).
    """

    id: str
    cell: dict[str, Any]
    question: str
    answer: str
    build: Callable[[], Query]
    score: Callable[[str], Score]
    meta: dict[str, Any] = field(default_factory=dict)


def oracle_answers(items: Sequence[EvalItem]) -> dict[str, str]:
    """Question id -> gold answer, what :class:`~evals.answerers.OracleAnswerer` needs."""
    return {item.id: item.answer for item in items}


def _ask(item: EvalItem, answerer: Answerer) -> QuestionResult:
    began = time.perf_counter()
    base = {"id": item.id, "cell": item.cell, "question": item.question, "answer": item.answer, "meta": item.meta}
    try:
        query = item.build()
        reply = answerer.answer(query)
    except ContextOverflowError as exc:
        logger.info("%s: overflow: %s", item.id, exc.message)
        return QuestionResult(**base, overflow=True, error=exc.message, prompt_tokens=exc.prompt_tokens,
                              seconds=time.perf_counter() - began)
    except torch.cuda.OutOfMemoryError as exc:  # a prompt too long for the device's memory: as an overflow
        logger.warning("%s: out of memory: %s", item.id, exc)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return QuestionResult(**base, overflow=True, error=f"out of memory: {exc}"[:500],
                              seconds=time.perf_counter() - began)
    except GiraffeError as exc:
        logger.warning("%s: %s", item.id, exc)
        return QuestionResult(**base, error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - began)
    score = item.score(reply.text)
    return QuestionResult(**base, reply=reply.text, prediction=score.prediction, correct=score.correct,
                          prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                          position_span=reply.position_span, seconds=time.perf_counter() - began)


def run_items(items: Sequence[EvalItem], answerer: Answerer, *, ledger: Ledger | None = None,
              progress: ProgressFn | None = None) -> list[QuestionResult]:
    """Ask every item (skipping those the ledger holds without an error) and return the results in item order."""
    results: list[QuestionResult] = []
    resumed = 0
    for number, item in enumerate(items, 1):
        stored = ledger.done.get(item.id) if ledger is not None else None
        if stored is not None and (stored.get("error") is None or stored.get("overflow")):
            results.append(QuestionResult.model_validate(stored))
            resumed += 1
        else:
            result = _ask(item, answerer)
            if ledger is not None:
                ledger.append(result.model_dump(mode="json"))
            results.append(result)
        if progress is not None:
            progress(number, len(items), item.id)
    if resumed:
        logger.info("resumed %d of %d questions from %s", resumed, len(items), ledger.path if ledger else "")
    return results


def open_ledger(out_dir: str | Path | None, eval_name: str, config: dict[str, Any], answerer: str) -> Ledger | None:
    """The ledger of ``out_dir`` for this evaluation, configuration and answerer (``None`` without a directory)."""
    if out_dir is None:
        return None
    return Ledger(Path(out_dir) / LEDGER_FILE, {"eval": eval_name, "config": config, "answerer": answerer})


def finish_report(eval_name: str, results: list[QuestionResult], *, answerer: Answerer, config: dict[str, Any],
                  breakdown: Sequence[str], chance: float | None, started_at: float, seconds: float,
                  out_dir: str | Path | None) -> EvalReport:
    """The report of a run; with ``out_dir``, also written to ``out_dir/results.json`` (atomically)."""
    overall, cells = summarize(results, breakdown)
    engine = getattr(answerer, "engine", None)
    model: dict[str, Any] = {}
    if engine is not None:
        model = {"name": engine.name, "rope": engine.rope_parameters, "context_length": engine.context_length}
    report = EvalReport(eval=eval_name, answerer=answerer.name, model=model, config=config, chance=chance,
                        breakdown=list(breakdown), overall=overall, cells=cells, questions=results,
                        started_at=started_at, seconds=round(seconds, 3))
    if out_dir is not None:
        write_text_atomic(Path(out_dir) / RESULTS_FILE, report.model_dump_json(indent=2) + "\n")
    return report
