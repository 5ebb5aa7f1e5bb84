"""Hybrid-resolution planning and exact visual-token accounting.

A *plan* gives every frame of a sequence a token budget (its tier) and, from the frame's size,
the exact size it is resized to and the number of visual tokens the model will consume for it.

Two ways to plan:

* :func:`plan_groups`, the GIRAFFE group scheme ``(L, m, s)`` for videos and recordings: frames
  are split into groups of ``L``; the first frame of each group is high resolution (at most ``m``
  tokens), the other ``L - 1`` low resolution (at most ``m / s`` tokens). Default ``(4, 240, 3)``:
  120 tokens per frame on average.
* :func:`plan_tiers`, explicit per-frame budgets for callers that decide themselves (the agent
  memory keeps recent screenshots at full resolution and older ones smaller).

Token arithmetic (Qwen2-VL family): a frame of ``H x W`` pixels is resized by transformers'
``smart_resize`` to ``H' x W'``, both multiples of ``patch * merge`` pixels (28 for Qwen2-VL)
with ``min_pixels <= H' * W' <= max_pixels``; it then costs ``(H'/28) * (W'/28)`` visual tokens,
plus 2 wrapper tokens (``<|vision_start|>``, ``<|vision_end|>``) in the prompt. A budget of
``m`` tokens is the pixel cap ``m * 28 * 28`` (never above the processor's own ``max_pixels``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from giraffe_core.errors import ConfigError, InputError

__all__ = [
    "FramePlan",
    "GroupScheme",
    "ResolutionPlan",
    "VisionGeometry",
    "WRAPPER_TOKENS",
    "frame_plan",
    "plan_groups",
    "plan_tiers",
]

#: prompt tokens around every visual block: <|vision_start|> ... <|vision_end|>
WRAPPER_TOKENS = 2


class VisionGeometry(BaseModel):
    """What resizing and token counting need to know about a model's image processor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patch_size: int = Field(14, ge=1, description="vision patch side, pixels")
    merge_size: int = Field(2, ge=1, description="patches merged per token along each side")
    temporal_patch_size: int = Field(2, ge=1, description="frames per temporal patch")
    min_pixels: int = Field(56 * 56, ge=1, description="smallest resized area, pixels")
    max_pixels: int = Field(28 * 28 * 1280, ge=1, description="largest resized area, pixels")

    @model_validator(mode="after")
    def _bounds(self) -> VisionGeometry:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        return self

    @property
    def token_side_px(self) -> int:
        """Side of the square of pixels one visual token covers (28 for Qwen2-VL)."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_processor(cls, processor: Any) -> VisionGeometry:
        """Read the geometry from a transformers processor or image processor."""
        ip = getattr(processor, "image_processor", processor)
        size = getattr(ip, "size", None) or {}
        get = size.get if isinstance(size, dict) else lambda k, d=None: getattr(size, k, d)
        return cls(
            patch_size=int(ip.patch_size),
            merge_size=int(ip.merge_size),
            temporal_patch_size=int(getattr(ip, "temporal_patch_size", 2)),
            min_pixels=int(get("shortest_edge", None) or getattr(ip, "min_pixels", 56 * 56)),
            max_pixels=int(get("longest_edge", None) or getattr(ip, "max_pixels", 28 * 28 * 1280)),
        )


@dataclass(frozen=True)
class FramePlan:
    """How one frame enters the model.

    Attributes:
        index: position of the frame in the planned sequence.
        tier: name of the tier ("high", "low", or the caller's).
        max_tokens: the tier's budget, visual tokens.
        source_size: (width, height) of the frame as given, pixels.
        size: (width, height) after resizing, pixels (multiples of ``patch * merge``).
        grid_thw: (t, h, w) patch grid the vision tower sees (t = 1: one frame).
        tokens: visual tokens the language model consumes (``h * w / merge**2``), wrappers excluded.
    """

    index: int
    tier: str
    max_tokens: int
    source_size: tuple[int, int]
    size: tuple[int, int]
    grid_thw: tuple[int, int, int]
    tokens: int


@dataclass(frozen=True)
class ResolutionPlan:
    """A plan for a sequence of frames; see :func:`plan_groups` and :func:`plan_tiers`."""

    frames: tuple[FramePlan, ...]
    geometry: VisionGeometry

    @property
    def visual_tokens(self) -> int:
        """Visual tokens of all frames, wrappers excluded."""
        return sum(f.tokens for f in self.frames)

    @property
    def prompt_tokens(self) -> int:
        """Visual tokens plus the two wrapper tokens of every frame."""
        return self.visual_tokens + WRAPPER_TOKENS * len(self.frames)

    def tokens_by_tier(self) -> dict[str, int]:
        """Visual tokens per tier name."""
        out: dict[str, int] = {}
        for f in self.frames:
            out[f.tier] = out.get(f.tier, 0) + f.tokens
        return out

    def summary(self) -> list[dict[str, Any]]:
        """One JSON-ready row per frame, for logs and reports."""
        return [
            {"index": f.index, "tier": f.tier, "source_size": list(f.source_size), "size": list(f.size),
             "grid_thw": list(f.grid_thw), "tokens": f.tokens}
            for f in self.frames
        ]


class GroupScheme(BaseModel):
    """The paper's hybrid-resolution scheme ``(L, m, s)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_size: int = Field(4, ge=1, description="L: frames per group; the first is high resolution")
    high_tokens: int = Field(240, ge=1, description="m: token budget of a high-resolution frame")
    ratio: float = Field(3.0, ge=1.0, description="s: a low-resolution frame gets m / s tokens")

    @property
    def low_tokens(self) -> int:
        """Token budget of a low-resolution frame, ``floor(m / s)`` (at least 1)."""
        return max(1, int(self.high_tokens // self.ratio))


def _check_size(size: Sequence[int], index: int) -> tuple[int, int]:
    if len(size) != 2 or any(int(v) < 1 for v in size):
        raise InputError(f"frame {index}: size must be (width, height) in pixels, both >= 1, got {tuple(size)}")
    return int(size[0]), int(size[1])


def frame_plan(
    size: Sequence[int], max_tokens: int, geometry: VisionGeometry, *, index: int = 0, tier: str = "custom"
) -> FramePlan:
    """Plan one frame of ``size`` = (width, height) pixels under a budget of ``max_tokens``.

    The resized size comes from transformers' ``smart_resize`` with the pixel cap
    ``min(max_tokens * 28**2, geometry.max_pixels)``, exactly as the processor will resize it.
    Budgets below the processor's ``min_pixels`` are honoured (the frame is resized below it).
    When ``smart_resize`` rounds a small frame up past the cap, the longer side is shortened by
    28 pixels until it fits, so a frame exceeds its budget only when both sides are at their
    minimum of 28 pixels (a budget of 0 tokens is impossible).
    """
    width, height = _check_size(size, index)
    if max_tokens < 1:
        raise ConfigError(f"frame {index}: max_tokens must be >= 1, got {max_tokens}")
    side = geometry.token_side_px
    cap = min(max_tokens * side * side, geometry.max_pixels)
    try:
        new_h, new_w = smart_resize(height, width, factor=side, min_pixels=min(geometry.min_pixels, cap),
                                    max_pixels=cap)
    except ValueError as exc:  # e.g. an aspect ratio above 200
        raise InputError(f"frame {index} of {width}x{height} px cannot be resized for the model: {exc}") from exc
    while new_h * new_w > cap and max(new_h, new_w) > side:  # smart_resize rounds up small frames
        if new_h >= new_w:
            new_h -= side
        else:
            new_w -= side
    grid = (1, new_h // geometry.patch_size, new_w // geometry.patch_size)
    tokens = (new_h // side) * (new_w // side)
    return FramePlan(index, tier, max_tokens, (width, height), (new_w, new_h), grid, tokens)


def plan_groups(
    sizes: Sequence[Sequence[int]], geometry: VisionGeometry, scheme: GroupScheme | None = None
) -> ResolutionPlan:
    """Plan a video or recording with the group scheme: frame ``i`` is high resolution when
    ``i % L == 0``, low resolution otherwise.

    Args:
        sizes: (width, height) of every frame, pixels.
        geometry: the model's image geometry (:meth:`VisionGeometry.from_processor`).
        scheme: ``(L, m, s)``; default ``(4, 240, 3)``.
    """
    scheme = scheme or GroupScheme()
    frames = []
    for i, size in enumerate(sizes):
        high = i % scheme.group_size == 0
        budget = scheme.high_tokens if high else scheme.low_tokens
        frames.append(frame_plan(size, budget, geometry, index=i, tier="high" if high else "low"))
    return ResolutionPlan(tuple(frames), geometry)


def plan_tiers(
    sizes: Sequence[Sequence[int]],
    max_tokens: Sequence[int],
    geometry: VisionGeometry,
    tiers: Sequence[str] | None = None,
) -> ResolutionPlan:
    """Plan frames with an explicit budget (and optional tier name) for each.

    Args:
        sizes: (width, height) of every frame, pixels.
        max_tokens: visual-token budget of every frame.
        geometry: the model's image geometry.
        tiers: a name per frame for reports (default ``"t<budget>"``).
    """
    if len(max_tokens) != len(sizes) or (tiers is not None and len(tiers) != len(sizes)):
        raise InputError(
            f"plan_tiers needs one budget (and tier name) per frame: {len(sizes)} frames, "
            f"{len(max_tokens)} budgets, {len(tiers) if tiers is not None else 'no'} tier names"
        )
    names = list(tiers) if tiers is not None else [f"t{int(m)}" for m in max_tokens]
    frames = tuple(
        frame_plan(size, int(budget), geometry, index=i, tier=name)
        for i, (size, budget, name) in enumerate(zip(sizes, max_tokens, names))
    )
    return ResolutionPlan(frames, geometry)
