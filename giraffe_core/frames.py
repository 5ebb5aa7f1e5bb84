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

__all__ = ["MAX_IMAGE_PIXELS", "ChatLayout", "ModelInputs", "build_inputs", "encode_images", "image_parts",
           "layout_chat", "load_image"]

#: most pixels (width x height) of an image read from a file or bytes, checked from its header
#: before any pixel is decoded: 64 Mpx (an 8K screen is 33 Mpx); a 22 KB PNG can otherwise
#: declare 12000 x 12000 pixels and take 1.5 GB to decode
MAX_IMAGE_PIXELS = 64 * 1024 * 1024


def _admit(image: Image.Image, source: Any) -> Image.Image:
    """``image`` (opened, not decoded) when its header's size is within :data:`MAX_IMAGE_PIXELS`."""
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise InputError(f"image {str(source)[:80]!r} is {width}x{height} pixels, over the limit of "
                         f"{MAX_IMAGE_PIXELS} pixels; it was not decoded",
                         hint="downscale it first (giraffe_core.frames.MAX_IMAGE_PIXELS is the limit)")
    return image


def load_image(source: Any) -> Image.Image:
    """Open an image given as a PIL image, a path, raw bytes, or an ``(H, W, 3)`` uint8 array, as RGB."""
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, (str, Path)):
            image = _admit(Image.open(source), source)
        elif isinstance(source, (bytes, bytearray)):
            image = _admit(Image.open(io.BytesIO(source)), "<bytes>")
        elif isinstance(source, np.ndarray):
            if source.ndim != 3 or source.shape[2] not in (3, 4) or source.dtype != np.uint8:
                raise InputError(f"an image array must be (H, W, 3|4) uint8, got {source.shape} {source.dtype}")
            image = Image.fromarray(source)
        else:
            raise InputError(f"cannot read an image from a {type(source).__name__}",
                             hint="pass a PIL image, a file path, PNG/JPEG bytes or an (H, W, 3) uint8 array")
        return image.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
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


@dataclass
class ChatLayout:
    """A chat rendered to tokens, positions and a resolution plan, before any pixel is processed.

    Attributes:
        text: the chat template's output, one ``<|image_pad|>`` per frame (not yet expanded).
        input_ids: ``(1, L)`` tokens with every frame's placeholders expanded (what the model reads).
        position_ids: ``(3, 1, L)`` Giraffe 3-D positions; ``next_position``: ``(1,)``.
        plan: the frames' resolution plan (``None`` without frames).
        parts: the chat's image parts, in order; ``images``: each part's image, opened lazily.
        spans: ``[start, end)`` token range of each frame's placeholder run in ``input_ids``.
    """

    text: str
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    next_position: torch.Tensor
    plan: ResolutionPlan | None
    parts: list[dict]
    images: list[Image.Image]
    spans: list[tuple[int, int]]

    @property
    def num_tokens(self) -> int:
        """Prompt length, tokens."""
        return int(self.input_ids.shape[1])


def _open_image(source: Any) -> Image.Image:
    """Open an image lazily (size known, pixels decoded on first use); see :func:`load_image`."""
    if isinstance(source, Image.Image):
        return source
    try:
        if isinstance(source, (str, Path)):
            return _admit(Image.open(source), source)
        if isinstance(source, (bytes, bytearray)):
            return _admit(Image.open(io.BytesIO(source)), "<bytes>")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {str(source)[:80]!r}: {exc}") from exc
    return load_image(source)


def layout_chat(
    processor: Any,
    messages: Sequence[dict],
    tokens: VisionTokenIds,
    *,
    default_max_tokens: int | None = None,
    add_generation_prompt: bool = True,
    start: int = 0,
) -> ChatLayout:
    """Tokens, positions and resolution plan of a chat, without decoding or patchifying any image.

    The placeholders are expanded exactly as the processor expands them (one ``<|image_pad|>``
    per visual token of the planned size), so ``layout.num_tokens`` is the exact prompt length.
    Arguments as in :func:`build_inputs`.
    """
    geometry = VisionGeometry.from_processor(processor)
    parts = image_parts(messages)
    images = [_open_image(part["image"]) for part in parts]
    side = geometry.token_side_px
    default = geometry.max_pixels // (side * side) if default_max_tokens is None else default_max_tokens
    budgets = [int(default if part.get("max_tokens") is None else part["max_tokens"]) for part in parts]
    plan = plan_tiers(
        [im.size for im in images],
        budgets,
        geometry,
        tiers=[str(part.get("tier") or f"t{budget}") for part, budget in zip(parts, budgets)],
    )
    text = processor.apply_chat_template(_without_payloads(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    pad = getattr(processor, "image_token", "<|image_pad|>")
    pieces = text.split(pad)
    if len(pieces) - 1 != len(parts):
        raise InputError(
            f"the chat renders {len(pieces) - 1} image placeholders for {len(parts)} image parts",
            hint=f"do not write {pad} in message text; add images as image parts",
        )
    expanded = pieces[0] + "".join(pad * f.tokens + piece for f, piece in zip(plan.frames, pieces[1:]))
    input_ids = processor.tokenizer(expanded, return_tensors="pt")["input_ids"]
    where = (input_ids[0] == tokens.image_token_id).nonzero().flatten().tolist()
    spans, cursor = [], 0
    for f in plan.frames:
        first, last = where[cursor], where[cursor + f.tokens - 1]
        if last - first + 1 != f.tokens:
            raise InputError(f"frame {f.index}: its placeholders are not one unbroken run of tokens")
        spans.append((first, last + 1))
        cursor += f.tokens
    grid = torch.tensor([f.grid_thw for f in plan.frames], dtype=torch.long).reshape(-1, 3)
    positions = rope_index(input_ids, grid, None, None, tokens=tokens, start=start)
    return ChatLayout(text, input_ids, positions.position_ids, positions.next_position,
                      plan if parts else None, parts, images, spans)


def encode_images(
    processor: Any, layout: ChatLayout, frames: Sequence[int] | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Resize the chosen frames (all by default) to their planned sizes and patchify them.

    Returns:
        ``(pixel_values, image_grid_thw)`` of shapes ``(patches, C * T * P * P)`` and
        ``(len(frames), 3)``, or ``(None, None)`` when no frame is chosen.
    """
    if layout.plan is None:
        return None, None
    chosen = range(len(layout.images)) if frames is None else frames
    plans = [layout.plan.frames[i] for i in chosen]
    if not plans:
        return None, None
    resized = []
    for i, f in zip(chosen, plans):
        image = load_image(layout.images[i])
        resized.append(image if image.size == f.size else image.resize(f.size, Image.Resampling.BICUBIC))
    areas = [w * h for w, h in (f.size for f in plans)]
    # Frames are already at their planned size; these bounds make the image processor keep them.
    out = processor.image_processor(images=resized, size={"shortest_edge": min(areas), "longest_edge": max(areas)},
                                    return_tensors="pt")
    grid = out["image_grid_thw"].long()
    expected = torch.tensor([f.grid_thw for f in plans], dtype=torch.long)
    if not torch.equal(grid, expected):
        raise RuntimeError(f"the image processor resized frames differently from the plan: {grid} != {expected}")
    return out["pixel_values"], grid


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
    layout = layout_chat(processor, messages, tokens, default_max_tokens=default_max_tokens,
                         add_generation_prompt=add_generation_prompt, start=start)
    pixel_values, grid = encode_images(processor, layout)
    input_ids = layout.input_ids
    return ModelInputs(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        mm_token_type_ids=(input_ids == tokens.image_token_id).int(),
        position_ids=layout.position_ids,
        next_position=layout.next_position,
        pixel_values=pixel_values,
        image_grid_thw=grid,
        plan=layout.plan,
        text=layout.text,
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
