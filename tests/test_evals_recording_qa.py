"""Screen-recording QA: scripts deterministic by seed, answers recomputed independently from the
script, sessions recorded in headless Chromium on loopback (one frame per event at its script
time, a different screen after every event), the oracle at 100 %, the tiny engine end to end,
and a resumed run that neither records nor asks again."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from browser_fixtures import requires_browser
from PIL import Image

from evals import (
    CHOICE_LETTERS,
    PRODUCTS,
    EngineAnswerer,
    OracleAnswerer,
    RecordingQAConfig,
    Reply,
    expected_answers,
    generate_session,
    recording_questions,
    run_recording_qa,
)
from giraffe_agent.recording import Recording

CONFIG = RecordingQAConfig(sessions=2, events=6, gap_s=(5, 15), viewport=(320, 200), budget_tokens=4096,
                           scheme={"group_size": 2, "high_tokens": 16, "ratio": 2}, max_new_tokens=8)


def _seconds(label: str) -> int:
    h, m, s = (int(v) for v in re.search(r"\[t=(\d+):(\d+):(\d+)\]", label).groups())
    return 3600 * h + 60 * m + s


def test_scripts_are_deterministic_and_well_formed():
    for seed in range(20):
        script = generate_session((7, seed), events=10, gap_s=(5, 30))
        assert script == generate_session((7, seed), events=10, gap_s=(5, 30))
        times = [e.t for e in script.events]
        assert times == sorted(set(times)) and times[0] == 0 and script.duration_s > times[-1]
        assert len(script.events) == 11 and script.events[0].page == "Home"
        for before, event in zip(script.events, script.events[1:]):
            if event.kind == "submit":
                assert before.kind == "type" and before.text == event.text and event.t == before.t + 2
            if event.kind == "add":
                assert before.page == event.page == event.product and event.product in PRODUCTS
        added = [e.product for e in script.events if e.kind == "add"]
        assert len(added) == len(set(added))
    assert generate_session((7, 0)) != generate_session((7, 1))


def test_answers_follow_from_the_script():
    for session in range(6):
        script = generate_session((0, session), events=12, gap_s=(5, 30))
        questions = recording_questions(script, session, RecordingQAConfig(page_questions=3))
        kinds = {q.kind for q in questions}
        assert "count" in kinds
        for q in questions:
            if q.kind == "count":
                assert int(q.answer) == sum(e.kind == "open" and e.page == "Products" for e in script.events)
            elif q.kind == "typed":
                t = _seconds(q.question)
                assert q.answer == next(e.text for e in script.events if e.kind == "type" and e.t == t)
            elif q.kind == "time_of":
                event = next(e for e in script.events if e.kind == "add" and e.product.lower() in q.question)
                assert _seconds(q.answer) == event.t == q.gold_time_s
            else:
                t = _seconds(q.question)
                assert all(e.t != t for e in script.events)  # strictly between two events
                on_screen = [e for e in script.events if e.t <= t][-1].page
                assert q.options[CHOICE_LETTERS.index(q.answer)] == on_screen
                assert q.options.count(on_screen) == 1
    answers = expected_answers(CONFIG)
    assert answers == expected_answers(CONFIG) and answers != expected_answers(CONFIG.model_copy(update={"seed": 1}))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """CONFIG's sessions recorded once, answered by the oracle."""
    out = tmp_path_factory.mktemp("rqa") / "oracle"
    report = run_recording_qa(OracleAnswerer(expected_answers(CONFIG)), CONFIG, out_dir=out)
    return out, report


@requires_browser
def test_sessions_are_recorded_with_a_frame_per_event_and_the_oracle_scores_100(recorded):
    out, report = recorded
    assert report.overall.accuracy == 1.0 and report.overall.questions == len(expected_answers(CONFIG))
    for s in range(CONFIG.sessions):
        script = generate_session((CONFIG.seed, s), events=CONFIG.events, gap_s=CONFIG.gap_s)
        recording = Recording.open(out / "recordings" / f"session-{s}" / "rec")
        assert recording.complete and recording.duration == script.duration_s
        assert [f.t for f in recording.frames] == [float(e.t) for e in script.events]
        assert all(f.size == CONFIG.viewport for f in recording.frames)
        pixels = [np.asarray(recording.image(i)) for i in range(len(recording))]
        for i, event in enumerate(script.events[1:], 1):  # every event changed the screen
            assert not np.array_equal(pixels[i], pixels[i - 1]), event
    assert all(q.meta["evidence_in_prompt"] for q in report.questions)
    assert Image.open(out / "accuracy.png").format == "PNG"


class Counting:
    name = "counting"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def answer(self, query):
        self.asked.append(query.id)
        return Reply("")


@requires_browser
def test_a_rerun_reuses_the_recordings_and_answers(recorded, tmp_path):
    out, _ = recorded
    shutil.copytree(out / "recordings", tmp_path / "recordings")
    index = tmp_path / "recordings" / "session-0" / "rec" / "index.jsonl"
    stamp = index.stat().st_mtime_ns
    first = Counting()
    report = run_recording_qa(first, CONFIG, out_dir=tmp_path)
    assert len(first.asked) == report.overall.questions and report.overall.accuracy == 0.0
    again = Counting()
    run_recording_qa(again, CONFIG, out_dir=tmp_path)
    assert again.asked == [] and index.stat().st_mtime_ns == stamp


@requires_browser
def test_the_tiny_engine_end_to_end(recorded, tiny_engine, tmp_path):
    out, _ = recorded
    shutil.copytree(out / "recordings", tmp_path / "recordings")
    config = CONFIG.model_copy(update={"sessions": 1, "page_questions": 0})
    report = run_recording_qa(EngineAnswerer(tiny_engine), config, out_dir=tmp_path)
    assert report.overall.answered == report.overall.questions > 0 and report.overall.errors == 0
    for q in report.questions:
        assert q.prompt_tokens <= 4096 - config.max_new_tokens and q.completion_tokens <= 8
        assert q.meta["frames_in_prompt"] == config.events + 1
    assert (tmp_path / "results.json").is_file() and Image.open(tmp_path / "accuracy.png").format == "PNG"
