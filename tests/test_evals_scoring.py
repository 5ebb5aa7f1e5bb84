"""Scorers of the evaluations on hand-built replies, the Wilson interval against its closed form,
and the results ledger (resume, torn lines, refusing another configuration)."""

from __future__ import annotations

import json
import math

import pytest

from evals import (
    EvalError,
    Ledger,
    QuestionResult,
    format_accuracy,
    normalize_answer,
    parse_choice,
    parse_number,
    parse_yes_no,
    score_choice,
    score_exact,
    score_number,
    score_time,
    score_yes_no,
    summarize,
    wilson_interval,
)


@pytest.mark.parametrize(("reply", "expected"), [
    ("Yes", "yes"), ("yes.", "yes"), ("No", "no"), ("  NO!", "no"), ("Yes, there is a red star.", "yes"),
    ("There is no red star in that image.", "no"), ("**No**", "no"), ("Answer: yes", "yes"),
    ("Maybe", None), ("", None), ("Nothing like that", None), ("yesterday I saw it", None), ("nobody knows", None),
    ("no, yes", "no"),
])
def test_yes_no_reads_the_first_standalone_yes_or_no(reply, expected):
    assert parse_yes_no(reply) == expected
    assert score_yes_no(reply, "yes").correct == (expected == "yes")
    assert score_yes_no(reply, "no").correct == (expected == "no")


OPTIONS = ("a red star", "a blue circle", "a green square", "a yellow cross")


@pytest.mark.parametrize(("reply", "expected"), [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B) a blue circle", "B"), ("Answer: C", "C"), ("The answer is (D).", "D"),
    ("answer is B", "B"), ("It is the green square.", "C"), ("A red star.", "A"), ("a blue circle", "B"),
    ("A blue circle", "B"),  # the article "A" before words is not the letter A
    ("E", None), ("red or blue", None), ("a red star or a blue circle", None), ("", None), ("Purple", None),
])
def test_choice_reads_a_letter_or_exactly_one_option(reply, expected):
    assert parse_choice(reply, OPTIONS) == expected
    assert score_choice(reply, OPTIONS, "B").correct == (expected == "B")


def test_exact_answers_are_whole_word_runs_after_normalization():
    assert normalize_answer("The  Code is KIWI-472!") == "code is kiwi 472"
    assert score_exact("KIWI-472", "KIWI-472").correct
    assert score_exact("The code is kiwi 472.", "KIWI-472").correct
    assert score_exact("a cyan hexagon", "cyan hexagon").correct
    assert not score_exact("KIWI-47", "KIWI-472").correct
    assert not score_exact("KIWI-4720", "KIWI-472").correct
    assert not score_exact("kiwi", "KIWI-472").correct
    assert not score_exact("", "meteor").correct
    assert score_exact("meteor", "meteor").prediction == "meteor"


def test_numbers_and_times():
    assert parse_number("3") == 3 and parse_number("It was opened three times.") == 3
    assert parse_number("twice") is None and parse_number("") is None
    assert score_number("2 times", 2).correct and not score_number("12", 2).correct
    assert score_time("[t=00:01:05]", 65).correct
    assert score_time("At 1:05 the kettle was added", 65).correct
    assert score_time("65 s", 65.0).correct
    assert not score_time("[t=00:01:06]", 65).correct
    assert not score_time("never", 65).correct


@pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (10, 10), (37, 100), (200, 400)])
def test_wilson_interval_matches_its_closed_form(k, n):
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(max(0, centre - half), abs=1e-6)
    assert high == pytest.approx(min(1, centre + half), abs=1e-6)
    assert low <= p <= high
    assert wilson_interval(0, 0) is None


def _result(i: int, cell: dict, correct: bool, overflow: bool = False, error: str | None = None) -> QuestionResult:
    return QuestionResult(id=f"q{i}", cell=cell, question="?", answer="yes", reply=None if overflow or error else "x",
                          correct=correct, overflow=overflow, error=error, prompt_tokens=100 + i)


def test_summaries_leave_overflows_out_and_count_errors_as_wrong():
    results = [_result(0, {"n": 1}, True), _result(1, {"n": 1}, False), _result(2, {"n": 1}, False, error="down"),
               _result(3, {"n": 9}, False, overflow=True), _result(4, {"n": 9}, False, overflow=True)]
    overall, cells = summarize(results, ["n"])
    assert [c.cell for c in cells] == [{"n": 1}, {"n": 9}]
    small, big = cells
    assert (small.questions, small.correct, small.errors, small.overflow) == (3, 1, 1, 0)
    assert small.accuracy == pytest.approx(1 / 3)
    assert big.accuracy is None and big.overflow == 2 and format_accuracy(big) == "E"
    assert format_accuracy(small) == "33.3"
    assert overall.accuracy == pytest.approx(1 / 3) and overall.questions == 5
    assert small.mean_prompt_tokens == pytest.approx(101)


def test_ledger_resumes_skips_a_torn_line_and_refuses_another_configuration(tmp_path):
    path = tmp_path / "answers.jsonl"
    header = {"eval": "haystack", "config": {"seed": 0}, "answerer": "oracle"}
    ledger = Ledger(path, header)
    ledger.append({"id": "a", "correct": True})
    ledger.append({"id": "b", "correct": False})
    ledger.append({"id": "a", "correct": False})  # a retry: the later line wins
    with open(path, "ab") as handle:
        handle.write(b'{"id": "c", "corr')  # a crash in the middle of a write
    again = Ledger(path, header)
    assert set(again.done) == {"a", "b"} and again.done["a"]["correct"] is False
    again.append({"id": "c", "correct": True})  # appends after the torn tail was cut
    lines = path.read_text().splitlines()
    assert all(json.loads(line) for line in lines) and Ledger(path, header).done["c"]["correct"] is True
    with pytest.raises(EvalError, match="another evaluation, configuration or model"):
        Ledger(path, {**header, "config": {"seed": 1}})
    path.write_text(path.read_text().replace('"id": "b"', '"id": "b" BROKEN', 1))
    with pytest.raises(EvalError, match="line 3 is not JSON"):
        Ledger(path, header)
