"""3-D position ids (t, h, w) for Qwen-VL token sequences, under one explicit rule.

The rule
--------
Positions are assigned left to right, starting at ``start`` (0 for a fresh context):

* a text token gets ``(p, p, p)`` and the running position ``p`` advances by 1;
* a visual block (one image, one video, or one frame of a recording) whose language-model grid is
  ``(T, H, W)`` (patch grid with H and W divided by the spatial merge size) starting at ``p`` gives
  its token ``(ti, hi, wi)`` the position ``(p + floor(ti * step), p + hi, p + wi)``, where
  ``step`` is the temporal spacing of the block (1 for images and Qwen2-VL videos;
  ``tokens_per_second * seconds_per_grid_t`` for Qwen2.5-VL videos);
* **after a visual block the next position is the maximum over that block's t, h and w indices
  plus one**: ``p + max(floor((T - 1) * step), H - 1, W - 1) + 1``.

For text and images this is exactly what transformers' ``get_rope_index`` computes (an image has
T = 1, so the maximum is over H and W). For videos it is the rule of Qwen's training code, vLLM and
transformers 4.x. transformers 5.24 instead advances by ``max(H, W)`` after a video, ignoring the
temporal extent, so text after a long video reuses positions the video's later frames already
occupy on the t axis. We keep the reference rule on purpose: it is what checkpoints were trained
with and what serving engines compute, and it never lets two tokens share a t position by accident.

Frames of mixed resolution are separate visual blocks (each with its own grid), so a sequence of
high- and low-resolution frames needs nothing special here; see :mod:`giraffe_core.frames`.

Also covered: batches with left or right padding (``attention_mask``; padding gets position 0, as
in transformers), packed sequences (``sample_ids``; positions restart at 0, or ``start``, at every
new sample) and appending a chunk after an existing context (``start`` = the previous call's
``next_position``), which is what a KV-cache session needs.

Everything is vectorised: no Python loop over tokens or visual blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from giraffe_core.errors import InputError

__all__ = ["PositionIds", "VisionTokenIds", "rope_index"]


@dataclass(frozen=True)
class VisionTokenIds:
    """The token ids and merge size that position computation needs from a model config."""

    image_token_id: int
    video_token_id: int
    spatial_merge_size: int = 2
    #: Qwen2.5-VL: temporal position units per second of video (``vision_config.tokens_per_second``)
    tokens_per_second: float | None = None

    @classmethod
    def from_config(cls, config: Any) -> VisionTokenIds:
        """Read the ids from a composite Qwen-VL config (``Qwen2VLConfig`` and friends)."""
        vision = getattr(config, "vision_config", None)
        if vision is None or not hasattr(config, "image_token_id"):
            raise InputError(
                f"{type(config).__name__} is not a vision-language config (no vision_config/image_token_id)",
                hint="pass the model's full config (model.config), not its text config",
            )
        return cls(
            image_token_id=int(config.image_token_id),
            video_token_id=int(config.video_token_id),
            spatial_merge_size=int(getattr(vision, "spatial_merge_size", 2)),
            tokens_per_second=getattr(vision, "tokens_per_second", None),
        )


@dataclass(frozen=True)
class PositionIds:
    """Result of :func:`rope_index`.

    Attributes:
        position_ids: ``(3, B, L)`` long tensor of (t, h, w) positions.
        next_position: ``(B,)`` long tensor, the position the next appended token would take
            (max over the row's last sample of its t, h, w positions, plus one; ``start`` if empty).
    """

    position_ids: torch.Tensor
    next_position: torch.Tensor


def _as_grid(grid: torch.Tensor | Sequence[Sequence[int]] | None, device: torch.device) -> torch.Tensor:
    if grid is None:
        return torch.zeros(0, 3, dtype=torch.long, device=device)
    grid = torch.as_tensor(grid, dtype=torch.long, device=device)
    if grid.ndim != 2 or grid.shape[1] != 3 or (grid.numel() and grid.min() < 1):
        raise InputError(f"a grid_thw must be an (N, 3) tensor of positive sizes, got shape {tuple(grid.shape)}")
    return grid


def rope_index(
    input_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | Sequence[Sequence[int]] | None = None,
    video_grid_thw: torch.Tensor | Sequence[Sequence[int]] | None = None,
    attention_mask: torch.Tensor | None = None,
    *,
    tokens: VisionTokenIds,
    video_time_steps: torch.Tensor | Sequence[float] | None = None,
    sample_ids: torch.Tensor | None = None,
    start: torch.Tensor | int = 0,
) -> PositionIds:
    """3-D position ids for a batch of token sequences (see the module docstring for the rule).

    Args:
        input_ids: ``(B, L)`` token ids, image and video placeholders already expanded (one
            placeholder per merged visual token, as the processor emits them).
        image_grid_thw: ``(N_images, 3)`` patch grids of the images, in order of appearance
            (row-major over the batch).
        video_grid_thw: ``(N_videos, 3)`` patch grids of the videos, likewise.
        attention_mask: ``(B, L)``, 1 for real tokens, 0 for padding (left or right).
        tokens: placeholder ids and spatial merge size, e.g. ``VisionTokenIds.from_config(cfg)``.
        video_time_steps: per video, the temporal position step between consecutive temporal
            patches (Qwen2.5-VL: ``tokens_per_second * second_per_grid_t``); default 1.
        sample_ids: ``(B, L)`` ids of packed samples; positions restart wherever the id changes.
        start: first position of this chunk, an int or a ``(B,)`` tensor (the previous call's
            ``next_position`` when appending after an existing context).

    Returns:
        :class:`PositionIds` with ``position_ids`` of shape ``(3, B, L)``.

    Raises:
        InputError: if the placeholders do not match the grids.
    """
    if input_ids.ndim != 2:
        raise InputError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    device = input_ids.device
    batch, length = input_ids.shape
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if valid.shape != input_ids.shape:
        raise InputError(f"attention_mask shape {tuple(valid.shape)} != input_ids shape {tuple(input_ids.shape)}")
    start_t = torch.as_tensor(start, dtype=torch.long, device=device).expand(batch)

    merge = tokens.spatial_merge_size
    images = _as_grid(image_grid_thw, device)
    videos = _as_grid(video_grid_thw, device)
    steps = torch.ones(len(videos), dtype=torch.float32, device=device)
    if video_time_steps is not None:
        steps = torch.as_tensor(video_time_steps, dtype=torch.float32, device=device).reshape(-1)
        if steps.numel() != len(videos):
            raise InputError(f"{steps.numel()} video_time_steps for {len(videos)} videos")
    # One row per visual block: (T, H, W) in language-model units, temporal step, token count.
    grids = torch.cat([images, videos]) // torch.tensor([1, merge, merge], device=device)
    if ((torch.cat([images, videos])[:, 1:] % merge) != 0).any():
        raise InputError(f"grid heights and widths must be multiples of the spatial merge size {merge}")
    block_step = torch.cat([torch.ones(len(images), device=device), steps])
    block_tokens = grids.prod(-1)
    t_extent = ((grids[:, 0] - 1).float() * block_step).long()
    block_extent = torch.maximum(t_extent, torch.maximum(grids[:, 1], grids[:, 2]) - 1) + 1

    # Map every placeholder token to (block, index inside the block).
    block = torch.full((batch, length), -1, dtype=torch.long, device=device)
    local = torch.zeros((batch, length), dtype=torch.long, device=device)
    for token_id, first_block, count, kind in (
        (tokens.image_token_id, 0, len(images), "image"),
        (tokens.video_token_id, len(images), len(videos), "video"),
    ):
        is_tok = (input_ids == token_id) & valid
        n_tok = int(is_tok.sum())
        ends = block_tokens[first_block:first_block + count].cumsum(0)
        expected = int(ends[-1]) if count else 0
        if n_tok != expected:
            raise InputError(
                f"the sequence has {n_tok} {kind} placeholder tokens but the {count} {kind} grid(s) "
                f"need {expected}",
                hint="expand placeholders with the processor (one per merged patch) and pass the grids it returned",
            )
        if n_tok == 0:
            continue
        rank = is_tok.flatten().cumsum(0).view(batch, length) - 1
        which = torch.searchsorted(ends, rank[is_tok], right=True)
        block[is_tok] = which + first_block
        local[is_tok] = rank[is_tok] - (ends[which] - block_tokens[first_block + which])

    is_vis = block >= 0
    vis_block = block.clamp(min=0)
    g = grids[vis_block]  # (B, L, 3)
    last_of_block = is_vis & (local == block_tokens[vis_block] - 1)
    first_of_block = is_vis & (local == 0)
    if len(grids):
        rows = torch.arange(batch, device=device)[:, None].expand(batch, length)
        first_row = torch.zeros(len(grids), dtype=torch.long, device=device)
        last_row = torch.zeros(len(grids), dtype=torch.long, device=device)
        first_row[block[first_of_block]] = rows[first_of_block]
        last_row[block[last_of_block]] = rows[last_of_block]
        if (first_row != last_row).any():
            raise InputError("a visual block is split across batch rows; every image or video must lie in one row")

    # How far each token moves the running position: text 1, a block's last token its extent.
    advance = torch.where(valid & ~is_vis, 1, 0)
    advance = torch.where(last_of_block, block_extent[vis_block], advance)
    inclusive = advance.cumsum(1)
    base = inclusive - advance
    if sample_ids is not None:
        if sample_ids.shape != input_ids.shape:
            raise InputError(f"sample_ids shape {tuple(sample_ids.shape)} != input_ids shape {tuple(input_ids.shape)}")
        new_sample = torch.ones_like(valid)
        new_sample[:, 1:] = sample_ids[:, 1:] != sample_ids[:, :-1]
        idx = torch.arange(length, device=device).expand(batch, length)
        sample_start = torch.where(new_sample, idx, 0).cummax(1).values
        offset = base.gather(1, sample_start)
        base = base - offset
        inclusive = inclusive - offset
    base = base + start_t[:, None]

    hw = g[..., 1] * g[..., 2]
    t_idx = ((local // hw.clamp(min=1)).float() * block_step[vis_block]).long()
    h_idx = (local // g[..., 2].clamp(min=1)) % g[..., 1].clamp(min=1)
    w_idx = local % g[..., 2].clamp(min=1)
    offsets = torch.stack([t_idx, h_idx, w_idx]) * is_vis
    position_ids = (base.unsqueeze(0) + offsets) * valid

    # next position: largest "end" (position after the token) over the row's last sample.
    end = torch.where(valid, inclusive + start_t[:, None], start_t[:, None])
    if sample_ids is not None:
        idx = torch.arange(length, device=device).expand(batch, length)
        last_valid = torch.where(valid, idx, -1).max(1).values.clamp(min=0)
        last_sample = sample_ids.gather(1, last_valid[:, None])
        end = torch.where(sample_ids == last_sample, end, start_t[:, None])
    next_position = end.max(1).values if length else start_t.clone()
    return PositionIds(position_ids=position_ids, next_position=next_position)
