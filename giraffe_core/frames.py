"""Chats with frames of MIXED sizes -> model inputs (pixel values, grids, 3-D position ids).

A chat is a list of messages in the Hugging Face / Qwen form::

    [{"role": "user", "content": [
        {"type": "image", "image": <PIL.Image | path | numpy HxWx3 uint8 | bytes>, "max_tokens": 80},
        {"type": "text", "text": "What changed?"}]}]

``max_tokens`` (optional) is the frame's resolution tier: its budget of visual tokens. Frames
without one get the processor's own cap. :func:`build_inputs` plans every frame with
:mod:`giraffe_core.resolution`, resizes it to exactly the planned size, lets the processor
patchify and expand the placeholders (one ``<|image_pad|>`` per visual token), checks that the
processor's grids equal the plan, and computes position ids with :mod:`giraffe_core.positions`.

Position layout of the frames of one recording: every frame is its own visual block (an image
of grid ``(1, h, w)``), and the running position moves past it by ``max(h, w)`` and past the text
between frames (timestamps, captions) token by token. We chose this over one shared temporal axis
(a video-like block whose frames all start at the same spatial position) because (1) the vision
tower takes one grid per item, so frames of different resolutions cannot form one video item;
(2) it is the layout vLLM, sglang and transformers compute on their own from the token stream,
so the same context gives the same positions on every backend and in training; (3) it lets text
(timestamps, URLs, actions) sit between frames. The cost is that a long recording spans more
positions than a video would (about ``max(h, w) + caption tokens`` per frame), which is exactly
the range M-RoPE++ extends.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from giraffe_core.errors import InputError
from giraffe_core.positions import VisionTokenIds, rope_index
from giraffe_core.resolution import ResolutionPlan, VisionGeometry, plan_tiers

__all__ = ["ModelInputs", "build_inputs", "image_parts", "load_image"]


def load_image(source: Any) -> Image.Image:
    """Open an image given as a PIL image, a path, raw bytes, or an ``(H, W, 3)`` uint8 array, as RGB."""
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, (str, Path)):
            image = Image.open(source)
        elif isinstance(source, (bytes, bytearray)):
            image = Image.open(io.BytesIO(source))
        elif isinstance(source, np.ndarray):
            if source.ndim != 3 or source.shape[2] not in (3, 4) or source.dtype != np.uint8:
                raise InputError(f"an image array must be (H, W, 3|4) uint8, got {source.shape} {source.dtype}")
            image = Image.fromarray(source)
        else:
            raise InputError(f"cannot read an image from a {type(source).__name__}",
                             hint="pass a PIL image, a file path, PNG/JPEG bytes or an (H, W, 3) uint8 array")
        return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {str(source)[:80]!r}: {exc}") from exc


def image_parts(messages: Sequence[dict]) -> list[dict]:
    """The image parts of a chat, in order of appearance."""
    parts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise InputError(f"message {i} must be a dict with 'role' and 'content', got {message!r:.80}")
        content = message["content"]
        if isinstance(content, str):
            continue
        for part in content:
            if not isinstance(part, dict):
                raise InputError(f"message {i}: content parts must be dicts, got {part!r:.80}")
            if part.get("type") == "video" or "video" in part:
                raise InputError(f"message {i}: video parts are not supported here",
                                 hint="pass the video's frames as image parts (plan them with plan_groups)")
            if part.get("type") == "image_url" or "image_url" in part:
                raise InputError(f"message {i}: 'image_url' parts are not read here",
                                 hint="load the image yourself and pass {'type': 'image', 'image': <PIL/path/bytes>}")
            if part.get("type") == "image" or "image" in part:
                if part.get("image") is None:
                    raise InputError(f"message {i}: an image part needs an 'image' (PIL image, path, bytes or array)")
                parts.append(part)
    return parts


@dataclass
class ModelInputs:
    """Everything one forward pass or generation needs, plus the plan that produced it.

    Shapes: ``input_ids``, ``attention_mask``, ``mm_token_type_ids``: ``(1, L)``;
    ``position_ids``: ``(3, 1, L)``; ``pixel_values``: ``(patches, C * T * P * P)``;
    ``image_grid_thw``: ``(frames, 3)``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    position_ids: torch.Tensor
    next_position: torch.Tensor
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    plan: ResolutionPlan | None = None
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        """Prompt length, tokens."""
        return int(self.input_ids.shape[1])

    def model_kwargs(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> dict:
        """Keyword arguments for ``model(**...)`` and ``model.generate(**...)``."""
        kwargs: dict[str, Any] = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "mm_token_type_ids": self.mm_token_type_ids,
            "position_ids": self.position_ids,
        }
        if self.pixel_values is not None:
            kwargs["pixel_values"] = self.pixel_values.to(dtype=dtype) if dtype else self.pixel_values
            kwargs["image_grid_thw"] = self.image_grid_thw
        return {k: v.to(device) if device is not None else v for k, v in kwargs.items()}


def build_inputs(
    processor: Any,
    messages: Sequence[dict],
    tokens: VisionTokenIds,
    *,
    default_max_tokens: int | None = None,
    add_generation_prompt: bool = True,
    start: int = 0,
) -> ModelInputs:
    """Render ``messages`` with the processor's chat template and build model inputs.

    Args:
        processor: a Qwen-VL processor (``ImageTextProcessor`` or transformers' own).
        messages: the chat; image parts may carry ``max_tokens`` (their tier).
        tokens: placeholder ids of the model (``VisionTokenIds.from_config(model.config)``).
        default_max_tokens: budget of frames without ``max_tokens``; default: the processor's cap.
        add_generation_prompt: end with the assistant prompt.
        start: first position (append after an existing context).
    """
    geometry = VisionGeometry.from_processor(processor)
    parts = image_parts(messages)
    images = [load_image(part["image"]) for part in parts]
    side = geometry.token_side_px
    default = geometry.max_pixels // (side * side) if default_max_tokens is None else default_max_tokens
    budgets = [int(default if part.get("max_tokens") is None else part["max_tokens"]) for part in parts]
    plan = plan_tiers(
        [im.size for im in images],
        budgets,
        geometry,
        tiers=[str(part.get("tier") or f"t{budget}") for part, budget in zip(parts, budgets)],
    )
    resized = [
        im if im.size == f.size else im.resize(f.size, Image.Resampling.BICUBIC)
        for im, f in zip(images, plan.frames)
    ]
    template_messages = _without_payloads(messages)
    text = processor.apply_chat_template(template_messages, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    call: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
    if resized:
        areas = [w * h for w, h in (f.size for f in plan.frames)]
        # Frames are already at their planned size; these bounds make the processor keep them.
        call["images"] = resized
        call["images_kwargs"] = {"size": {"shortest_edge": min(areas), "longest_edge": max(areas)}}
    batch = processor(**call)
    grid = batch.get("image_grid_thw")
    if resized:
        expected = torch.tensor([f.grid_thw for f in plan.frames], dtype=torch.long)
        if grid is None or not torch.equal(grid.long(), expected):
            raise RuntimeError(f"the processor resized frames differently from the plan: {grid} != {expected}")
    input_ids = batch["input_ids"]
    attention_mask = batch.get("attention_mask", torch.ones_like(input_ids))
    mm_types = batch.get("mm_token_type_ids")
    if mm_types is None:
        mm_types = (input_ids == tokens.image_token_id).long()
    positions = rope_index(input_ids, grid, None, attention_mask, tokens=tokens, start=start)
    return ModelInputs(
        input_ids=input_ids,
        attention_mask=attention_mask,
        mm_token_type_ids=mm_types,
        position_ids=positions.position_ids,
        next_position=positions.next_position,
        pixel_values=batch.get("pixel_values"),
        image_grid_thw=grid,
        plan=plan if resized else None,
        text=text,
    )


def _without_payloads(messages: Sequence[dict]) -> list[dict]:
    """A copy of the chat with image payloads replaced by markers (templates only need the type)."""
    out = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [{"type": "image"} if (p.get("type") == "image" or "image" in p) else p for p in content]
        out.append({**message, "content": content})
    return out
