"""The inference engine: a loaded model and processor that turn chats into generations.

``Engine`` owns the model and its processor and does the three things every caller needs:
:meth:`Engine.prepare` (chat -> :class:`~giraffe_core.frames.ModelInputs`, with hybrid-resolution
planning and Giraffe's 3-D position ids), :meth:`Engine.count_tokens` and :meth:`Engine.generate`
(greedy or sampled decoding through transformers' ``generate``, with our position ids passed
explicitly so every backend sees the same layout), and :meth:`Engine.stream`, the same decoding
delivered as text deltas while it runs (transformers' ``TextIteratorStreamer`` in a thread).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from giraffe_core.errors import InputError, ModelLoadError
from giraffe_core.frames import ChatLayout, ModelInputs, build_inputs
from giraffe_core.positions import VisionTokenIds
from giraffe_core.resolution import ResolutionPlan, VisionGeometry

__all__ = ["Engine", "Generation", "GenerationStream"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    """The result of :meth:`Engine.generate`.

    Attributes:
        text: the decoded completion, special tokens removed.
        token_ids: the completion's token ids.
        prompt_tokens: prompt length, tokens.
        completion_tokens: generated tokens.
        finish_reason: "stop" (end-of-turn token) or "length" (``max_new_tokens`` reached).
        plan: the resolution plan of the prompt's frames (``None`` without images).
    """

    text: str
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]
    plan: ResolutionPlan | None


class Engine:
    """A model and its processor, ready to run chats.

    Build one with :func:`giraffe_core.load`. Attributes: ``model`` (a transformers Qwen-VL
    model), ``processor``, ``name`` (what it was loaded from), ``tokens`` (placeholder ids) and
    ``geometry`` (image patch geometry).
    """

    def __init__(self, model: Any, processor: Any, *, name: str = "model") -> None:
        self.model = model
        self.processor = processor
        self.name = name
        self.tokens = VisionTokenIds.from_config(model.config)
        self.geometry = VisionGeometry.from_processor(processor)
        _check_tokenizer(processor.tokenizer, model.config)

    def __repr__(self) -> str:
        return (f"Engine(name={self.name!r}, rope={self.rope_parameters.get('rope_type')!r}, "
                f"context_length={self.context_length}, device={self.device})")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def context_length(self) -> int:
        """Tokens the model is configured for (``max_position_embeddings`` of its text config)."""
        return int(self.model.config.get_text_config(decoder=True).max_position_embeddings)

    @property
    def rope_parameters(self) -> dict:
        return dict(self.model.config.get_text_config(decoder=True).rope_parameters or {})

    def prepare(self, messages: Sequence[dict], *, default_max_tokens: int | None = None,
                add_generation_prompt: bool = True) -> ModelInputs:
        """Chat -> model inputs; image parts may carry ``max_tokens`` (see :mod:`giraffe_core.frames`)."""
        return build_inputs(self.processor, messages, self.tokens, default_max_tokens=default_max_tokens,
                            add_generation_prompt=add_generation_prompt)

    def count_tokens(self, messages: Sequence[dict], **kwargs: Any) -> int:
        """Prompt length of ``messages`` in tokens, exactly as :meth:`generate` would feed it."""
        return self.prepare(messages, **kwargs).num_tokens

    def check_budget(self, inputs: ModelInputs | ChatLayout, max_new_tokens: int) -> None:
        """Raise :class:`InputError` unless ``inputs`` plus ``max_new_tokens`` fit the context.

        Args:
            inputs: a prepared prompt (model inputs or a chat layout).
            max_new_tokens: tokens to generate, at least 1.
        """
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if inputs.num_tokens + max_new_tokens > self.context_length:
            raise InputError(
                f"the prompt has {inputs.num_tokens} tokens; with max_new_tokens={max_new_tokens} it exceeds "
                f"the model's context of {self.context_length} tokens",
                hint="load the model with a larger context_length (M-RoPE++ extends it) or shorten the chat",
            )

    def _start(
        self,
        messages: Sequence[dict] | ModelInputs,
        *,
        max_new_tokens: int,
        do_sample: bool,
        temperature: float,
        top_p: float,
        default_max_tokens: int | None,
        stop: Sequence[str] | None,
    ) -> tuple[ModelInputs, dict[str, Any], tuple[str, ...]]:
        """Shared by :meth:`generate` and :meth:`stream`: prepare, validate, build ``model.generate`` kwargs."""
        inputs = messages if isinstance(messages, ModelInputs) else self.prepare(
            messages, default_max_tokens=default_max_tokens)
        self.check_budget(inputs, max_new_tokens)
        stops = _check_stop(stop)
        kwargs: dict[str, Any] = {
            **inputs.model_kwargs(self.device, self.dtype),
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.model.generation_config.pad_token_id,
            "eos_token_id": self.model.generation_config.eos_token_id,
            "do_sample": do_sample,
        }
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p)
        if stops:
            # transformers' StopStringCriteria ends decoding once a stop string is complete;
            # the text is then cut before it by _cut_at_stop.
            kwargs.update(stop_strings=list(stops), tokenizer=self.processor.tokenizer)
        return inputs, kwargs, stops

    def _finish(self, inputs: ModelInputs, completion: list[int], text: str, stops: tuple[str, ...]) -> Generation:
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        finished = bool(completion) and completion[-1] in eos_ids
        text, cut = _cut_at_stop(text, stops)
        return Generation(text, completion, inputs.num_tokens, len(completion),
                          "stop" if finished or cut else "length", inputs.plan)

    @torch.inference_mode()
    def generate(
        self,
        messages: Sequence[dict] | ModelInputs,
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        default_max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> Generation:
        """Generate a reply to a chat (or to already prepared inputs).

        Greedy by default. ``stop``: strings that end the reply; the text is cut before the first
        one found (``finish_reason`` "stop"), while ``token_ids`` keep every generated token.
        Raises :class:`InputError` when the prompt plus ``max_new_tokens`` is over the model's
        context length (load with a larger ``context_length`` to extend it).
        """
        inputs, kwargs, stops = self._start(
            messages, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p,
            default_max_tokens=default_max_tokens, stop=stop)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            output = self.model.generate(**kwargs)
        completion = output[0, inputs.num_tokens:].tolist()
        text = self.processor.tokenizer.decode(completion, skip_special_tokens=True)
        return self._finish(inputs, completion, text, stops)

    def stream(
        self,
        messages: Sequence[dict] | ModelInputs,
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        default_max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> GenerationStream:
        """Like :meth:`generate`, but return at once a :class:`GenerationStream` of text deltas.

        Decoding runs in a background thread through transformers' ``TextIteratorStreamer``;
        the prompt is prepared and checked here, so errors in the request (bad images, a context
        over the budget) raise before any token is produced. The deltas join to exactly the text
        :meth:`generate` returns for the same arguments; ``stream.result`` holds the
        :class:`Generation` once the stream is exhausted. Like the model, one stream at a time.
        """
        inputs, kwargs, stops = self._start(
            messages, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p,
            default_max_tokens=default_max_tokens, stop=stop)
        return GenerationStream(self, inputs, kwargs, stops, seed)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model, its config and the processor to ``directory`` (loadable with ``load``)."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        return directory


class GenerationStream(Iterator[str]):
    """Text deltas of a generation running in a background thread (made by :meth:`Engine.stream`).

    Iterate it for the deltas (``str``, in order, never empty); they join to ``result.text``. With
    stop strings, text that could be the start of one is held back until it is decided. After the
    last delta, :attr:`result` is the :class:`Generation` (token ids, counts, finish reason). An
    error raised by the model in the background thread is raised again from the iteration.
    :meth:`cancel` ends the decoding at the next token (for clients that went away).

    Attributes:
        prompt_tokens: prompt length, tokens.
        plan: the resolution plan of the prompt's frames (``None`` without images).
    """

    def __init__(self, engine: Engine, inputs: ModelInputs, kwargs: dict[str, Any], stops: tuple[str, ...],
                 seed: int | None) -> None:
        self.prompt_tokens = inputs.num_tokens
        self.plan = inputs.plan
        self._engine = engine
        self._inputs = inputs
        self._stops = stops
        self._cancelled = threading.Event()
        self._streamer = TextIteratorStreamer(engine.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._output: torch.Tensor | None = None
        self._error: BaseException | None = None
        self._text = ""  # everything the streamer produced so far
        self._emitted = 0  # characters of it handed out
        self._result: Generation | None = None
        self._exhausted = False
        kwargs = {**kwargs, "streamer": self._streamer,
                  "stopping_criteria": StoppingCriteriaList([_CancelCriteria(self._cancelled)])}
        self._thread = threading.Thread(target=self._run, args=(kwargs, seed), name="giraffe-generate", daemon=True)
        self._thread.start()

    def _run(self, kwargs: dict[str, Any], seed: int | None) -> None:
        try:
            with torch.inference_mode(), torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                self._output = self._engine.model.generate(**kwargs)
        except BaseException as exc:  # handed to the consumer; the thread must end the stream either way
            self._error = exc
            self._streamer.end()

    @property
    def result(self) -> Generation | None:
        """The finished :class:`Generation`; ``None`` until the last delta has been read."""
        return self._result

    @property
    def finished(self) -> bool:
        """True once iteration has ended (normally or with an error)."""
        return self._exhausted

    def cancel(self) -> None:
        """Stop decoding at the next token; the thread then ends and iteration stops soon after."""
        self._cancelled.set()

    def __iter__(self) -> GenerationStream:
        return self

    def __next__(self) -> str:
        while not self._exhausted:
            piece = next(self._streamer, None)
            if piece is None:  # the streamer ended: decoding finished, failed or was cancelled
                self._thread.join()
                self._exhausted = True
                if self._error is not None:
                    raise self._error
                assert self._output is not None
                completion = self._output[0, self._inputs.num_tokens:].tolist()
                self._result = self._engine._finish(self._inputs, completion, self._text, self._stops)
                tail = self._result.text[self._emitted:]
                self._emitted += len(tail)
                if tail:
                    return tail
                break
            self._text += piece
            ready = _releasable(self._text, self._stops)
            if ready > self._emitted:
                delta = self._text[self._emitted:ready]
                self._emitted = ready
                return delta
        raise StopIteration


class _CancelCriteria(StoppingCriteria):
    """Stops every sequence once ``event`` is set (a transformers stopping criterion)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _check_stop(stop: Sequence[str] | str | None) -> tuple[str, ...]:
    """Stop strings as a tuple; a single string is one stop string."""
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    bad = [s for s in stops if not isinstance(s, str) or not s]
    if bad:
        raise InputError(f"stop strings must be non-empty strings, got {bad!r:.80}")
    return stops


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first occurrence of any stop string, and whether one occurred."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def _releasable(text: str, stops: tuple[str, ...]) -> int:
    """How many leading characters of ``text`` are final: before any stop string, and not a stop's prefix."""
    cut, hit = _cut_at_stop(text, stops)
    if hit:
        return len(cut)
    held = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:k]):
                held = k
                break
    return len(text) - held


def _check_tokenizer(tokenizer: Any, config: Any) -> None:
    """The tokenizer must map Qwen's vision tokens to the ids the model was built with."""
    expected = {
        "<|image_pad|>": config.image_token_id,
        "<|vision_start|>": config.vision_start_token_id,
        "<|vision_end|>": config.vision_end_token_id,
    }
    wrong = {tok: (tokenizer.convert_tokens_to_ids(tok), want) for tok, want in expected.items()
             if tokenizer.convert_tokens_to_ids(tok) != want}
    if wrong:
        detail = ", ".join(f"{tok} is {got} (model: {want})" for tok, (got, want) in wrong.items())
        raise ModelLoadError(
            f"the tokenizer does not match the model: {detail}",
            hint="load the tokenizer saved with this model (tokenizer.json next to config.json)",
        )
