"""Per-sample attention for packed rows: a transformers attention implementation, ``"giraffe_packed"``.

A packed row (:class:`~training.collator.PackedCollator`) holds several samples end to end, told
apart by the text-position row of its position ids, which restarts at 0 at every sample. With
``sdpa``, transformers turns those restarts into a dense ``T x T`` block-diagonal mask, so
attention costs the square of the ROW (16.8M scores a head for a 4,096-token row) whatever the
samples. This implementation, registered through transformers' extension points
(:class:`~transformers.AttentionInterface` for the kernel, ``AttentionMaskInterface`` for the mask
it needs) and selected by the text model's ``attn_implementation``, instead runs one causal SDPA
call per sample: the cost follows the sum of the squares of the samples' lengths.

* no attention mask and no cache (a packed row, or one plain sequence): segments from the
  restarts of ``position_ids``, one ``is_causal`` SDPA call each, outputs concatenated;
* anything else (a padded batch with its mask, cached decoding, chunked prefill): the mask
  transformers' ``sdpa`` would build, and its SDPA call, unchanged.

FlashAttention-2/3 on a GPU already reads the same restarts (varlen ``cu_seqlens``):
:func:`select_for_packing` keeps any ``flash_attention_*`` implementation (and an explicit
``eager``, chosen for debugging) as it is and selects this one only in place of ``sdpa``. Only
the language model is switched: the vision tower splits its images itself and attends
bidirectionally.

Flex attention with a document mask was tried as the other CPU path (``benchmarks/RESULTS.md``,
training section): torch 2.13 has no flex-attention backward on CPU, so it cannot train there;
per-segment SDPA is 5.5x faster than the dense mask on a 4K-token row (forward + backward).
"""

from __future__ import annotations

import logging
from itertools import pairwise
from typing import Any

import torch

__all__ = ["PACKED_ATTENTION", "packed_attention_forward", "register", "segment_lengths", "select_for_packing"]

logger = logging.getLogger(__name__)

PACKED_ATTENTION = "giraffe_packed"
"""The name under which the implementation is registered (``config._attn_implementation``)."""


def segment_lengths(position_ids: torch.Tensor | None, length: int) -> list[list[int]] | None:
    """Per row, the lengths (tokens) of the runs where ``position_ids`` steps by exactly 1.

    ``position_ids`` is ``(B, T)`` (the text-position row of a packed batch); ``None`` means one
    plain sequence per row. Returns ``None`` when it gives no usable boundaries (absent).
    """
    if position_ids is None:
        return None
    ids = position_ids.reshape(-1, position_ids.shape[-1])
    if ids.shape[-1] != length:
        return None
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1] + 1
    rows = []
    for row in starts.cpu():
        edges = [*torch.nonzero(row).flatten().tolist(), length]
        rows.append([b - a for a, b in pairwise(edges)])
    return rows


def _segmented(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               rows: list[list[int]], scaling: float | None, dropout: float, **kwargs: Any) -> torch.Tensor:
    """One causal SDPA call per segment of every row; output ``(B, T, heads, head_dim)``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    out_rows = []
    for b, lengths in enumerate(rows):
        pieces, start = [], 0
        for n in lengths:
            s = slice(start, start + n)
            out, _ = sdpa_attention_forward(module, query[b:b + 1, :, s], key[b:b + 1, :, s], value[b:b + 1, :, s],
                                            None, dropout=dropout, scaling=scaling, is_causal=True)
            pieces.append(out)
            start += n
        out_rows.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1))
    return out_rows[0] if len(out_rows) == 1 else torch.cat(out_rows, dim=0)


def packed_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float | None = None,
                             dropout: float = 0.0, position_ids: torch.Tensor | None = None,
                             **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The attention function (transformers' signature): ``query`` ``(B, heads, T, head_dim)``,
    ``key``/``value`` ``(B, kv_heads, S, head_dim)``; returns ``((B, T, heads, head_dim), None)``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = getattr(module, "is_causal", True)
    same = query.shape[2] == key.shape[2]
    rows = segment_lengths(position_ids, query.shape[2]) if attention_mask is None and same and causal else None
    if rows is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    return _segmented(module, query, key, value, rows, scaling, dropout), None


def _packed_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                 attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor | None:
    """The mask transformers builds for this implementation: none for a row without padding or
    cache (the kernel reads the samples from the positions), else exactly ``sdpa``'s mask."""
    from transformers.masking_utils import sdpa_mask

    no_cache = isinstance(q_offset, int) and q_offset == 0 and kv_offset == 0 and q_length == kv_length
    if attention_mask is None and no_cache:
        return None
    return sdpa_mask(batch_size, q_length, kv_length, q_offset=q_offset, kv_offset=kv_offset,
                     attention_mask=attention_mask, **kwargs)


def register() -> str:
    """Register the kernel and its mask under :data:`PACKED_ATTENTION` (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
    AttentionMaskInterface.register(PACKED_ATTENTION, _packed_mask)
    return PACKED_ATTENTION


def select_for_packing(model: Any) -> str:
    """Give ``model``'s language model per-sample attention in place of ``sdpa``; returns the
    implementation now in use (any other is kept: ``flash_attention_*`` is per sample already)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    text = getattr(config, "text_config", config)
    current = getattr(text, "_attn_implementation", None) or "sdpa"
    if current != "sdpa":
        return current
    register()
    base.set_attn_implementation({"text_config": PACKED_ATTENTION} if text is not config else PACKED_ATTENTION)
    logger.info("packed rows: attention per sample (%s, was %s)", PACKED_ATTENTION, current)
    return PACKED_ATTENTION
