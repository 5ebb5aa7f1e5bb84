"""Screen-recording QA: questions about events at known times in recorded web sessions.

Generator: ``sessions`` scripted sessions on a local shop site (:mod:`evals.websession`: page
visits, searches typed into a box, products added to a cart, ``gap_s`` seconds apart), each
played in headless Chromium on loopback and recorded with :class:`giraffe_agent.recording.Recorder`
(one frame per event at its script time). Everything follows from ``seed``: session ``s`` is
``generate_session((seed, s))``. Questions, from the script alone (so their answers are known
exactly):

* ``typed``: "What did the user type into the search box at [t=HH:MM:SS]?" (every search): the
  word, scored by :func:`~evals.scoring.score_exact`.
* ``page_at``: "Which page was on the screen at [t=HH:MM:SS]?" at a drawn second strictly
  between two events (``page_questions`` per session), with ``options`` page titles: the
  letter, :func:`~evals.scoring.score_choice`.
* ``time_of``: "At what time was the NAME added to the cart?" (every add; each product is added
  at most once): the time, :func:`~evals.scoring.score_time` (to the second).
* ``count``: "How many times did the user open the Products page?" (one per session): the number,
  :func:`~evals.scoring.score_number`.

Prompt: :func:`giraffe_agent.qa.plan_question` on the recording, the way :func:`giraffe_agent.qa.ask`
builds it (frames in time order after their ``[t=HH:MM:SS]`` captions, the hybrid group scheme,
as many frames as fit ``budget_tokens``), with the answering model's processor. Each question
records the frames that show its answer (``meta.evidence``) and whether they were all in the
prompt (``meta.evidence_in_prompt``).

Results: ``results.json`` (cells ``{"kind"}``), ``accuracy.png`` (a bar per kind), and the
recordings under ``recordings/session-S/`` (reused on resume when their script matches).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evals.answerers import Answerer, Query
from evals.plots import plot_bars, plot_or_warn
from evals.results import PLOT_FILE, EvalReport, format_accuracy, write_text_atomic
from evals.runner import EvalItem, ProgressFn, finish_report, open_ledger, run_items
from evals.scoring import CHOICE_LETTERS, score_choice, score_exact, score_number, score_time
from evals.websession import PRODUCTS, SECTIONS, SessionScript, generate_session, record_session
from giraffe_agent.qa import Sampling, plan_question
from giraffe_agent.recording import Recording, RecordingError, format_timestamp
from giraffe_core.resolution import GroupScheme

__all__ = ["RecordingQAConfig", "RecordingQuestion", "SCRIPT_FILE", "expected_answers", "recording_questions",
           "run_recording_qa"]

logger = logging.getLogger(__name__)

_PAGES = (*SECTIONS, "Search results", *PRODUCTS)
SCRIPT_FILE = "script.json"


class RecordingQAConfig(BaseModel):
    """Sessions to record and how to ask about them. Times in seconds, budgets in tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sessions: int = Field(4, ge=1, description="recorded sessions")
    events: int = Field(12, ge=2, description="events per session after the start")
    gap_s: tuple[int, int] = Field((20, 90), description="min and max seconds between events")
    page_questions: int = Field(2, ge=0, description="'which page at t' questions per session")
    options: int = Field(4, ge=2, le=len(CHOICE_LETTERS), description="options of 'which page' questions")
    seed: int = Field(0, ge=0)
    viewport: tuple[int, int] = Field((640, 400), description="browser viewport, CSS pixels")
    budget_tokens: int = Field(32768, ge=64, description="most prompt tokens (also capped by a local model's "
                                                          "context)")
    scheme: GroupScheme = Field(default_factory=GroupScheme, description="hybrid scheme (L, m, s)")
    sampling: Sampling = Field("uniform", description="frame sampling: uniform in time or weighted by change")
    max_new_tokens: int = Field(24, ge=1)

    @model_validator(mode="after")
    def _check(self) -> RecordingQAConfig:
        if not 3 <= self.gap_s[0] <= self.gap_s[1]:
            raise ValueError(f"gap_s must satisfy 3 <= min <= max, got {self.gap_s}")
        return self


class RecordingQuestion(BaseModel):
    """One question about session ``session``; ``answer`` as an oracle writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    session: int
    kind: str
    question: str
    options: tuple[str, ...] | None = None
    answer: str
    gold_time_s: float | None = None
    evidence_t: tuple[float, ...]


def _label(t: float) -> str:
    return f"[t={format_timestamp(t)}]"


def recording_questions(script: SessionScript, session: int, config: RecordingQAConfig) -> list[RecordingQuestion]:
    """The questions about one session's script (see the module doc)."""
    rng = np.random.default_rng((config.seed, session, 99_991))
    out: list[RecordingQuestion] = []
    events = script.events
    for e in events:
        if e.kind == "type":
            out.append(RecordingQuestion(
                id=f"rqa-s{session}-typed-{e.t}", session=session, kind="typed",
                question=f"What did the user type into the search box at {_label(e.t)}? Answer with the text only.",
                answer=e.text or "", evidence_t=(e.t, e.t + 2)))
        elif e.kind == "add":
            out.append(RecordingQuestion(
                id=f"rqa-s{session}-time-{e.t}", session=session, kind="time_of",
                question=f"At what time was the {(e.product or '').lower()} added to the cart? Answer with the "
                         "time as [t=HH:MM:SS].", answer=_label(e.t), gold_time_s=float(e.t), evidence_t=(e.t,)))
    for _ in range(config.page_questions):
        i = int(rng.integers(len(events)))
        end = events[i + 1].t if i + 1 < len(events) else script.duration_s
        if end - events[i].t < 2:
            continue
        t = int(rng.integers(events[i].t + 1, end))
        gold = script.page_at(t)
        others = [p for p in _PAGES if p != gold]
        texts = [gold, *(others[int(k)] for k in rng.choice(len(others), config.options - 1, replace=False))]
        order = rng.permutation(config.options)
        options = tuple(texts[int(k)] for k in order)
        lines = "\n".join(f"{CHOICE_LETTERS[k]}. {text}" for k, text in enumerate(options))
        out.append(RecordingQuestion(
            id=f"rqa-s{session}-page-{t}", session=session, kind="page_at",
            question=f"Which page was on the screen at {_label(t)}?\n{lines}\nAnswer with the option's letter.",
            options=options, answer=CHOICE_LETTERS[int(np.flatnonzero(order == 0)[0])], evidence_t=(events[i].t,)))
    opened = sum(1 for e in events if e.kind == "open" and e.page == "Products")
    out.append(RecordingQuestion(
        id=f"rqa-s{session}-count", session=session, kind="count",
        question="How many times did the user open the Products page? Answer with a number.", answer=str(opened),
        evidence_t=tuple(e.t for e in events if e.kind == "open" and e.page == "Products")))
    return list({q.id: q for q in out}.values())  # two page questions may draw the same second


def _recording(script: SessionScript, directory: Path, config: RecordingQAConfig) -> Recording:
    """The session's recording in ``directory``, recorded unless a complete one of the same script is there."""
    marker = directory / SCRIPT_FILE
    wanted = {"script": script.model_dump(mode="json"), "viewport": list(config.viewport)}
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == wanted:
                recording = Recording.open(directory / "rec")
                if recording.complete and len(recording) == len(script.events):
                    return recording
        except (json.JSONDecodeError, RecordingError) as exc:
            logger.warning("re-recording %s: %s", directory, exc)
    if directory.exists():  # an interrupted or different recording of ours: it is regenerated
        shutil.rmtree(directory)
    recording = record_session(script, directory / "rec", viewport=config.viewport)
    write_text_atomic(marker, json.dumps(wanted, indent=2) + "\n")
    return recording


def _processor(answerer: Answerer) -> tuple[Any, Any, int | None]:
    """The processor and placeholder ids the prompt is planned with, and a local model's context."""
    engine = getattr(answerer, "engine", None)
    if engine is not None:
        return engine.processor, engine.tokens, engine.context_length
    processor = getattr(answerer, "processor", None)
    if processor is None:
        from giraffe_core.engine import tiny_processor

        processor = tiny_processor()
    return processor, getattr(answerer, "tokens", None), None


def run_recording_qa(answerer: Answerer, config: RecordingQAConfig | None = None, *,
                     out_dir: str | Path | None = None, progress: ProgressFn | None = None) -> EvalReport:
    """Record the sessions (or reuse them), ask and score every question; with ``out_dir``, write the results."""
    config = config or RecordingQAConfig()
    began, started = time.perf_counter(), time.time()
    temporary = None
    if out_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="giraffe-rqa-")
        root = Path(temporary.name)
    else:
        root = Path(out_dir)
    processor, tokens, context = _processor(answerer)
    budget = config.budget_tokens if context is None else min(config.budget_tokens, context - config.max_new_tokens)
    items: list[EvalItem] = []
    try:
        for s in range(config.sessions):
            script = generate_session((config.seed, s), events=config.events, gap_s=config.gap_s)
            recording = _recording(script, root / "recordings" / f"session-{s}", config)
            for q in recording_questions(script, s, config):
                evidence = sorted({recording.frame_at(t).index for t in q.evidence_t})
                items.append(_item(q, recording, evidence, processor, tokens, budget, config))
        ledger = open_ledger(out_dir, "recording_qa", config.model_dump(mode="json", exclude={"sessions"}),
                             answerer.name)
        results = run_items(items, answerer, ledger=ledger, progress=progress)
    finally:
        if temporary is not None:
            temporary.cleanup()
    report = finish_report("recording_qa", results, answerer=answerer, config=config.model_dump(mode="json"),
                           breakdown=("kind",), chance=None, started_at=started, seconds=time.perf_counter() - began,
                           out_dir=out_dir)
    if out_dir is not None:
        bars = [(str(c.cell["kind"]), c.accuracy, c.ci95) for c in report.cells]
        title = f"Screen-recording QA: {report.answerer}"
        plot_or_warn(lambda: plot_bars(Path(out_dir) / PLOT_FILE, bars, title=title))
    logger.info("recording QA: %s, accuracy %s", answerer.name, format_accuracy(report.overall))
    return report


def _item(q: RecordingQuestion, recording: Recording, evidence: list[int], processor: Any, tokens: Any, budget: int,
          config: RecordingQAConfig) -> EvalItem:
    meta: dict[str, Any] = {"session": q.session, "evidence": evidence}

    def build() -> Query:
        plan = plan_question(recording, q.question, processor=processor, tokens=tokens, budget_tokens=budget,
                             scheme=config.scheme, sampling=config.sampling, include_marks=False)
        shown = {f.index for f in plan.frames}
        meta["frames_in_prompt"] = len(shown)
        meta["evidence_in_prompt"] = all(i in shown for i in evidence)
        choices = tuple(CHOICE_LETTERS[:len(q.options)]) if q.options else None
        return Query(id=q.id, messages=plan.messages, choices=choices, max_new_tokens=config.max_new_tokens)

    def score(reply: str):
        if q.kind == "page_at":
            return score_choice(reply, q.options or (), q.answer)
        if q.kind == "time_of":
            return score_time(reply, q.gold_time_s or 0.0)
        if q.kind == "count":
            return score_number(reply, int(q.answer))
        return score_exact(reply, q.answer)

    return EvalItem(id=q.id, cell={"kind": q.kind}, question=q.question, answer=q.answer, build=build, score=score,
                    meta=meta)


def expected_answers(config: RecordingQAConfig) -> dict[str, str]:
    """Question id -> gold answer for every question of ``config``, from the scripts alone (no browser)."""
    answers: dict[str, str] = {}
    for s in range(config.sessions):
        script = generate_session((config.seed, s), events=config.events, gap_s=config.gap_s)
        answers.update((q.id, q.answer) for q in recording_questions(script, s, config))
    return answers
