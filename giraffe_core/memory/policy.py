"""Which tier each frame of the timeline gets: the memory configuration and the tier policies.

Two policies:

* ``"blocks"`` (default), cache-aligned. The newest ``full_frames`` frames are at full resolution,
  the ``low_frames`` before them at low resolution, the ``text_frames`` before those as text
  captions, and older frames are evicted (kept on disk). The boundaries between tiers do not
  move every step: the full/low boundary moves in blocks of ``block_frames`` frames, the low/text
  boundary in blocks four times as large and the text/evicted boundary in blocks sixteen times
  as large. Between two moves the rendered context only grows at its end, so a KV cache of the
  previous step stays valid for everything but the new tail; deeper (earlier) changes, which
  cost the most to re-prefill, are the rarest.
* ``"recent"``: the baseline other agent SDKs use. The last ``full_frames`` frames at full
  resolution, every older frame as a text caption; the tiers move every step.

Both keep the context within ``budget_tokens``: when the policy's tiers do not fit, the timeline
demotes the oldest frames further (see :class:`~giraffe_core.memory.TimelineMemory`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from giraffe_core.memory.items import Tier

__all__ = ["MemoryConfig", "policy_tiers"]


class MemoryConfig(BaseModel):
    """Budget, tiers and policy of a :class:`~giraffe_core.memory.TimelineMemory`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget_tokens: int = Field(131072, ge=256, description="most prompt tokens a rendered context may hold")
    reserve_tokens: int = Field(1024, ge=0, description="tokens kept free below the budget for the reply")
    policy: Literal["blocks", "recent"] = "blocks"
    full_max_tokens: int | None = Field(
        None, ge=1, description="visual tokens of a full-resolution frame (None: the processor's cap)")
    low_max_tokens: int = Field(160, ge=1, description="visual tokens of a low-resolution frame")
    full_frames: int = Field(8, ge=1, description="newest frames kept at full resolution (at least)")
    low_frames: int = Field(64, ge=0, description="frames before those at low resolution (at least)")
    text_frames: int = Field(512, ge=0, description="frames before those kept as text captions")
    block_frames: int = Field(8, ge=1, description="the full/low boundary moves in blocks of this many frames")

    @model_validator(mode="after")
    def _reserve_fits(self) -> MemoryConfig:
        if self.reserve_tokens >= self.budget_tokens:
            raise ValueError(f"reserve_tokens ({self.reserve_tokens}) must be below budget_tokens "
                             f"({self.budget_tokens}), or no context fits")
        return self


def _align_down(value: int, quantum: int) -> int:
    return max(0, (value // quantum) * quantum)


def policy_tiers(n_frames: int, config: MemoryConfig) -> list[Tier]:
    """Tier of each of ``n_frames`` frames (oldest first) under ``config``'s policy, before the
    budget is applied.

    With the ``"blocks"`` policy and ``q = block_frames``: the full tier starts at
    ``align(n - full_frames, q)``, the low tier at ``align(full_start - low_frames, 4q)`` and the
    text tier at ``align(low_start - text_frames, 16q)``, where ``align`` rounds down to a
    multiple (never below 0).
    """
    if n_frames <= 0:
        return []
    if config.policy == "recent":
        full_start = max(0, n_frames - config.full_frames)
        return ["text"] * full_start + ["full"] * (n_frames - full_start)
    q = config.block_frames
    full_start = _align_down(n_frames - config.full_frames, q) if n_frames > config.full_frames else 0
    low_start = _align_down(full_start - config.low_frames, 4 * q) if full_start > config.low_frames else 0
    text_start = _align_down(low_start - config.text_frames, 16 * q) if low_start > config.text_frames else 0
    tiers: list[Tier] = []
    for i in range(n_frames):
        if i >= full_start:
            tiers.append("full")
        elif i >= low_start:
            tiers.append("low")
        elif i >= text_start:
            tiers.append("text")
        else:
            tiers.append("evicted")
    return tiers
