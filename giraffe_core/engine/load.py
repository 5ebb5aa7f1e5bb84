"""``load``: a ready :class:`~giraffe_core.engine.Engine` from "tiny", a directory or a hub id.

* ``"tiny"``: the offline preset (:mod:`giraffe_core.engine.tiny`), random weights from ``seed``.
* a local directory written by ``save_pretrained`` (``Engine.save_pretrained`` writes one).
* a hub id such as ``"MMInstruction/Giraffe"`` or ``"Qwen/Qwen2-VL-7B-Instruct"``: downloaded by
  transformers when online; offline, only what is already in the Hugging Face cache.

``context_length`` applies a rope extension (M-RoPE++ by default) for that many tokens, deriving
the scale from the model's original context. Attention: FlashAttention-2 when ``flash_attn`` is
installed and the model runs on a CUDA GPU in half precision, PyTorch SDPA otherwise.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText

from giraffe_core.engine.engine import Engine
from giraffe_core.engine.processor import load_processor
from giraffe_core.engine.tiny import tiny_config, tiny_model, tiny_processor
from giraffe_core.errors import ConfigError, ModelLoadError
from giraffe_core.extras import is_available
from giraffe_core.rope import RopeMethod, apply_rope_extension

__all__ = ["choose_attention", "load"]

logger = logging.getLogger(__name__)

_SUPPORTED = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def choose_attention(device: torch.device | str, dtype: torch.dtype) -> str:
    """``"flash_attention_2"`` when flash-attn is installed and usable (CUDA, fp16/bf16), else ``"sdpa"``."""
    if torch.device(device).type == "cuda" and dtype in (torch.float16, torch.bfloat16) and is_available("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") > 1


def load(
    model: str | os.PathLike = "tiny",
    *,
    context_length: int | None = None,
    rope: RopeMethod | str = "mrope_plus_plus",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    seed: int = 0,
    **hub_kwargs: Any,
) -> Engine:
    """Load a Qwen-VL-family model and its processor as an :class:`Engine`.

    Args:
        model: ``"tiny"``, a directory written by ``save_pretrained`` (str or path), or a hub id.
        context_length: extend the model to this many tokens with ``rope`` (``None``: as saved).
        rope: rope method for the extension, one of :data:`giraffe_core.ROPE_METHODS`.
        device: where to run; default CUDA when available, else CPU.
        dtype: default bfloat16 on CUDA, float32 on CPU.
        attn_implementation: override the choice made by :func:`choose_attention`.
        seed: weight seed of the tiny preset.
        **hub_kwargs: passed to ``from_pretrained`` (``revision``, ``local_files_only``, ``token``...).

    Raises:
        ModelLoadError: the directory or hub id cannot be loaded (with the reason and the fix).
        ConfigError: the model is not a Qwen-VL family model, or the rope parameters are invalid.
    """
    model = os.fspath(model)
    device = torch.device(device) if device is not None else _default_device()
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    attn = attn_implementation or choose_attention(device, dtype)

    if model == "tiny":
        config = tiny_config()
        if context_length is not None:
            apply_rope_extension(config, context_length, rope)
        config._attn_implementation = attn
        net = tiny_model(config, seed=seed)
        return Engine(net.to(device=device, dtype=dtype), tiny_processor(), name="tiny")

    is_path = _looks_like_path(model)
    source = str(Path(model).expanduser()) if is_path else model
    if is_path and not Path(source).is_dir():
        raise ModelLoadError(
            f"no model directory at {source!r}",
            hint="pass 'tiny', a directory written by save_pretrained, or a hub id like 'Qwen/Qwen2-VL-2B-Instruct'",
        )
    try:
        config = AutoConfig.from_pretrained(source, **hub_kwargs)
    except (OSError, ValueError) as exc:
        hint = ("the directory needs the config.json that save_pretrained writes" if is_path else
                "offline? download it on a connected machine (`hf download ID --local-dir DIR`) and load DIR")
        raise ModelLoadError(f"cannot load the config of {source!r}: {exc}", hint=hint) from exc
    if config.model_type not in _SUPPORTED:
        raise ConfigError(f"{source!r} is a {config.model_type!r} model; Giraffe runs Qwen-VL family models",
                          hint=f"supported model types: {list(_SUPPORTED)}")
    if context_length is not None:
        apply_rope_extension(config, context_length, rope)
    try:
        net = AutoModelForImageTextToText.from_pretrained(source, config=config, dtype=dtype,
                                                          attn_implementation=attn, **hub_kwargs)
        processor = load_processor(source, **hub_kwargs)
    except (OSError, ValueError, SafetensorError) as exc:  # missing files, corrupt weights or configs
        raise ModelLoadError(f"cannot load the weights or processor of {source!r}: {exc}") from exc
    logger.info("loaded %s (%s, %s, attention=%s, rope=%s)", source, device, dtype, attn,
                config.get_text_config(decoder=True).rope_parameters.get("rope_type"))
    return Engine(net.to(device).eval(), processor, name=source)
