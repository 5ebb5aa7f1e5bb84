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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    if grid.numel() == 0:  # [] or an empty tensor: no blocks of this kind
        return torch.zeros(0, 3, dtype=torch.long, device=device)
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
    if sample_ids is not None and sample_ids.shape != input_ids.shape:
        raise InputError(f"sample_ids shape {tuple(sample_ids.shape)} != input_ids shape {tuple(input_ids.shape)}")
    start_t = torch.as_tensor(start, dtype=torch.long, device=device)
    if start_t.ndim > 1 or (start_t.ndim == 1 and start_t.shape[0] not in (1, batch)):
        raise InputError(f"start must be an int or a ({batch},) tensor, got shape {tuple(start_t.shape)}")
    start_t = start_t.expand(batch)

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

    n_blocks = len(grids)
    n_flat = batch * length
    flat_ids = input_ids.reshape(-1)
    flat_valid = valid.reshape(-1)
    masked = attention_mask is not None

    # Every token points into a table of blocks: rows 0..n_blocks-1 are the visual blocks, row
    # n_blocks stands for a text token (a 1-token "block" of extent 1 and zero offsets) and row
    # n_blocks + 1 for padding (extent 0). ``local`` is the token's index inside its block.
    text_row, pad_row = n_blocks, n_blocks + 1
    if masked:
        block = torch.where(flat_valid, text_row, pad_row)
    else:
        block = torch.full((n_flat,), text_row, dtype=torch.long, device=device)
    local = torch.zeros(n_flat, dtype=torch.long, device=device)
    # flat index of each block's first and last token
    first_at = torch.zeros(n_blocks, dtype=torch.long, device=device)
    last_at = torch.zeros(n_blocks, dtype=torch.long, device=device)
    for token_id, first_block, count, kind in (
        (tokens.image_token_id, 0, len(images), "image"),
        (tokens.video_token_id, len(images), len(videos), "video"),
    ):
        is_tok = flat_ids == token_id
        if masked:
            is_tok &= flat_valid
        sizes = block_tokens[first_block:first_block + count]
        ends = sizes.cumsum(0)
        expected = int(ends[-1]) if count else 0
        if count == 0 or n_flat == 0:
            seen = None
            n_tok = int(is_tok.sum())
        else:
            seen = is_tok.cumsum(0)  # placeholders of this kind up to and including each token
            n_tok = int(seen[-1])
        if n_tok != expected:
            raise InputError(
                f"the sequence has {n_tok} {kind} placeholder tokens but the {count} {kind} grid(s) "
                f"need {expected}",
                hint="expand placeholders with the processor (one per merged patch) and pass the grids it returned",
            )
        if seen is None:
            continue
        rank = seen - 1
        which = torch.searchsorted(ends, rank, right=True).clamp_(max=count - 1)
        block = torch.where(is_tok, which + first_block, block)
        local = torch.where(is_tok, rank - (ends - sizes)[which], local)
        # first / last token of each block: where the running count reaches its first / last rank
        first_at[first_block:first_block + count] = torch.searchsorted(seen, ends - sizes + 1)
        last_at[first_block:first_block + count] = torch.searchsorted(seen, ends)

    if n_blocks:
        if (first_at // length != last_at // length).any():
            raise InputError("a visual block is split across batch rows; every image or video must lie in one row")
        # A block's placeholders must be consecutive among the row's real tokens: text (or another
        # block) in between means the placeholders do not match the grids, even if the totals do.
        if masked:
            valid_seen = flat_valid.cumsum(0)
            span = valid_seen[last_at] - valid_seen[first_at] + 1
        else:
            span = last_at - first_at + 1
        if (span != block_tokens).any():
            bad = int((span != block_tokens).nonzero()[0])
            raise InputError(
                f"the placeholders of visual block {bad} (images first, then videos) are not consecutive: "
                f"its {int(block_tokens[bad])} tokens are spread over {int(span[bad])} positions",
                hint="each image or video must be one unbroken run of placeholders, one per merged patch",
            )

    # How far each token moves the running position: text 1, padding 0, a block's last token its
    # extent, its other tokens 0.
    advance = (block == text_row).long()
    advance[last_at] = block_extent
    advance = advance.view(batch, length)
    inclusive = advance.cumsum(1)
    base = inclusive - advance
    if sample_ids is not None:
        new_sample = torch.ones_like(valid)
        new_sample[:, 1:] = sample_ids[:, 1:] != sample_ids[:, :-1]
        idx = torch.arange(length, device=device).expand(batch, length)
        sample_start = torch.where(new_sample, idx, 0).cummax(1).values
        if n_blocks and (sample_start.reshape(-1)[last_at] > first_at % length).any():
            raise InputError("a visual block is split across packed samples (sample_ids changes inside it)")
        offset = base.gather(1, sample_start)
        base = base - offset
        inclusive = inclusive - offset
    base = (base + start_t[:, None]).reshape(-1)

    # Offsets inside the block: local = (ti * H + hi) * W + wi. Text and padding tokens have
    # local = 0 and table rows with H = W = 1, so all three of their offsets come out 0.
    one = torch.ones(2, dtype=torch.long, device=device)
    width = torch.cat([grids[:, 2], one])[block]
    height = torch.cat([grids[:, 1], one])[block]
    row = local // width
    position_ids = torch.empty((3, n_flat), dtype=torch.long, device=device)
    torch.add(base, local - row * width, out=position_ids[2])
    t_idx = row // height
    torch.add(base, row - t_idx * height, out=position_ids[1])
    if n_blocks and bool((block_step[len(images):] != 1).any()):
        step = torch.cat([block_step, one.float()])[block]
        t_idx = (t_idx.float() * step).long()
    torch.add(base, t_idx, out=position_ids[0])
    position_ids = position_ids.view(3, batch, length)
    if masked:
        position_ids.masked_fill_(~valid, 0)

    # next position: the running position after the row's last sample (start if it is empty).
    if sample_ids is None:
        next_position = (inclusive[:, -1] if length else 0) + start_t
    else:
        # Only the row's last sample counts: the run of tokens from the last id change on (an id that
        # also appears earlier in the row, in another run, is a different sample).
        end = torch.where(valid, inclusive + start_t[:, None], start_t[:, None])
        last_valid = torch.where(valid, idx, -1).max(1).values.clamp(min=0)
        last_sample_start = sample_start.gather(1, last_valid[:, None])
        end = torch.where(idx >= last_sample_start, end, start_t[:, None])
        next_position = end.max(1).values if length else start_t.clone()
    return PositionIds(position_ids=position_ids, next_position=next_position)
