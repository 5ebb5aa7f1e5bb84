"""The needle in a video: deterministic by seed, the needle at its depth (found in the pixels by
an independent detector), options that hold the answer once, the oracle at 100 % in both answer
formats, a random guesser within a binomial bound of 1 / options, the tiny engine end to end.

Random answerer bound: 4 options, n = 300 questions: correct ~ Binomial(300, 0.25), mean 75,
standard deviation 7.5; accepted 75 +- 30 (4 standard deviations).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evals import (
    CHOICE_LETTERS,
    EngineAnswerer,
    NeedleConfig,
    OracleAnswerer,
    RandomAnswerer,
    generate_needles,
    needle_frames,
    needle_items,
    oracle_answers,
    run_needle,
    video_frame,
)

SMALL = NeedleConfig(frames=(4, 9), depths=(0.0, 0.3, 1.0), needles_per_cell=2, frame_size_px=(112, 84),
                     video_frames=50)


def _white_fraction(image: Image.Image) -> float:
    """Share of near-white pixels: the needle's white card covers most of its frame, nothing else is white."""
    pixels = np.asarray(image).astype(int)
    return float((pixels.min(axis=2) >= 245).mean())


def test_same_seed_same_questions_and_frames_other_seed_differs():
    a, b = generate_needles(SMALL), generate_needles(SMALL)
    assert [q.model_dump() for q in a] == [q.model_dump() for q in b]
    other = generate_needles(SMALL.model_copy(update={"seed": 5}))
    assert [q.id for q in other] == [q.id for q in a] and [q.needle for q in other] != [q.needle for q in a]
    frames = [np.asarray(f) for f in needle_frames(a[0], SMALL)]
    assert all(np.array_equal(x, np.asarray(y)) for x, y in zip(frames, needle_frames(b[0], SMALL)))
    assert not np.array_equal(np.asarray(video_frame(0, 3, (112, 84))), np.asarray(video_frame(5, 3, (112, 84))))
    assert not np.array_equal(np.asarray(video_frame(0, 3, (112, 84))), np.asarray(video_frame(0, 30, (112, 84))))


def test_the_needle_sits_at_its_depth_and_only_there():
    for q in generate_needles(SMALL):
        frames = list(needle_frames(q, SMALL))
        assert len(frames) == q.frames + 1
        white = [_white_fraction(f) > 0.3 for f in frames]
        assert white.index(True) == q.position == round(q.depth * q.frames) and sum(white) == 1
        if q.depth == 0.0:
            assert q.position == 0
        if q.depth == 1.0:
            assert q.position == q.frames  # the last frame


def test_options_hold_the_answer_once_at_the_gold_letter():
    for q in generate_needles(SMALL.model_copy(update={"needles_per_cell": 4})):
        assert q.options is not None and len(q.options) == 4 and len(set(q.options)) == 4
        gold = q.options[CHOICE_LETTERS.index(q.answer)]
        assert gold == q.needle if q.kind == "code" else gold == f"a {q.needle}"
    kinds = [q.kind for q in generate_needles(SMALL)]
    assert kinds.count("code") == kinds.count("object")  # alternated within every cell
    exact = generate_needles(SMALL.model_copy(update={"answer_format": "exact"}))
    assert all(q.options is None and q.answer in (q.needle, f"a {q.needle}") for q in exact)


def test_the_oracle_scores_100_in_both_formats_and_random_guesses_near_a_quarter():
    for answer_format in ("choice", "exact"):
        config = SMALL.model_copy(update={"answer_format": answer_format, "frames": (1,), "depths": (0.0, 1.0)})
        report = run_needle(OracleAnswerer(oracle_answers(needle_items(config))), config)
        assert report.overall.accuracy == 1.0 and report.overall.questions == 4
    config = NeedleConfig(frames=(1,), depths=(0.0, 0.5, 1.0), needles_per_cell=100, frame_size_px=(28, 28),
                          video_frames=10)
    guessed = run_needle(RandomAnswerer(seed=1), config)
    assert guessed.chance == 0.25 and guessed.overall.questions == 300
    assert abs(guessed.overall.correct - 75) <= 30, guessed.overall.correct


def test_the_tiny_engine_end_to_end_writes_a_heatmap(tiny_engine, tmp_path):
    config = NeedleConfig(frames=(2, 4), depths=(0.0, 1.0), needles_per_cell=1, frame_size_px=(56, 56),
                          video_frames=8, max_frame_tokens=4, max_new_tokens=4)
    report = run_needle(EngineAnswerer(tiny_engine), config, out_dir=tmp_path)
    assert report.overall.questions == 4 and report.overall.answered == 4
    assert [c.cell for c in report.cells] == [{"frames": n, "depth": d} for n in (2, 4) for d in (0.0, 1.0)]
    item = needle_items(config)[-1]
    assert report.questions[-1].prompt_tokens == tiny_engine.count_tokens(item.build().messages)
    assert Image.open(tmp_path / "accuracy.png").format == "PNG" and (tmp_path / "results.json").is_file()


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="depths"):
        NeedleConfig(depths=(0.5, 1.5))
    with pytest.raises(ValueError, match="video_frames"):
        NeedleConfig(frames=(10,), video_frames=5)
