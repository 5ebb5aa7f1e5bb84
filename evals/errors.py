"""Errors of the evaluation harnesses (both are :class:`~giraffe_core.errors.GiraffeError`).

* :class:`EvalError`: an evaluation cannot run or resume: an output directory that holds the
  results of a different evaluation or configuration, a corrupt ledger line in the middle of
  ``answers.jsonl`` / ``episodes.jsonl``, an evaluation name that does not exist.
* :class:`ContextOverflowError`: one question's prompt does not fit the model's context. The
  harnesses never let it stop a run: the question is recorded as an overflow, left out of the
  accuracy and shown as ``E`` in tables (as Visual Haystacks reports prompts beyond a model's
  context).
"""

from __future__ import annotations

from giraffe_core.errors import GiraffeError

__all__ = ["ContextOverflowError", "EvalError"]


class EvalError(GiraffeError, RuntimeError):
    """An evaluation cannot run or resume (see the module doc)."""

    code = "eval-error"


class ContextOverflowError(GiraffeError, ValueError):
    """A prompt is longer than the model's context (with room for the answer).

    Attributes:
        prompt_tokens: the prompt's length, tokens (``None`` when the server did not say).
        context_length: the model's context, tokens (``None`` when unknown).
    """

    code = "context-overflow"

    def __init__(self, message: str, *, prompt_tokens: int | None = None, context_length: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length
