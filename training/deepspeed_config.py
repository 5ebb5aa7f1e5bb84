"""DeepSpeed ZeRO configs: the shipped ones, filling their ``"auto"`` values, and validation.

``training/configs/zero2.json`` (ZeRO-2: optimizer states and gradients partitioned) and
``zero3.json`` (ZeRO-3: parameters too, optimizer states offloaded to CPU memory, 16-bit weights
gathered on save) follow the Hugging Face convention of ``"auto"`` for what the training config
decides. :func:`resolve_deepspeed_config` fills those from a :class:`~training.config.TrainConfig`
(micro-batch 1 packed row, gradient accumulation, clipping, bf16/fp16), so accelerate receives a
complete config and never has to guess.

:func:`validate_deepspeed_config` checks a resolved config with DeepSpeed's own
``DeepSpeedConfig`` (its pydantic models refuse unknown ZeRO keys and bad values) when DeepSpeed
is installed, and otherwise with a schema of the keys used here and ZeRO's documented ones, so
the configs are checked on machines without DeepSpeed too (DeepSpeed stays optional: it is only
imported when a run asks for it).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from giraffe_core.errors import ConfigError
from giraffe_core.extras import is_available

__all__ = ["SHIPPED_DEEPSPEED", "deepspeed_config_path", "resolve_deepspeed_config", "validate_deepspeed_config"]

logger = logging.getLogger(__name__)

#: names of the shipped DeepSpeed configs -> file names under ``training/configs/``
SHIPPED_DEEPSPEED: dict[str, str] = {"zero2": "zero2.json", "zero3": "zero3.json"}


def deepspeed_config_path(name_or_path: str) -> Path:
    """The file of a shipped config (``zero2``, ``zero3``) or of a path.

    Raises:
        ConfigError: neither a shipped name nor an existing file.
    """
    if name_or_path in SHIPPED_DEEPSPEED:
        return Path(str(resources.files("training") / "configs" / SHIPPED_DEEPSPEED[name_or_path]))
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"no DeepSpeed config {name_or_path!r}",
                          hint=f"use one of {sorted(SHIPPED_DEEPSPEED)} or the path of a DeepSpeed JSON file")
    return path


def _fill(value: Any, fills: dict[str, Any], key: str) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, fills, f"{key}.{k}" if key else k) for k, v in value.items()}
    if value == "auto":
        if key not in fills:
            raise ConfigError(f"DeepSpeed config key {key!r} is 'auto', which Giraffe cannot fill",
                              hint=f"set it to a value; Giraffe fills {sorted(fills)}")
        return fills[key]
    return value


def resolve_deepspeed_config(name_or_path: str | dict[str, Any], *, gradient_accumulation_steps: int,
                             micro_batch_size: int = 1, max_grad_norm: float | None = 1.0,
                             mixed_precision: str = "bf16", world_size: int = 1) -> dict[str, Any]:
    """A DeepSpeed config with every ``"auto"`` filled from the training settings.

    Args:
        name_or_path: ``zero2``, ``zero3``, a JSON path, or a config dict.
        gradient_accumulation_steps: micro-batches per optimizer step.
        micro_batch_size: rows per micro-batch per GPU (1 when packing).
        max_grad_norm: gradient clipping (``None``: none, written as 0).
        mixed_precision: ``no``, ``bf16`` or ``fp16``.
        world_size: processes, for ``train_batch_size``.
    """
    if isinstance(name_or_path, dict):
        raw = copy.deepcopy(name_or_path)
    else:
        path = deepspeed_config_path(name_or_path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the DeepSpeed config {path}: {exc}") from exc
    fills = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "train_batch_size": micro_batch_size * gradient_accumulation_steps * world_size,
        "gradient_clipping": float(max_grad_norm or 0.0),
        "bf16.enabled": mixed_precision == "bf16",
        "fp16.enabled": mixed_precision == "fp16",
    }
    return _fill(raw, fills, "")


class _Offload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: Literal["none", "cpu", "nvme"] = "none"
    pin_memory: bool = False
    nvme_path: str | None = None
    buffer_count: int = Field(4, ge=1)
    ratio: float = Field(1.0, ge=0, le=1)


class _Zero(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Literal[0, 1, 2, 3]
    allgather_partitions: bool = True
    allgather_bucket_size: int = Field(500_000_000, ge=1)
    overlap_comm: bool = False
    reduce_scatter: bool = True
    reduce_bucket_size: int = Field(500_000_000, ge=1)
    contiguous_gradients: bool = True
    offload_optimizer: _Offload | None = None
    offload_param: _Offload | None = None
    sub_group_size: int = Field(1_000_000_000, ge=1)
    stage3_prefetch_bucket_size: int = Field(50_000_000, ge=0)
    stage3_param_persistence_threshold: int = Field(100_000, ge=0)
    stage3_max_live_parameters: int = Field(1_000_000_000, ge=0)
    stage3_max_reuse_distance: int = Field(1_000_000_000, ge=0)
    stage3_gather_16bit_weights_on_model_save: bool = False
    round_robin_gradients: bool = False
    ignore_unused_parameters: bool = True


class _Precision(BaseModel):
    model_config = ConfigDict(extra="allow")

    enabled: bool


class _Schema(BaseModel):
    model_config = ConfigDict(extra="allow")

    train_micro_batch_size_per_gpu: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    train_batch_size: int | None = Field(None, ge=1)
    gradient_clipping: float = Field(0.0, ge=0)
    bf16: _Precision | None = None
    fp16: _Precision | None = None
    zero_optimization: _Zero
    zero_force_ds_cpu_optimizer: bool = True
    steps_per_print: int = Field(10, ge=1)
    wall_clock_breakdown: bool = False


def validate_deepspeed_config(config: dict[str, Any], *, use_deepspeed: bool | None = None) -> dict[str, Any]:
    """Check a resolved DeepSpeed config; returns it unchanged.

    Args:
        config: a config without ``"auto"`` values (:func:`resolve_deepspeed_config`).
        use_deepspeed: check with DeepSpeed's ``DeepSpeedConfig`` (default: when installed) or
            with the built-in schema (``False``).

    Raises:
        ConfigError: an unknown ZeRO key, a bad value, bf16 and fp16 both on, or (DeepSpeed)
            anything its own validation refuses.
    """
    if (config.get("bf16") or {}).get("enabled") and (config.get("fp16") or {}).get("enabled"):
        raise ConfigError("the DeepSpeed config enables both bf16 and fp16", hint="enable one of them")
    if use_deepspeed is None:
        use_deepspeed = is_available("deepspeed")
    if use_deepspeed:
        from giraffe_core.extras import require

        require("deepspeed", extra="train", purpose="validate a DeepSpeed config")
        from deepspeed.runtime.config import DeepSpeedConfig

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                DeepSpeedConfig(copy.deepcopy(config))
        except (ValidationError, ValueError, TypeError, AssertionError, KeyError) as exc:
            raise ConfigError(f"DeepSpeed refuses the config: {exc}") from exc
        return config
    try:
        _Schema.model_validate(config)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid DeepSpeed config: {problems}") from exc
    return config
