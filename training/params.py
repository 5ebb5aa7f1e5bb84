"""What trains: freezing, LoRA through peft, gradient checkpointing, and the rope of each stage.

* The vision tower and its merger are frozen by default (the paper trains the LLM backbone only);
  ``train_vision`` unfreezes the tower (for from-scratch tiny models), ``train_merger`` the merger.
* ``method: lora`` puts peft LoRA adapters on the language model's attention and MLP projections
  (a regex restricted to ``language_model.layers``, so the vision tower's own ``qkv``/``proj``
  layers never get adapters); with LoRA, an unfrozen tower or merger is trained in full through
  peft's ``modules_to_save``. ``method: full`` trains every language-model weight.
* Gradient checkpointing is transformers' own (non-reentrant), with the KV cache off.
* :func:`set_rope_for_length` applies M-RoPE++ (or another method) for a stage length to the
  model's config with :func:`giraffe_core.apply_rope_extension` and rebuilds the text model's
  rotary embedding from that config, exactly as transformers builds it at construction.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from torch import nn

from giraffe_core.errors import ConfigError
from giraffe_core.extras import require
from giraffe_core.rope import apply_rope_extension
from training.config import TuneConfig

__all__ = ["parameter_report", "prepare_model", "set_rope_for_length", "vision_modules"]

logger = logging.getLogger(__name__)


def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def vision_modules(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(tower, merger)`` of a Qwen-VL model (the merger is part of the tower module).

    Raises:
        ConfigError: the model has no ``model.visual`` with a ``merger``.
    """
    backbone = getattr(_base(model), "model", None)
    visual = getattr(backbone, "visual", None)
    merger = getattr(visual, "merger", None)
    if visual is None or merger is None:
        raise ConfigError(f"{type(_base(model)).__name__} has no vision tower with a merger (model.visual.merger)",
                          hint="train a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model")
    return visual, merger


def _lora_pattern(targets: list[str]) -> str:
    names = "|".join(sorted(set(targets)))
    return rf".*language_model\.layers\.\d+\.(self_attn|mlp)\.({names})"


def prepare_model(model: nn.Module, tune: TuneConfig, *, gradient_checkpointing: bool = True) -> nn.Module:
    """Freeze, add adapters and turn on checkpointing as ``tune`` says; returns the model to train
    (a peft ``PeftModel`` with LoRA). The KV cache is turned off (training needs none).

    Raises:
        MissingExtraError: LoRA without peft installed (``pip install 'giraffe[train]'``).
        ConfigError: the model is not a Qwen-VL model, or no layer matches ``lora_targets``.
    """
    visual, merger = vision_modules(model)
    for config in (model.config, model.config.get_text_config(decoder=True)):
        config.use_cache = False
    if gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    merger_ids = {id(p) for p in merger.parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    for p in visual.parameters():
        in_merger = id(p) in merger_ids
        p.requires_grad_(tune.train_merger if in_merger else tune.train_vision)
    if tune.method == "full":
        return model
    peft = require("peft", extra="train", purpose="train LoRA adapters")
    pattern = _lora_pattern(tune.lora_targets)
    saved = ["visual"] if tune.train_vision else ["merger"] if tune.train_merger else None
    lora = peft.LoraConfig(r=tune.lora_r, lora_alpha=tune.lora_alpha, lora_dropout=tune.lora_dropout,
                           target_modules=pattern, modules_to_save=saved, bias="none")
    try:
        with warnings.catch_warnings():  # peft still asks transformers for the deprecated name
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            wrapped = peft.get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"cannot add LoRA adapters: {exc}",
                          hint=f"tune.lora_targets must name language-model linear layers, got {tune.lora_targets}"
                          ) from exc
    if tune.train_vision and tune.train_merger is False:
        _, wrapped_merger = vision_modules(wrapped)
        for p in wrapped_merger.parameters():
            p.requires_grad_(False)
    return wrapped


def parameter_report(model: nn.Module) -> dict[str, dict[str, int]]:
    """Parameters per part (``language``, ``vision``, ``merger``), total and trainable."""
    visual, merger = vision_modules(model)
    merger_ids = {id(p) for p in merger.parameters()}
    visual_ids = {id(p) for p in visual.parameters()} - merger_ids
    report = {part: {"total": 0, "trainable": 0} for part in ("language", "vision", "merger")}
    for p in model.parameters():
        part = "merger" if id(p) in merger_ids else "vision" if id(p) in visual_ids else "language"
        report[part]["total"] += p.numel()
        report[part]["trainable"] += p.numel() if p.requires_grad else 0
    return report


def set_rope_for_length(model: nn.Module, length_tokens: int, method: str = "mrope_plus_plus") -> dict[str, Any]:
    """Extend ``model`` to ``length_tokens`` with ``method`` and rebuild its text rotary embedding.

    The scale is relative to the model's original context (``s = length / original``, never
    below 1), so a stage shorter than the original context leaves the frequencies unchanged.

    Returns:
        The text config's new ``rope_parameters``.
    """
    base = _base(model)
    apply_rope_extension(base.config, length_tokens, method)
    text_config = base.config.get_text_config(decoder=True)
    rebuilt = 0
    for module in base.modules():
        rotary = getattr(module, "rotary_emb", None)
        if rotary is not None and hasattr(module, "layers") and hasattr(rotary, "inv_freq"):
            fresh = type(rotary)(text_config).to(rotary.inv_freq.device)
            module.rotary_emb = fresh
            rebuilt += 1
    if not rebuilt:
        raise ConfigError(f"{type(base).__name__} has no text rotary embedding to rebuild")
    logger.info("rope for %d tokens: %s", length_tokens, text_config.rope_parameters)
    return dict(text_config.rope_parameters)
