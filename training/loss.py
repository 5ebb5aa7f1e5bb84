"""Chunked cross-entropy: the language-model loss without full-vocabulary logits for the whole sequence.

At 128K tokens, Qwen2-VL-7B's logits (152,064 entries a token) would take ~74 GiB in float32.
:func:`chunked_cross_entropy` never builds them:

1. only positions whose next token is a target are kept (``labels[:, 1:] != -100``): for an agent
   trajectory that is the reply alone, a few dozen of 100K tokens;
2. those hidden states go through the output head ``chunk_tokens`` at a time; each chunk's logits
   are upcast to float32, reduced to a summed cross-entropy and dropped;
3. every chunk runs under non-reentrant activation checkpointing, so backward recomputes one
   chunk's logits at a time instead of keeping them all: peak memory is one chunk's logits
   (``chunk_tokens x vocab x 4`` bytes) in both passes.

The result equals PyTorch's cross-entropy on full logits (tested, values and gradients).

:class:`ChunkedLossModel` wraps a Qwen-VL ``...ForConditionalGeneration`` (or a peft model around
one) so that its forward runs the backbone (``model.model``, which returns hidden states) and this
loss, returning the SUM of token losses. Normalising is the trainer's job: it divides by the
number of target tokens of the whole optimizer step (all micro-batches, all processes), so that
gradient accumulation and packing do not change the loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from giraffe_core.errors import ConfigError
from training.data.examples import IGNORE_INDEX

__all__ = ["ChunkedLossModel", "causal_lm", "chunked_cross_entropy"]


def chunked_cross_entropy(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor, *,
                          chunk_tokens: int = 4096) -> torch.Tensor:
    """Summed next-token cross-entropy of ``head(hidden)`` against ``labels``, chunk by chunk.

    Args:
        hidden: ``(B, T, D)`` last hidden states.
        head: the output projection (``lm_head``), ``D -> vocab``.
        labels: ``(B, T)`` token ids, ``-100`` where the token is not a target; position ``t``
            is predicted from ``hidden[:, t - 1]``.
        chunk_tokens: target tokens per chunk.

    Returns:
        A scalar: the SUM of the targets' losses (float32), 0 with a graph when there are none.
    """
    shifted = labels[:, 1:]
    keep = shifted != IGNORE_INDEX
    states = hidden[:, :-1][keep]  # (N, D)
    targets = shifted[keep]  # (N,)
    if targets.numel() == 0:
        return hidden.sum() * 0.0

    def chunk_loss(states_chunk: torch.Tensor, targets_chunk: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(states_chunk).float(), targets_chunk, reduction="sum")

    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, targets.numel(), chunk_tokens):
        piece = slice(start, start + chunk_tokens)
        if torch.is_grad_enabled():
            total = total + checkpoint(chunk_loss, states[piece], targets[piece], use_reentrant=False)
        else:
            total = total + chunk_loss(states[piece], targets[piece])
    return total


def causal_lm(model: nn.Module) -> nn.Module:
    """The ``...ForConditionalGeneration`` inside ``model`` (unwrapping peft), checked for a
    backbone (``.model``) and an output head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(base, "model") or base.get_output_embeddings() is None:
        raise ConfigError(f"{type(base).__name__} is not a Qwen-VL causal language model with an output head",
                          hint="train a Qwen2-VL, Qwen2.5-VL or Qwen3-VL ...ForConditionalGeneration model")
    return base


class ChunkedLossModel(nn.Module):
    """``forward(**batch)`` -> summed token loss, through the chunked cross-entropy.

    Args:
        model: a Qwen-VL ``...ForConditionalGeneration`` or a peft model wrapping one.
        chunk_tokens: target tokens per loss chunk.
    """

    def __init__(self, model: nn.Module, chunk_tokens: int = 4096) -> None:
        super().__init__()
        self.model = model
        self.chunk_tokens = int(chunk_tokens)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                image_grid_thw: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """The summed loss of a batch from :mod:`training.collator` (``(4, 1, T)`` packed positions
        or ``(3, B, L)`` with an attention mask)."""
        base = causal_lm(self.model)
        outputs = base.model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                             pixel_values=pixel_values, image_grid_thw=image_grid_thw, use_cache=False, **kwargs)
        return chunked_cross_entropy(outputs.last_hidden_state, base.get_output_embeddings(), labels,
                                     chunk_tokens=self.chunk_tokens)
