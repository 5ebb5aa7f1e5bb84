"""Training configuration: pydantic models with ``extra="forbid"``, loaded from YAML.

One :class:`TrainConfig` describes a whole run::

    output_dir: runs/etvlm-7b
    model: {name: Qwen/Qwen2-VL-7B-Instruct, dtype: bfloat16, rope: mrope_plus_plus}
    data:                                   # the ETVLM recipe (MixtureConfig)
      sources:
        - {kind: long_text, path: data/longalign.jsonl}
        - {kind: llava, path: data/llava_instruct.json, image_root: data/coco}
        - {kind: llava, path: data/mantis.json, image_root: data/mantis, category: interleaved}
        - {kind: video_qa, path: data/video_qa.json, video_root: data/videos, fps: 2}
      ratios: {long_text: 0.20, short_visual: 0.25, interleaved: 0.25, video: 0.30}
      long_share: 0.6                       # of samples over long_threshold_tokens
    stages: [{length_tokens: 65536, steps: 600}, {length_tokens: 131072, steps: 400}]
    tune: {method: lora, lora_r: 64}
    optim: {learning_rate: 1.0e-4}
    deepspeed: zero3

LLaMA-Factory and ms-swift data are read as those frameworks write them
(``{kind: llamafactory, path: data/mllm_demo.json}``, ``{kind: swift, path: data/agent.jsonl}``):
images, videos, typed content parts, tools and (ms-swift) grounding boxes; see
:mod:`training.data.formats`.

A stage may draw with its own ``ratios`` (a curriculum: e.g. ``{length_tokens: 1024, steps: 1200,
ratios: {long_text: 1.0}}`` first, as ``demo/train.yaml`` does); the others use ``data.ratios``.

Relative paths are relative to the working directory (as in accelerate, TRL and LLaMA-Factory).
Every shipped YAML under ``training/configs/`` validates (tested). :func:`load_config` turns a
validation failure into one :class:`~giraffe_core.ConfigError` listing each bad field.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from giraffe_core.errors import ConfigError
from giraffe_core.resolution import GroupScheme
from giraffe_core.rope import ROPE_METHODS

__all__ = [
    "CATEGORIES",
    "Category",
    "ETVLM_RATIOS",
    "HFSource",
    "LlamaFactorySource",
    "LlavaSource",
    "LongTextSource",
    "MixtureConfig",
    "ModelConfig",
    "OptimConfig",
    "Source",
    "StageConfig",
    "SwiftSource",
    "TrainConfig",
    "TrajectorySource",
    "TuneConfig",
    "VideoQASource",
    "load_config",
]

#: what a training sample is, for the mixture's ratios and report
Category = Literal["long_text", "short_visual", "interleaved", "video", "trajectory"]
CATEGORIES: tuple[str, ...] = ("long_text", "short_visual", "interleaved", "video", "trajectory")
#: the paper's ETVLM shares (section 2): long text, short visual, interleaved, video
ETVLM_RATIOS: dict[str, float] = {"long_text": 0.20, "short_visual": 0.25, "interleaved": 0.25, "video": 0.30}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SourceBase(_Strict):
    path: str = Field(description="a file, a directory, or (hf) a hub id")
    name: str | None = Field(None, description="name in reports; default: the path's last part")
    category: Category | None = Field(None, description="default: decided by the reader (see each kind)")
    max_samples: int | None = Field(None, ge=1, description="read at most this many samples")

    @property
    def label(self) -> str:
        """The source's name in reports."""
        return self.name or Path(self.path).name or self.path


class LlavaSource(_SourceBase):
    """LLaVA / ShareGPT JSON (an array) or JSONL: ``conversations`` (``from``/``value``) or
    ``messages`` (``role``/``content``), ``image`` or ``images`` relative to ``image_root``, and
    ``<image>`` marking where each image goes. Category: ``short_visual`` for records with at
    most one image, ``interleaved`` for more, unless ``category`` is set."""

    kind: Literal["llava"] = "llava"
    image_root: str | None = Field(None, description="folder the image paths are relative to; default: the file's")


class HFSource(_SourceBase):
    """A Hugging Face ``datasets`` dataset with LLaVA-style or ``messages`` rows: a directory
    written by ``save_to_disk``, or a name for ``load_dataset`` (downloaded by datasets when online).
    Image columns hold paths (relative to ``image_root``) or decoded images."""

    kind: Literal["hf"] = "hf"
    split: str = "train"
    image_root: str | None = None


class _VideoOptions(_SourceBase):
    """How a source's videos become frames."""

    fps: float = Field(2.0, gt=0, description="frames sampled per second of video (the paper: 2)")
    max_frames: int = Field(768, ge=1, description="most frames per video")
    scheme: GroupScheme = Field(default_factory=GroupScheme, description="hybrid resolution (L, m, s)")
    frames_dir: str | None = Field(None, description="where decoded frames are stored; default OUTPUT/video_frames")


class VideoQASource(_VideoOptions):
    """Video QA JSON or JSONL: ``{"video": "clip.mp4", "questions": [{"question", "answer"}, ...]}``
    (or ``conversations``). Frames are sampled at ``fps`` (at most ``max_frames``, evenly kept),
    tiered with the group scheme ``(L, m, s)`` and stored once under ``frames_dir``."""

    kind: Literal["video_qa"] = "video_qa"
    video_root: str | None = Field(None, description="folder the video paths are relative to; default: the file's")


class _ChatFormatSource(_VideoOptions):
    media_root: str | None = Field(None, description="folder image and video paths are relative to; "
                                                     "default: the file's")
    ignore_fields: tuple[str, ...] = Field((), description="record fields to drop before reading (metadata "
                                                           "columns); other unknown fields are refused")


class LlamaFactorySource(_ChatFormatSource):
    """LLaMA-Factory data, JSON or JSONL, as its own demo files hold it: ShareGPT ``conversations``
    or ``messages`` with ``images`` / ``videos`` and ``<image>`` / ``<video>`` tags, ``tools`` with
    ``function_call`` / ``observation`` turns, Alpaca ``instruction`` / ``input`` / ``output``, and
    typed content parts (``image_url`` with ``url`` or ``value``). Category: ``video`` with a video,
    ``interleaved`` with several images, ``short_visual`` with one, ``long_text`` with none."""

    kind: Literal["llamafactory"] = "llamafactory"


class SwiftSource(_ChatFormatSource):
    """ms-swift data, JSON or JSONL: ``messages`` with ``images`` / ``videos`` and tags, typed
    content parts, ``tools`` with ``tool_call`` / ``tool_response`` turns, ``objects`` grounding
    (``<ref-object>``, ``<bbox>``), ``query`` / ``response`` / ``history``. Categories as for
    ``llamafactory``."""

    kind: Literal["swift"] = "swift"
    box_format: Literal["auto", "qwen2_vl", "qwen2_5_vl"] = Field(
        "auto", description="how objects' boxes are written: qwen2_vl (0..1000 of the image), qwen2_5_vl (pixels "
                            "of the image resized for the model); auto: qwen2_5_vl for a Qwen2.5-VL model")


class LongTextSource(_SourceBase):
    """Long-text instruction JSONL (LongAlign, LongAlpaca): ``messages``, or ``instruction``
    (plus optional ``input``) and ``output``. Category ``long_text``."""

    kind: Literal["long_text"] = "long_text"


class TrajectorySource(_SourceBase):
    """Giraffe agent runs: a run directory, or a directory whose subdirectories are runs. Every
    model call of a kept run becomes one sample: the exact context the agent sent, then its reply."""

    kind: Literal["trajectories"] = "trajectories"
    successful_only: bool = Field(True, description="keep runs that succeeded (reward > 0, else status done)")
    first_step: int = Field(0, ge=0, description="first agent step kept")
    last_step: int | None = Field(None, ge=0, description="last agent step kept (inclusive)")
    include_parse_errors: bool = Field(False, description="also train on replies that did not parse")
    copy_augment: int = Field(0, ge=0, description="extra variants of each sample whose replies type a value the "
                                                   "task quotes, with new random values (teaches copying; see "
                                                   "training.data.augment)")
    copy_drills: int = Field(0, ge=0, description="text-only variants (no screenshots) of each sample that copies "
                                                  "a value from the task, with new random values (a dense copy signal)")


Source = Annotated[LlavaSource | HFSource | VideoQASource | LongTextSource | TrajectorySource
                   | LlamaFactorySource | SwiftSource, Field(discriminator="kind")]


def _check_ratios(ratios: dict[str, float]) -> dict[str, float]:
    if not ratios or any(v < 0 for v in ratios.values()) or abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be non-negative and sum to 1, got {ratios}")
    return ratios


class MixtureConfig(_Strict):
    """The ETVLM recipe: sources, category ratios, long share and concatenation."""

    sources: list[Source] = Field(min_length=1)
    ratios: dict[Category, float] = Field(default_factory=lambda: dict(ETVLM_RATIOS),
                                          description="share of samples per category; sums to 1")
    long_share: float | None = Field(0.6, ge=0.0, le=1.0, description="share of samples over the long threshold")
    long_threshold_tokens: int = Field(8192, ge=1, description="a sample is long above this many tokens")
    concatenate: list[Category] = Field(default_factory=lambda: ["short_visual"],
                                        description="categories whose samples are joined into dialogues")
    samples_per_stage: int | None = Field(None, ge=1, description="default: as many as the scarcest category allows")
    on_bad_sample: Literal["skip", "fail"] = "skip"
    default_max_image_tokens: int | None = Field(None, ge=1, description="budget of images without max_tokens")
    seed: int = 0

    @field_validator("ratios")
    @classmethod
    def _ratios_sum_to_one(cls, ratios: dict[str, float]) -> dict[str, float]:
        return _check_ratios(ratios)


class StageConfig(_Strict):
    """One stage of progressive training: its context length, how long it trains and, for a
    curriculum, its own category ratios (e.g. a first short stage of mostly one category)."""

    length_tokens: int = Field(ge=64, description="stage context length; packed rows never exceed it")
    steps: int | None = Field(None, ge=1, description="optimizer steps (cycling over the data); default: epochs")
    epochs: float = Field(1.0, gt=0, description="passes over the stage's mixture when steps is not set")
    ratios: dict[Category, float] | None = Field(None, description="this stage's category ratios (sum to 1); "
                                                 "default: the mixture's ratios")

    @field_validator("ratios")
    @classmethod
    def _ratios_sum_to_one(cls, ratios: dict[str, float] | None) -> dict[str, float] | None:
        return None if ratios is None else _check_ratios(ratios)


class ModelConfig(_Strict):
    """What to fine-tune: ``tiny``, a saved directory or a hub id, with the rope extension method."""

    name: str = "tiny"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on CUDA, float32 on CPU")
    rope: str = Field("mrope_plus_plus", description="rope method set for each stage's length")
    attn_implementation: str | None = Field(None, description="default: flash_attention_2 when usable, else sdpa")
    seed: int = Field(0, description="weight seed of the tiny preset")

    @field_validator("rope")
    @classmethod
    def _known_rope(cls, rope: str) -> str:
        if rope not in ROPE_METHODS:
            raise ValueError(f"unknown rope method {rope!r}; use one of {list(ROPE_METHODS)}")
        return rope


class TuneConfig(_Strict):
    """What trains: LoRA adapters on the language model (default) or all of it; the vision tower
    and merger stay frozen unless asked."""

    method: Literal["lora", "full"] = "lora"
    lora_r: int = Field(16, ge=1)
    lora_alpha: float = Field(32.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"],
                                    description="language-model linear layers that get adapters")
    train_vision: bool = Field(False, description="also train the vision tower (e.g. a from-scratch tiny model)")
    train_merger: bool = Field(False, description="also train the vision-to-language merger")


class OptimConfig(_Strict):
    """AdamW and its learning-rate schedule (warmup, then constant, linear or cosine decay)."""

    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(0, ge=0)
    scheduler: Literal["constant", "linear", "cosine"] = "cosine"
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping; null: none")


class TrainConfig(_Strict):
    """A whole training run (see the module docstring for a YAML example)."""

    output_dir: str
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: MixtureConfig
    stages: list[StageConfig] = Field(min_length=1)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    packing: bool = Field(True, description="pack samples into rows of the stage length (else pad per batch)")
    batch_samples: int = Field(8, ge=1, description="samples per micro-batch when packing is off")
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = True
    loss_chunk_tokens: int = Field(4096, ge=1, description="label tokens per chunk of the chunked cross-entropy")
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    deepspeed: str | None = Field(None, description="zero2, zero3 (shipped configs) or a DeepSpeed JSON path")
    save_every_steps: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept on disk")
    log_every_steps: int = Field(10, ge=1)
    tensorboard: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _progressive(self) -> TrainConfig:
        lengths = [s.length_tokens for s in self.stages]
        if lengths != sorted(lengths):
            raise ValueError(f"stage lengths must not decrease (progressive training), got {lengths}")
        return self

    def fingerprint(self) -> str:
        """Hash of everything that shapes the loss curve (not output, logging or checkpoint cadence).

        A checkpoint only resumes a run with the same fingerprint.
        """
        keep = self.model_dump(mode="json", exclude={"output_dir", "save_every_steps", "keep_checkpoints",
                                                    "log_every_steps", "tensorboard"})
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _format_errors(exc: ValidationError, where: str) -> str:
    lines = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"]) or "(top level)"
        lines.append(f"  {loc}: {error['msg']}")
    return f"{where} is not a valid training config:\n" + "\n".join(lines)


def load_config(source: str | os.PathLike | dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a training config.

    Args:
        source: a YAML file, or the already-parsed mapping.
        overrides: top-level keys replaced after reading (e.g. ``{"output_dir": ...}``).

    Raises:
        ConfigError: the file cannot be read or parsed, or a field is missing, unknown or invalid
            (every problem listed with its dotted location).
    """
    if isinstance(source, dict):
        raw: Any = dict(source)
        where = "the config"
    else:
        path = Path(source)
        where = str(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the training config {where}: {exc}",
                              hint="pass the path of a YAML file (see training/configs/ for examples)") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must hold a mapping of settings, got {type(raw).__name__}")
    raw.update(overrides or {})
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, where),
                          hint="fix the fields listed; unknown keys are refused (check their spelling)") from exc
