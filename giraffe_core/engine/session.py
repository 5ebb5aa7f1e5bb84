"""An inference session that keeps the KV cache alive across steps and prefills only what changed.

Each call gets the whole context of the step (a chat, a :class:`~giraffe_core.frames.ChatLayout`
or a :class:`~giraffe_core.memory.RenderedContext`). The session finds the longest prefix that
matches the context it holds in its cache (same tokens, and for every image in that prefix the
same image: same ``key`` of the image part, else the same pixels), moves the cut back to the
start of any image it falls inside, crops the transformers ``Cache`` there, and runs the model on
the rest only, with Giraffe's 3-D position ids for those tokens (the positions of a prefix do not
depend on what follows it) and pixel values for the images after the cut only. Generation then
continues in the same cache, so a model reply that the next context repeats is reused too.

Next-token logits equal a full recompute of the same context (float32: within 1e-4 on the tiny
preset; tested across appends, demotions, evictions and zoom-backs).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.generation import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper
from transformers.modeling_outputs import BaseModelOutputWithPooling

from giraffe_core.engine.engine import Engine, Generation
from giraffe_core.errors import InputError
from giraffe_core.frames import ChatLayout, encode_images, layout_chat, load_image

__all__ = ["Session", "SessionGeneration", "StepStats"]


@dataclass(frozen=True)
class StepStats:
    """Cost of one session call.

    Attributes:
        prompt_tokens: length of the step's context, tokens.
        reused_tokens: tokens whose keys and values came from the cache.
        prefilled_tokens: tokens the model ran on (``prompt_tokens - reused_tokens``).
        frames_encoded: images that went through the vision tower.
        seconds: wall time of the prefill.
    """

    prompt_tokens: int
    reused_tokens: int
    prefilled_tokens: int
    frames_encoded: int
    seconds: float


@dataclass(frozen=True)
class SessionGeneration(Generation):
    """A :class:`~giraffe_core.engine.Generation` plus what the step's prefill cost."""

    stats: StepStats | None = None


def layout_grid(layout: ChatLayout, frames: Sequence[int]) -> torch.Tensor:
    """``(len(frames), 3)`` planned patch grids of the chosen frames of a layout."""
    return torch.tensor([layout.plan.frames[i].grid_thw for i in frames], dtype=torch.long).reshape(-1, 3)


def _image_key(layout: ChatLayout, index: int) -> str:
    part = layout.parts[index]
    budget = layout.plan.frames[index].size if layout.plan is not None else None
    if part.get("key") is not None:
        return f"{part['key']}|{budget}"
    digest = hashlib.blake2b(load_image(layout.images[index]).tobytes(), digest_size=16).hexdigest()
    return f"pixels:{digest}|{budget}"


class Session:
    """A KV cache over an :class:`~giraffe_core.engine.Engine`, reused from step to step.

    Not thread-safe: one session serves one conversation at a time.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.stats: list[StepStats] = []
        self.reset()

    def reset(self) -> None:
        """Forget the cached context."""
        self._cache: Any = None
        self._ids = torch.zeros(0, dtype=torch.long)
        self._keys: dict[tuple[int, int], str] = {}
        self._features: dict[str, torch.Tensor] = {}

    @property
    def cached_tokens(self) -> int:
        """Tokens whose keys and values the cache holds."""
        return int(self._ids.numel())

    def _layout(self, context: Any) -> ChatLayout:
        if isinstance(context, ChatLayout):
            return context
        layout = getattr(context, "layout", None)
        if isinstance(layout, ChatLayout):
            return layout
        engine = self.engine
        return layout_chat(engine.processor, context, engine.tokens)

    def _reusable(self, layout: ChatLayout) -> int:
        """Length of the cached prefix this context can keep (never the whole context)."""
        new = layout.input_ids[0]
        n = min(len(new), len(self._ids))
        differ = (new[:n] != self._ids[:n]).nonzero()
        cut = int(differ[0]) if len(differ) else n
        for i, (start, end) in enumerate(layout.spans):
            if start >= cut:
                break
            if end > cut or self._keys.get((start, end)) != _image_key(layout, i):
                cut = start  # an image is reused whole or not at all
                break
        return min(cut, len(new) - 1)  # the last token always runs, to give the next-token logits

    def _image_features(self, layout: ChatLayout, keys: list[str], chosen: list[int]) -> tuple[list[torch.Tensor], int]:
        """Vision-tower outputs of the chosen frames, reusing those of images already seen.

        A frame's features depend only on its pixels and size, not on the context, so they are
        kept per image key for as long as the image stays in the context. Returns the features in
        order and how many frames went through the vision tower.
        """
        engine = self.engine
        missing = [i for i in chosen if keys[i] not in self._features]
        if missing:
            pixel_values, grid = encode_images(engine.processor, layout, missing)
            out = engine.model.model.get_image_features(pixel_values.to(engine.device, engine.dtype),
                                                        grid.to(engine.device), return_dict=True)
            for i, feature in zip(missing, out.pooler_output):
                self._features[keys[i]] = feature
        features = [self._features[keys[i]] for i in chosen]
        in_context = set(keys)
        self._features = {k: v for k, v in self._features.items() if k in in_context}
        return features, len(missing)

    @torch.inference_mode()
    def prefill(self, context: Sequence[dict] | ChatLayout | Any) -> tuple[torch.Tensor, StepStats]:
        """Bring the cache to ``context`` and return its next-token logits (``(vocab,)`` float32)."""
        began = time.perf_counter()
        layout = self._layout(context)
        engine, model = self.engine, self.engine.model
        if layout.num_tokens > engine.context_length:
            raise InputError(f"the context has {layout.num_tokens} tokens, over the model's {engine.context_length}",
                             hint="lower the memory's budget_tokens or load the model with a larger context_length")
        keep = self._reusable(layout) if self._cache is not None else 0
        if self._cache is not None and keep < self.cached_tokens:
            self._cache.crop(keep - self.cached_tokens)
        keys = [_image_key(layout, i) for i in range(len(layout.spans))]
        after_cut = [i for i, (start, _) in enumerate(layout.spans) if start >= keep]
        features, encoded = self._image_features(layout, keys, after_cut)
        chunk = layout.input_ids[:, keep:]
        kwargs: dict[str, Any] = {
            "input_ids": chunk.to(engine.device),
            "position_ids": layout.position_ids[:, :, keep:].to(engine.device),
            "mm_token_type_ids": (chunk == engine.tokens.image_token_id).int().to(engine.device),
        }
        if after_cut:
            kwargs["image_grid_thw"] = layout_grid(layout, after_cut).to(engine.device)
            kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=features)}
        out = model(**kwargs, cache=self._cache, use_cache=True, logits_to_keep=1)
        self._cache = out.cache
        self._ids = layout.input_ids[0].clone()
        self._keys = {span: key for span, key in zip(layout.spans, keys)}
        self._next_position = int(layout.next_position[0])
        self._last_layout = layout
        stats = StepStats(layout.num_tokens, keep, layout.num_tokens - keep, encoded, time.perf_counter() - began)
        self.stats.append(stats)
        return out.logits[0, -1].float(), stats

    @torch.inference_mode()
    def generate(
        self,
        context: Sequence[dict] | ChatLayout | Any,
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> SessionGeneration:
        """Prefill ``context`` (reusing the cache) and decode a reply in the same cache.

        Greedy by default; ``do_sample`` uses transformers' temperature and top-p warpers with a
        private generator seeded by ``seed``.
        """
        engine = self.engine
        layout = self._layout(context)
        engine.check_budget(layout, max_new_tokens)  # before the cache is touched
        logits, stats = self.prefill(layout)
        eos = engine.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)])
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        completion: list[int] = []
        position = self._next_position
        while True:
            if do_sample:
                history = torch.tensor([completion or [0]])
                probs = warpers(history, logits[None].cpu()).softmax(-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            else:
                token = int(logits.argmax())
            completion.append(token)
            if token in eos_ids or len(completion) == max_new_tokens:
                break
            pos = torch.full((3, 1, 1), position, dtype=torch.long, device=engine.device)
            out = engine.model(input_ids=torch.tensor([[token]], device=engine.device), position_ids=pos,
                               cache=self._cache, use_cache=True)
            self._cache = out.cache
            self._ids = torch.cat([self._ids, torch.tensor([token])])
            position += 1
            logits = out.logits[0, -1].float()
        finished = completion[-1] in eos_ids
        text = engine.processor.tokenizer.decode(completion, skip_special_tokens=True)
        return SessionGeneration(text, completion, stats.prompt_tokens, len(completion),
                                 "stop" if finished else "length", self._last_layout.plan, stats)
