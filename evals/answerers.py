"""Answerers: how an evaluation asks a model one question.

A :class:`Query` is one question as the model sees it: a chat in Giraffe's form (messages whose
image parts may carry ``max_tokens``, their visual-token budget; see :mod:`giraffe_core.frames`),
the closed set of answers when there is one, and the most tokens to generate. An
:class:`Answerer` turns it into a :class:`Reply`:

* :class:`EngineAnswerer`: a local :class:`~giraffe_core.Engine`, greedy. The prompt is laid out
  first without touching pixels (:func:`giraffe_core.layout_chat`: exact token count and position
  span); a prompt that does not leave ``max_new_tokens`` in the model's context raises
  :class:`~evals.errors.ContextOverflowError` before any image is encoded.
* :class:`EndpointAnswerer`: any OpenAI-compatible chat-completions endpoint (``giraffe serve``,
  vLLM, sglang). Frames are resized client-side to their planned size and sent as PNG data URLs
  (:func:`giraffe_agent.backends.to_openai_messages`), so a Qwen-VL server spends exactly the
  planned visual tokens. A server's context-length refusal becomes a ``ContextOverflowError``;
  other failures a :class:`~giraffe_agent.backends.BackendError`.
* :class:`OracleAnswerer`: knows the generator's answers (by question id) and replies with them:
  every scorer must then give 100 %.
* :class:`RandomAnswerer`: picks uniformly among the query's closed answers, deterministically
  from ``(seed, question id)``; on yes/no questions it scores 50 % in expectation.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from evals.errors import ContextOverflowError
from giraffe_agent.backends.openai import BackendError, to_openai_messages
from giraffe_core.engine.engine import Engine
from giraffe_core.errors import ConfigError, InputError
from giraffe_core.extras import require
from giraffe_core.frames import ChatLayout, layout_chat
from giraffe_core.positions import VisionTokenIds
from giraffe_core.resolution import VisionGeometry

__all__ = ["Answerer", "EndpointAnswerer", "EngineAnswerer", "OracleAnswerer", "Query", "RandomAnswerer", "Reply"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Query:
    """One question as the model sees it.

    Attributes:
        id: the question's id (stable for a given generator, configuration and seed).
        messages: the chat; image parts hold PIL images (or paths) and may carry ``max_tokens``.
        choices: the closed set of valid answers (``("yes", "no")``, option letters), ``None``
            for open questions.
        max_new_tokens: the most tokens to generate.
    """

    id: str
    messages: list[dict]
    choices: tuple[str, ...] | None = None
    max_new_tokens: int = 16


@dataclass(frozen=True)
class Reply:
    """A model's reply and, when the answerer knows them, its counts.

    Attributes:
        text: the raw reply.
        prompt_tokens: prompt length, tokens.
        completion_tokens: tokens generated.
        position_span: largest position id in the prompt + 1 (local engines only): how far the
            prompt reaches into the rotary range, which is what rope extension is about.
    """

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    position_span: int | None = None


@runtime_checkable
class Answerer(Protocol):
    """Answers queries; ``name`` identifies it in results (and in resumable ledgers)."""

    name: str

    def answer(self, query: Query) -> Reply:
        """The reply to ``query``."""
        ...


class EngineAnswerer:
    """A local engine, greedy decoding.

    Args:
        engine: a loaded :class:`~giraffe_core.Engine` (``giraffe_core.load(...)``).
        name: the name in results (default ``engine.name``).

    Raises (from :meth:`answer`):
        ContextOverflowError: prompt + ``max_new_tokens`` is over ``engine.context_length``.
        InputError: an unreadable image in the chat.
    """

    def __init__(self, engine: Engine, *, name: str | None = None) -> None:
        self.engine = engine
        self.name = name or engine.name

    def answer(self, query: Query) -> Reply:
        """Lay the chat out, check it fits, then generate greedily."""
        engine = self.engine
        layout = layout_chat(engine.processor, query.messages, engine.tokens)
        span = int(layout.next_position.max())
        if layout.num_tokens + query.max_new_tokens > engine.context_length:
            raise ContextOverflowError(
                f"question {query.id}: the prompt has {layout.num_tokens} tokens; with max_new_tokens="
                f"{query.max_new_tokens} it is over the model's context of {engine.context_length} tokens",
                prompt_tokens=layout.num_tokens, context_length=engine.context_length,
                hint="load the model with a larger context_length (M-RoPE++ extends it)")
        generation = engine.generate(engine.prepare(query.messages), max_new_tokens=query.max_new_tokens)
        return Reply(generation.text, generation.prompt_tokens, generation.completion_tokens, span)


@dataclass(frozen=True)
class _Prompt:
    """What :func:`to_openai_messages` reads: the chat and its layout (the planned frame sizes)."""

    messages: list[dict]
    layout: ChatLayout


def _context_refusal(exc: Any) -> bool:
    """Whether an HTTP 400 from the server says the prompt is over its context."""
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    text = f"{code} {getattr(exc, 'message', exc)}".lower()
    return code == "context_length_exceeded" or "context length" in text or "context_length" in text


class EndpointAnswerer:
    """An OpenAI-compatible chat-completions endpoint (``openai`` package: the ``agent`` extra).

    Args:
        base_url: the API root, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: the served model id (default: the first the server lists).
        processor: the served model's processor for the planned frame sizes and token counts
            (default: the tiny preset's, which has Qwen2-VL's image geometry).
        api_key: default ``$OPENAI_API_KEY``, else a placeholder for local servers.
        timeout_s: one request's timeout, seconds; ``max_retries``: retries of failed requests.
        temperature: 0 is greedy.

    Raises:
        MissingExtraError: ``openai`` is not installed.
        BackendError: no model is served (when ``model`` is not given).
    """

    def __init__(self, base_url: str, model: str | None = None, *, processor: Any = None,
                 api_key: str | None = None, timeout_s: float = 600.0, max_retries: int = 2,
                 temperature: float = 0.0) -> None:
        openai = require("openai", extra="agent", purpose="evaluate an OpenAI-compatible endpoint")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"the endpoint must be an http(s) URL, got {base_url!r}",
                              hint="e.g. http://127.0.0.1:8000/v1 (giraffe serve, vLLM, sglang)")
        if processor is None:
            from giraffe_core.engine import tiny_processor

            processor = tiny_processor()
        self._openai = openai
        self.base_url = base_url
        self.processor = processor
        tokenizer = processor.tokenizer
        self.tokens = VisionTokenIds(image_token_id=int(tokenizer.convert_tokens_to_ids("<|image_pad|>")),
                                     video_token_id=int(tokenizer.convert_tokens_to_ids("<|video_pad|>")),
                                     spatial_merge_size=VisionGeometry.from_processor(processor).merge_size)
        self.temperature = temperature
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY") or "unused"
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=max_retries)
        if model is None:
            try:
                models = [m.id for m in self.client.models.list()]
            except openai.APIError as exc:
                raise BackendError(f"cannot list the models of {base_url}: {exc}",
                                   hint="is the server running? Or pass the model id") from exc
            if not models:
                raise BackendError(f"{base_url} serves no models", hint="pass the model id")
            model = models[0]
        self.model = model
        self.name = f"endpoint:{model}"

    def answer(self, query: Query) -> Reply:
        """Send the chat with every frame at its planned size; the server's counts when it gives them."""
        openai = self._openai
        layout = layout_chat(self.processor, query.messages, self.tokens)
        messages = to_openai_messages(_Prompt(query.messages, layout))
        try:
            reply = self.client.chat.completions.create(model=self.model, messages=messages,
                                                        max_tokens=query.max_new_tokens,
                                                        temperature=self.temperature)
        except openai.BadRequestError as exc:
            if _context_refusal(exc):
                raise ContextOverflowError(f"question {query.id}: {self.base_url} refused a prompt of about "
                                           f"{layout.num_tokens} tokens as over its context: {exc.message}",
                                           prompt_tokens=layout.num_tokens) from exc
            raise BackendError(f"{self.base_url} refused question {query.id} (HTTP 400): {exc.message}",
                               status=400) from exc
        except openai.APIStatusError as exc:
            raise BackendError(f"{self.base_url} answered HTTP {exc.status_code} to question {query.id}: "
                               f"{exc.message}", status=exc.status_code) from exc
        except openai.APIError as exc:  # connection errors and timeouts, after the client's retries
            raise BackendError(f"cannot get an answer from {self.base_url}: {exc}",
                               hint="is the server running, and is the URL its API root (ending in /v1)?") from exc
        if not reply.choices:
            raise BackendError(f"{self.base_url} answered question {query.id} without a choice")
        usage = reply.usage
        return Reply(reply.choices[0].message.content or "",
                     usage.prompt_tokens if usage is not None else layout.num_tokens,
                     usage.completion_tokens if usage is not None else None,
                     None)


class OracleAnswerer:
    """Replies with the gold answer of each question (by id): a check of generators and scorers.

    Args:
        answers: question id -> the answer as a perfect model would write it.
    """

    def __init__(self, answers: Mapping[str, str], *, name: str = "oracle") -> None:
        self.answers = dict(answers)
        self.name = name

    def answer(self, query: Query) -> Reply:
        """The stored answer of ``query.id``; :class:`InputError` when there is none."""
        if query.id not in self.answers:
            raise InputError(f"the oracle knows no answer to question {query.id!r}",
                             hint="build it from the same generated questions (same configuration and seed)")
        return Reply(self.answers[query.id])


class RandomAnswerer:
    """Answers uniformly at random among ``query.choices`` (open questions get an empty reply).

    The draw depends only on ``(seed, query.id)``, never on the order questions are asked in.
    """

    def __init__(self, seed: int = 0, *, name: str = "random") -> None:
        self.seed = int(seed)
        self.name = name

    def answer(self, query: Query) -> Reply:
        """A uniformly drawn choice."""
        if not query.choices:
            return Reply("")
        rng = random.Random(f"{self.seed}:{query.id}")
        return Reply(rng.choice(query.choices))
