"""The visual haystack: deterministic by seed, exactly balanced, answers that follow from the
scenes (checked by an independent solver over the specs and against the rendered pixels), the
oracle at 100 %, a random answerer within a binomial bound of 50 %, resume, overflow, the tiny
engine end to end.

Random answerer bound: on n = 400 balanced yes/no questions a uniform guesser's correct count is
Binomial(400, 0.5): mean 200, standard deviation 10. The test accepts 200 +- 40 (4 standard
deviations; a fair guesser falls outside with probability about 6e-5). The guesses are a
deterministic function of (seed, question id), so the test is deterministic too.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from evals import (
    COLORS,
    EngineAnswerer,
    HaystackConfig,
    OracleAnswerer,
    RandomAnswerer,
    Reply,
    generate_haystack,
    haystack_items,
    oracle_answers,
    render_scene,
    run_haystack,
)

SMALL = HaystackConfig(sizes=(1, 2, 7), modes=("single", "any", "all"), questions_per_cell=6, image_size_px=(96, 96))


def _solve(question) -> str:
    """An independent solver: reads the answer off the scene specs, as a perfect viewer would."""
    with_anchor = [scene for scene in question.scenes if scene.contains(question.anchor)]
    has_target = [scene.contains(question.target) for scene in with_anchor]
    if question.mode == "single":
        assert len(with_anchor) == 1
        return "yes" if has_target[0] else "no"
    return "yes" if (any(has_target) if question.mode == "any" else all(has_target)) else "no"


def test_same_seed_same_questions_and_pixels_other_seed_differs():
    a, b = generate_haystack(SMALL), generate_haystack(SMALL)
    assert [q.model_dump() for q in a] == [q.model_dump() for q in b]
    other = generate_haystack(SMALL.model_copy(update={"seed": 1}))
    assert [q.id for q in other] == [q.id for q in a]
    assert sum(x.model_dump() != y.model_dump() for x, y in zip(a, other)) >= len(a) - 2
    last = a[-1]
    pixels = [np.asarray(im) for im in last.images(SMALL.image_size_px)]
    assert all(np.array_equal(p, np.asarray(q)) for p, q in zip(pixels, generate_haystack(SMALL)[-1].images((96, 96))))
    assert not np.array_equal(pixels[0], np.asarray(next(other[-1].images((96, 96)))))
    # a question does not change when other sizes or modes are added (its rng is keyed by (seed, mode, size, k))
    alone = generate_haystack(SMALL.model_copy(update={"sizes": (7,), "modes": ("all",)}))
    assert [q.model_dump() for q in alone] == [q.model_dump() for q in a if q.mode == "all" and q.size == 7]


def test_every_cell_is_exactly_balanced_and_the_answers_follow_from_the_scenes():
    questions = generate_haystack(SMALL)
    cells = Counter((q.mode, q.size, q.answer) for q in questions)
    for mode in SMALL.modes:
        for size in SMALL.sizes:
            assert cells[(mode, size, "yes")] == cells[(mode, size, "no")] == 3
    for q in questions:
        assert q.answer == _solve(q), q.id
        assert q.anchor != q.target and len(q.scenes) == q.size
        assert [i for i, s in enumerate(q.scenes) if s.contains(q.anchor)] == list(q.needle_positions)
        assert [i for i, s in enumerate(q.scenes) if s.contains(q.target)] == list(q.target_positions)
        others = [i for i in range(q.size) if i not in q.needle_positions]
        if others:  # "is the target anywhere?" never gives the answer away
            assert any(i in q.target_positions for i in others)
        if q.mode != "single":
            assert min(2, q.size) <= len(q.needle_positions) <= min(5, q.size)
        assert all(2 <= len(s.objects) <= 4 for s in q.scenes)
        assert q.anchor.phrase in q.question and q.target.phrase in q.question


def test_the_rendered_needle_shows_the_anchor_in_its_colour():
    """Pixel check: the centre of every drawn shape is filled with its colour, in the rendered image."""
    checked = 0
    for q in generate_haystack(HaystackConfig(sizes=(3,), questions_per_cell=10, image_size_px=(150, 150))):
        needle = q.scenes[q.needle_positions[0]]
        image = np.asarray(render_scene(needle, (150, 150)))
        for placed in needle.objects:
            if placed.concept.kind != "shape":
                continue
            left, top, right, bottom = placed.box
            x, y = int((left + right) / 2 * 150), int((top + bottom) / 2 * 150)
            assert tuple(image[y, x]) == COLORS[placed.concept.color], (q.id, placed.concept.key)
            checked += 1
    assert checked >= 10


def test_the_oracle_scores_100_and_a_random_guesser_lands_near_50(tmp_path):
    config = HaystackConfig(sizes=(1, 2), modes=("single", "all"), questions_per_cell=100, image_size_px=(32, 32),
                            objects_per_image=(2, 2))
    items = haystack_items(config)
    oracle = run_haystack(OracleAnswerer(oracle_answers(items)), config)
    assert oracle.overall.questions == 400 and oracle.overall.accuracy == 1.0
    assert all(c.accuracy == 1.0 for c in oracle.cells) and oracle.chance == 0.5
    guessed = run_haystack(RandomAnswerer(seed=3), config)
    assert abs(guessed.overall.correct - 200) <= 40, guessed.overall.correct
    assert {q.prediction for q in guessed.questions} == {"yes", "no"}


class Counting:
    """An answerer that records what it was asked and always says yes."""

    name = "counting"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def answer(self, query):
        self.asked.append(query.id)
        return Reply("Yes.")


def test_results_are_written_and_a_rerun_resumes(tmp_path):
    config = HaystackConfig(sizes=(1, 3), questions_per_cell=2, image_size_px=(40, 40))
    first = Counting()
    report = run_haystack(first, config, out_dir=tmp_path)
    assert len(first.asked) == 4 and report.overall.accuracy == 0.5  # "yes" to a balanced set
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["eval"] == "haystack" and saved["overall"]["correct"] == 2 and len(saved["questions"]) == 4
    assert Image.open(tmp_path / "accuracy.png").format == "PNG"
    again = Counting()
    assert run_haystack(again, config, out_dir=tmp_path).overall.correct == 2 and again.asked == []
    bigger = Counting()  # a new size only asks the new questions
    run_haystack(bigger, config.model_copy(update={"sizes": (1, 3, 5)}), out_dir=tmp_path)
    assert bigger.asked == ["haystack-single-n5-q000", "haystack-single-n5-q001"]


def test_the_tiny_engine_end_to_end_with_an_overflow(tiny_engine, tmp_path):
    """4096-token context: one 56 px image fits; five 1000 px images (~1,280 tokens each) do not."""
    small = HaystackConfig(sizes=(1, 2), questions_per_cell=2, image_size_px=(56, 56), max_new_tokens=4)
    report = run_haystack(EngineAnswerer(tiny_engine), small, out_dir=tmp_path / "small")
    assert report.overall.answered == 4 and report.overall.overflow == 0 and report.model["name"] == "tiny"
    for result, item in zip(report.questions, haystack_items(small)):
        assert result.prompt_tokens == tiny_engine.count_tokens(item.build().messages)  # exact counts
        assert result.completion_tokens <= 4 and 0 < result.position_span <= result.prompt_tokens
    big = HaystackConfig(sizes=(5,), questions_per_cell=2, image_size_px=(1000, 1000))
    overflow = run_haystack(EngineAnswerer(tiny_engine), big, out_dir=tmp_path / "big")
    cell = overflow.cell(mode="single", images=5)
    assert cell.overflow == 2 and cell.accuracy is None and cell.errors == 0
    assert all(q.overflow and "context of 4096 tokens" in q.error and q.prompt_tokens > 4096
               for q in overflow.questions)
    assert Image.open(tmp_path / "big" / "accuracy.png").size[0] > 0


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="even"):
        HaystackConfig(questions_per_cell=3)
    with pytest.raises(ValueError, match="sizes"):
        HaystackConfig(sizes=(0, 2))
    with pytest.raises(ValueError, match="extra"):
        HaystackConfig(size=3)
