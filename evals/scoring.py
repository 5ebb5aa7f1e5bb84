"""Scorers: read a model's reply as a prediction and compare it with the gold answer.

Every scorer returns a :class:`Score` (the prediction it read, or ``None`` when the reply holds
none, and whether it is correct). A reply the scorer cannot read is wrong, never an error.

* :func:`score_yes_no`: the first standalone word ``yes`` or ``no`` (any case, punctuation
  around it ignored) is the prediction: "Yes, it is." -> yes; "There is no red star" -> no;
  "Maybe" -> ``None`` (wrong). Visual Haystacks' questions have yes/no answers balanced 50/50.
* :func:`score_choice`: a letter answer (``B``, ``(B)``, ``B.``, ``B)``, ``Answer: B``, ``the
  answer is (B)``) or, failing that, the text of exactly one option found in the reply ("It is
  the red star" with an option "a red star"); an article "A" before words ("A red star") is not
  read as the letter A.
* :func:`score_exact`: the gold answer, normalized (:func:`normalize_answer`: lower case,
  punctuation to spaces, articles dropped), must occur as a whole run of words in the normalized
  reply: "The code is KIWI-472." answers "kiwi-472"; "KIWI-47" does not.
* :func:`score_number`: the first integer in the reply, in digits or as a word up to twenty.
* :func:`score_time`: the first time reference in the reply (``[t=00:01:05]``, ``1:05``,
  ``65 s``; :func:`giraffe_agent.qa.parse_timestamps`) must name the gold time to the second
  (``|t - gold| < 0.5`` s, the precision of the prompt's ``[t=HH:MM:SS]`` captions).

:func:`wilson_interval` gives the 95 % confidence interval reported with every accuracy.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from giraffe_agent.qa import parse_timestamps

__all__ = [
    "CHOICE_LETTERS",
    "Score",
    "normalize_answer",
    "parse_choice",
    "parse_number",
    "parse_yes_no",
    "score_choice",
    "score_exact",
    "score_number",
    "score_time",
    "score_yes_no",
    "wilson_interval",
]

#: letters of multiple-choice options, in order
CHOICE_LETTERS = "ABCDEFGH"

_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = {w: i for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"))}
_YES_NO = re.compile(r"(?<![a-z0-9])(yes|no)(?![a-z0-9])")
_LEADING_LETTER = re.compile(r"^\s*[(\[]?([A-H])(?:\s*[)\].:,]|\s*$)")
_NAMED_LETTER = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is|:|=)?\s*[(\[]?([A-H])\b(?![-'])")


@dataclass(frozen=True)
class Score:
    """A scored reply: ``prediction`` is what was read from it (``None``: nothing readable)."""

    prediction: str | None
    correct: bool


def normalize_answer(text: str) -> str:
    """Lower case (NFKC), every run of non-alphanumeric characters to one space, articles dropped."""
    text = unicodedata.normalize("NFKC", text).lower()
    words = re.sub(r"[^0-9a-z]+", " ", text).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def parse_yes_no(text: str) -> str | None:
    """``"yes"`` or ``"no"``: the first of the two words in ``text``; ``None`` when neither occurs."""
    match = _YES_NO.search(unicodedata.normalize("NFKC", text).lower())
    return match.group(1) if match else None


def parse_choice(text: str, options: Sequence[str]) -> str | None:
    """The option letter a reply chooses (see the module doc), or ``None``.

    Args:
        text: the reply.
        options: the option texts, in letter order (``options[0]`` is A).
    """
    letters = CHOICE_LETTERS[:len(options)]
    for pattern in (_LEADING_LETTER, _NAMED_LETTER):
        match = pattern.search(text)
        if match and match.group(1) in letters:
            return match.group(1)
    reply = f" {normalize_answer(text)} "
    hits = [letters[i] for i, option in enumerate(options)
            if (norm := normalize_answer(option)) and f" {norm} " in reply]
    return hits[0] if len(hits) == 1 else None


def parse_number(text: str) -> int | None:
    """The first integer in ``text``, written in digits or as a word from zero to twenty."""
    for word in normalize_answer(text).split():
        if word.isdigit():
            return int(word)
        if word in _NUMBER_WORDS:
            return _NUMBER_WORDS[word]
    return None


def score_yes_no(reply: str, gold: str) -> Score:
    """Yes/no questions: correct when the first yes/no word of ``reply`` is ``gold``."""
    prediction = parse_yes_no(reply)
    return Score(prediction, prediction == gold)


def score_choice(reply: str, options: Sequence[str], gold: str) -> Score:
    """Multiple choice: correct when the chosen letter is ``gold`` (a letter)."""
    prediction = parse_choice(reply, options)
    return Score(prediction, prediction == gold)


def score_exact(reply: str, gold: str) -> Score:
    """Exact answers: correct when normalized ``gold`` occurs as a whole run of words in the reply."""
    norm_gold = normalize_answer(gold)
    norm_reply = normalize_answer(reply)
    correct = bool(norm_gold) and f" {norm_gold} " in f" {norm_reply} "
    return Score(norm_reply or None, correct)


def score_number(reply: str, gold: int) -> Score:
    """Counts: correct when the first integer of the reply is ``gold``."""
    prediction = parse_number(reply)
    return Score(None if prediction is None else str(prediction), prediction == gold)


def score_time(reply: str, gold_s: float) -> Score:
    """Times: correct when the first time reference names ``gold_s`` to the second."""
    times = parse_timestamps(reply)
    if not times:
        return Score(None, False)
    seconds = times[0][2]
    return Score(f"{seconds:g}", abs(seconds - gold_s) < 0.5)


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``correct / total`` (95 % by default); ``None`` for ``total == 0``."""
    if total <= 0:
        return None
    p = correct / total
    denom = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)
