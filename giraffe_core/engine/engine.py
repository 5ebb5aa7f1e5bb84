"""The inference engine: a loaded model and processor that turn chats into generations.

``Engine`` owns the model and its processor and does the three things every caller needs:
:meth:`Engine.prepare` (chat -> :class:`~giraffe_core.frames.ModelInputs`, with hybrid-resolution
planning and Giraffe's 3-D position ids), :meth:`Engine.count_tokens` and :meth:`Engine.generate`
(greedy or sampled decoding through transformers' ``generate``, with our position ids passed
explicitly so every backend sees the same layout).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from giraffe_core.errors import InputError, ModelLoadError
from giraffe_core.frames import ModelInputs, build_inputs
from giraffe_core.positions import VisionTokenIds
from giraffe_core.resolution import ResolutionPlan, VisionGeometry

__all__ = ["Engine", "Generation"]

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
    ) -> Generation:
        """Generate a reply to a chat (or to already prepared inputs).

        Greedy by default. Raises :class:`InputError` when the prompt plus ``max_new_tokens`` is
        over the model's context length (load with a larger ``context_length`` to extend it).
        """
        inputs = messages if isinstance(messages, ModelInputs) else self.prepare(
            messages, default_max_tokens=default_max_tokens)
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if inputs.num_tokens + max_new_tokens > self.context_length:
            raise InputError(
                f"the prompt has {inputs.num_tokens} tokens; with max_new_tokens={max_new_tokens} it exceeds "
                f"the model's context of {self.context_length} tokens",
                hint="load the model with a larger context_length (M-RoPE++ extends it) or shorten the chat",
            )
        sampling: dict[str, Any] = {"do_sample": do_sample}
        if do_sample:
            sampling.update(temperature=temperature, top_p=top_p)
        eos = self.model.generation_config.eos_token_id
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            output = self.model.generate(
                **inputs.model_kwargs(self.device, self.dtype),
                max_new_tokens=max_new_tokens,
                pad_token_id=self.model.generation_config.pad_token_id,
                eos_token_id=eos,
                **sampling,
            )
        completion = output[0, inputs.num_tokens:].tolist()
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        finished = bool(completion) and completion[-1] in eos_ids
        text = self.processor.tokenizer.decode(completion, skip_special_tokens=True)
        return Generation(text, completion, inputs.num_tokens, len(completion),
                          "stop" if finished else "length", inputs.plan)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model, its config and the processor to ``directory`` (loadable with ``load``)."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        return directory


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
