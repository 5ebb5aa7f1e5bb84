"""Collation: encoded samples -> model batches, packed (padding-free) or padded.

**Packed** (:class:`PackedCollator`): the samples of a micro-batch are laid end to end in ONE row
``(1, T)``, never cut (a sample, and so every image, is whole in its row). What keeps them apart
is transformers' own packed-sequence path for Qwen-VL: the text model accepts position ids of
shape ``(4, B, T)`` whose first row is the text position of each token and whose other three are
the M-RoPE (t, h, w) positions. With no attention mask and no cache, transformers' masking
utilities (``find_packed_sequence_indices``) start a new sequence wherever that first row does
not step by exactly 1, and build a block-diagonal causal mask (SDPA and eager), or pass the
sequence boundaries to FlashAttention-2's varlen kernel. So:

* row 0: the token's index inside its sample (0, 1, 2, ... restarting at every sample), which is
  what both the mask builder and FlashAttention-2 read as sequence boundaries;
* rows 1-3: :func:`giraffe_core.positions.rope_index` with ``sample_ids``, so every sample's 3-D
  positions start at 0 as if it were alone;
* labels: the samples' labels, with every sample's first token ignored (it has no predecessor
  in its own sample);
* ``pixel_values`` / ``image_grid_thw``: the samples' images concatenated in order (the vision
  tower encodes each image separately, whatever the batch).

The packed loss therefore equals the loss of each sample run alone (tested within 1e-5 on the tiny
preset). Padding up to ``pad_to_multiple_of`` is one more "sample" of pad tokens with ignored labels.

**Padded** (:class:`PaddedCollator`): ``(B, L_max)`` right-padded rows with an attention mask
and positions from ``rope_index`` with that mask: the usual batching, and the baseline of
``benchmarks/training.py``.

:func:`pack_rows` plans which samples share a row: first fit over the last ``open_rows`` rows,
in the given order (so the order of the data changes little), each row at most ``capacity``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from giraffe_core.errors import InputError
from giraffe_core.positions import VisionTokenIds, rope_index
from training.data.examples import IGNORE_INDEX, EncodedSample

__all__ = ["PackedCollator", "PaddedCollator", "pack_rows"]


def pack_rows(lengths: Sequence[int], capacity: int, *, open_rows: int = 8) -> list[list[int]]:
    """Group sample indices into rows of at most ``capacity`` tokens (first fit, bounded look-back).

    Raises:
        InputError: a sample is longer than ``capacity`` (it would have to be cut).
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for index, length in enumerate(lengths):
        if length > capacity:
            raise InputError(f"sample {index} has {length} tokens, more than a row of {capacity}",
                             hint="samples are never cut: raise the stage length or drop the sample")
        start = max(0, len(rows) - open_rows)
        for r in range(start, len(rows)):
            if room[r] >= length:
                rows[r].append(index)
                room[r] -= length
                break
        else:
            rows.append([index])
            room.append(capacity - length)
    return rows


def _images(samples: Sequence[EncodedSample]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    with_images = [s for s in samples if s.image_grid_thw is not None and len(s.image_grid_thw)]
    if not with_images:
        return None, None
    if any(s.pixel_values is None for s in with_images):
        raise InputError("a sample with images has no pixel values; encode it with pixels=True")
    return torch.cat([s.pixel_values for s in with_images]), torch.cat([s.image_grid_thw for s in with_images])


class PackedCollator:
    """Packs samples into one row per batch (see the module docstring).

    Args:
        tokens: the model's placeholder ids.
        pad_token_id: token used for padding.
        max_length: refuse rows longer than this (the stage length), tokens.
        pad_to_multiple_of: pad the row to a multiple of this many tokens (``None``: no padding).
    """

    def __init__(self, tokens: VisionTokenIds, pad_token_id: int, *, max_length: int | None = None,
                 pad_to_multiple_of: int | None = None) -> None:
        self.tokens = tokens
        self.pad_token_id = int(pad_token_id)
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, samples: Sequence[EncodedSample]) -> dict[str, torch.Tensor]:
        """A batch: ``input_ids``, ``labels``, ``mm_token_type_ids`` ``(1, T)``; ``position_ids``
        ``(4, 1, T)``; ``pixel_values`` and ``image_grid_thw`` when there are images."""
        if not samples:
            raise InputError("cannot collate an empty batch")
        total = sum(s.num_tokens for s in samples)
        if self.max_length is not None and total > self.max_length:
            raise InputError(f"{len(samples)} samples hold {total} tokens, more than a row of {self.max_length}")
        ids, labels, sample_ids, text = [], [], [], []
        for k, sample in enumerate(samples):
            ids.append(sample.input_ids)
            label = sample.labels.clone()
            label[0] = IGNORE_INDEX
            labels.append(label)
            sample_ids.append(torch.full_like(sample.input_ids, k))
            text.append(torch.arange(sample.num_tokens))
        pad = 0 if not self.pad_to_multiple_of else -total % self.pad_to_multiple_of
        if pad:
            ids.append(torch.full((pad,), self.pad_token_id, dtype=torch.long))
            labels.append(torch.full((pad,), IGNORE_INDEX, dtype=torch.long))
            sample_ids.append(torch.full((pad,), len(samples), dtype=torch.long))
            text.append(torch.arange(pad))
        input_ids = torch.cat(ids)[None]
        pixel_values, grid = _images(samples)
        positions = rope_index(input_ids, grid, tokens=self.tokens, sample_ids=torch.cat(sample_ids)[None]).position_ids
        batch = {
            "input_ids": input_ids,
            "labels": torch.cat(labels)[None],
            "position_ids": torch.cat([torch.cat(text)[None, None], positions]),
            "mm_token_type_ids": (input_ids == self.tokens.image_token_id).int(),
        }
        if pixel_values is not None:
            batch["pixel_values"], batch["image_grid_thw"] = pixel_values, grid
        return batch


class PaddedCollator:
    """Right-pads samples to the longest of the batch, with an attention mask.

    Args:
        tokens: the model's placeholder ids.
        pad_token_id: token used for padding.
    """

    def __init__(self, tokens: VisionTokenIds, pad_token_id: int) -> None:
        self.tokens = tokens
        self.pad_token_id = int(pad_token_id)

    def __call__(self, samples: Sequence[EncodedSample]) -> dict[str, torch.Tensor]:
        """A batch: ``input_ids``, ``labels``, ``attention_mask``, ``mm_token_type_ids`` ``(B, L)``;
        ``position_ids`` ``(3, B, L)``; ``pixel_values`` and ``image_grid_thw`` when there are images."""
        if not samples:
            raise InputError("cannot collate an empty batch")
        length = max(s.num_tokens for s in samples)
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, sample in enumerate(samples):
            input_ids[row, :sample.num_tokens] = sample.input_ids
            labels[row, :sample.num_tokens] = sample.labels
            mask[row, :sample.num_tokens] = 1
        pixel_values, grid = _images(samples)
        positions = rope_index(input_ids, grid, tokens=self.tokens, attention_mask=mask).position_ids
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": mask, "position_ids": positions,
                 "mm_token_type_ids": (input_ids == self.tokens.image_token_id).int()}
        if pixel_values is not None:
            batch["pixel_values"], batch["image_grid_thw"] = pixel_values, grid
        return batch
