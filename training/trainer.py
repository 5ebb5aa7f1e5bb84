"""The trainer: a thin loop over accelerate (single process, DDP, DeepSpeed ZeRO-2/3).

What one :meth:`Trainer.fit` does:

1. **Setup** (:meth:`Trainer.setup`): load the model (:func:`giraffe_core.load`: ``tiny``, a
   directory or a hub id), set M-RoPE++ for the first stage, freeze / add LoRA
   (:mod:`training.params`; packed rows get per-sample attention, :mod:`training.attention`; a
   frozen vision tower gets an output cache in ``OUTPUT/vision_cache``, not under DeepSpeed,
   :mod:`training.vision_cache`), read and measure every source and draw each stage's mixture
   (:mod:`training.data.mixture`, report in ``OUTPUT/mix_report.json``), plan the micro-batches
   (packed rows of at most the stage length, :func:`~training.collator.pack_rows`) and the
   optimizer steps, build AdamW and the warmup + decay schedule, and ``accelerator.prepare``
   the model (wrapped in :class:`~training.loss.ChunkedLossModel`), optimizer and scheduler.
2. **Steps**: each optimizer step takes ``gradient_accumulation_steps`` micro-batches on every
   process. The loss of a micro-batch is its SUM of token losses divided by the target tokens of
   the whole step (all micro-batches, all processes: reduced first), times the factors accelerate
   and DDP divide by; so the step's gradient is that of the mean token loss over the step
   whatever the accumulation, packing or process count. Stage changes re-set the rope for the
   new length (the progressive schedule: e.g. 8K, 32K, 64K, 128K).
3. **Checkpoints** every ``save_every_steps`` and at the end (:mod:`training.checkpoints`):
   ``accelerator.save_state`` (model, optimizer, scheduler, every process's RNG) plus the step;
   written under a temporary name and renamed, so a kill leaves the last complete one.
   ``fit(resume=True)`` loads the newest and continues: the data plan is a pure function of the
   config (seeded), so the resumed run sees the same batches and gives the same losses as an
   uninterrupted run (tested with SIGKILL).
4. **Logs**: ``metrics.jsonl`` (loss, learning rate, tokens per step), TensorBoard through
   accelerate's tracker (``OUTPUT/tensorboard``), ``logging``; callbacks receive a
   :class:`StepInfo` after every step (the CLI draws its progress bar from them).
5. **Model**: ``OUTPUT/final/``: the trained model with its processor, loadable with
   :func:`giraffe_core.load` (LoRA merged into the weights; the adapter alone in
   ``final/adapter``). Under DeepSpeed the weights are gathered by accelerate.

Multi-GPU: ``accelerate launch --num_processes 8 -m giraffe_cli train CONFIG.yaml`` (set
``deepspeed: zero3`` in the config for ZeRO-3).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from giraffe_agent.trajectory import write_json_atomic
from giraffe_core.engine import Engine, load
from giraffe_core.errors import ConfigError
from giraffe_core.extras import require
from giraffe_core.positions import VisionTokenIds
from training.attention import select_for_packing
from training.checkpoints import Checkpoints, MetricsLog
from training.collator import PackedCollator, PaddedCollator
from training.config import TrainConfig
from training.data.examples import IGNORE_INDEX, DataLog, Encoder
from training.data.mixture import MixReport, plan_stage, read_sources
from training.deepspeed_config import resolve_deepspeed_config, validate_deepspeed_config
from training.errors import CheckpointError
from training.loss import ChunkedLossModel
from training.params import parameter_report, prepare_model, set_rope_for_length, vision_modules
from training.schedule import PlannedStep, lr_factor, plan_steps
from training.vision_cache import VisionCache

__all__ = ["StepInfo", "TrainResult", "Trainer"]

logger = logging.getLogger(__name__)

VISION_CACHE_MEMORY_BYTES = 1 << 30
"""Bound on the vision outputs a process keeps in memory, bytes."""
VISION_CACHE_DISK_BYTES = 4 << 30
"""Bound on the vision outputs kept in ``OUTPUT/vision_cache``, bytes."""


@dataclass(frozen=True)
class StepInfo:
    """What one optimizer step did (given to callbacks).

    Attributes:
        step: optimizer steps done, from 1; ``total_steps``: planned for the whole run.
        stage: stage index; ``length_tokens``: its context length.
        loss: mean token loss of the step (all micro-batches and processes).
        learning_rate: the rate the step used.
        tokens: tokens processed (all processes, padding included); ``label_tokens``: targets.
        seconds: wall time of the step.
    """

    step: int
    total_steps: int
    stage: int
    length_tokens: int
    loss: float
    learning_rate: float
    tokens: int
    label_tokens: int
    seconds: float


@dataclass
class TrainResult:
    """How :meth:`Trainer.fit` ended.

    Attributes:
        steps: optimizer steps done in total (including those before a resume).
        total_steps: planned steps; ``completed``: whether all of them are done.
        losses: the mean token loss of every step, from step 1 (read back from ``metrics.jsonl``).
        checkpoint: the newest checkpoint; ``model_dir``: ``final/`` when the run completed.
        report: the mixing report; ``seconds``: wall time of this call.
    """

    steps: int
    total_steps: int
    completed: bool
    losses: list[float]
    output_dir: Path
    checkpoint: Path | None
    model_dir: Path | None
    report: MixReport
    seconds: float


class Trainer:
    """Fine-tunes a Qwen-VL model as a :class:`~training.config.TrainConfig` says.

    Args:
        config: the run.
        callbacks: called with a :class:`StepInfo` after every optimizer step (main process only).
        model, processor: an already loaded model and processor to train instead of ``config.model``.
    """

    def __init__(self, config: TrainConfig, *, callbacks: Sequence[Callable[[StepInfo], None]] = (),
                 model: Any = None, processor: Any = None) -> None:
        self.config = config
        self.callbacks = list(callbacks)
        self.output_dir = Path(config.output_dir)
        self.total_steps = 0
        self.report: MixReport | None = None
        self._given = (model, processor)
        self._ready = False

    # ------------------------------------------------------------------------------------ setup

    def _accelerator(self) -> Any:
        accelerate = require("accelerate", extra="train", purpose="train models")
        from accelerate.utils import DeepSpeedPlugin, ProjectConfiguration

        config = self.config
        plugin = None
        if config.deepspeed:
            require("deepspeed", extra="train", purpose=f"train with DeepSpeed ({config.deepspeed})")
            if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
                raise ConfigError(f"deepspeed: {config.deepspeed} needs a launcher: RANK and WORLD_SIZE are unset "
                                  "(DeepSpeed would try MPI discovery and fail)",
                                  hint="run `accelerate launch -m giraffe_cli train CONFIG`, or drop the deepspeed "
                                       "line to train in one plain process")
            resolved = resolve_deepspeed_config(
                config.deepspeed, gradient_accumulation_steps=config.gradient_accumulation_steps,
                micro_batch_size=1 if config.packing else config.batch_samples,
                max_grad_norm=config.optim.max_grad_norm, mixed_precision=config.mixed_precision,
                world_size=int(os.environ.get("WORLD_SIZE", "1")))
            plugin = DeepSpeedPlugin(hf_ds_config=validate_deepspeed_config(resolved))
        if config.tensorboard:
            require("tensorboard", extra="train", purpose="write TensorBoard logs")
        project = ProjectConfiguration(project_dir=str(self.output_dir),
                                       logging_dir=str(self.output_dir / "tensorboard"))
        return accelerate.Accelerator(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with="tensorboard" if config.tensorboard else None, project_config=project,
            deepspeed_plugin=plugin, step_scheduler_with_optimizer=False)

    def _load(self) -> tuple[Any, Any]:
        model, processor = self._given
        if model is not None and processor is not None:
            return model, processor
        spec = self.config.model
        cuda = torch.cuda.is_available()
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(spec.dtype)
        if dtype is None:  # auto: bf16 base weights for LoRA on a GPU, float32 otherwise
            dtype = torch.bfloat16 if cuda and self.config.tune.method == "lora" else torch.float32
        engine = load(spec.name, device="cpu", dtype=dtype, attn_implementation=spec.attn_implementation,
                      seed=spec.seed)
        return engine.model, engine.processor

    def _vision_cache(self) -> VisionCache | None:
        """A cache of the tower's outputs when the whole tower is frozen (not under DeepSpeed, whose
        ZeRO-3 partitions the weights the cache's key is made of)."""
        visual, _ = vision_modules(self.model)
        if self.config.deepspeed or any(p.requires_grad for p in visual.parameters()):
            return None
        return VisionCache(visual, memory_bytes=VISION_CACHE_MEMORY_BYTES, directory=self.output_dir / "vision_cache",
                           disk_bytes=VISION_CACHE_DISK_BYTES)

    def setup(self) -> None:
        """Load, freeze, read the data and plan every step (idempotent; :meth:`fit` calls it)."""
        if self._ready:
            return
        from accelerate.utils import set_seed

        config = self.config
        self.accelerator = self._accelerator()
        set_seed(config.seed)
        model, self.processor = self._load()
        self.tokens = VisionTokenIds.from_config(model.config)
        model.train()
        set_rope_for_length(model, config.stages[0].length_tokens, config.model.rope)
        if config.packing:  # attention per sample, not over the whole row (FlashAttention is kept)
            select_for_packing(model)
        self.model = prepare_model(model, config.tune, gradient_checkpointing=config.gradient_checkpointing)
        logger.info("parameters: %s", parameter_report(self.model))
        self.vision_cache = self._vision_cache()
        self.encoder = Encoder(self.processor, self.tokens, default_max_tokens=config.data.default_max_image_tokens)
        log = DataLog(config.data.on_bad_sample)
        examples = read_sources(config.data, self.encoder, max_length_tokens=config.stages[-1].length_tokens,
                                frames_dir=self.output_dir / "video_frames", log=log)
        self.plans = [plan_stage(examples, config.data, s.length_tokens, i, s.ratios)
                      for i, s in enumerate(config.stages)]
        self.report = MixReport.build(self.plans, config.data, log)
        world = self.accelerator.num_processes
        self.schedule = plan_steps(self.plans, config, config.gradient_accumulation_steps * world)
        self.total_steps = len(self.schedule)
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.output_dir / "mix_report.json", self.report.model_dump(mode="json"))
            logger.info("mixture:\n%s", self.report.to_text())
        pad = self.processor.tokenizer.pad_token_id
        self._collators = [PackedCollator(self.tokens, pad, max_length=s.length_tokens) if config.packing
                           else PaddedCollator(self.tokens, pad) for s in config.stages]
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optim = config.optim
        optimizer = torch.optim.AdamW(trainable, lr=optim.learning_rate, betas=optim.betas, eps=optim.eps,
                                      weight_decay=optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, self.total_steps))
        self.wrapper = ChunkedLossModel(self.model, config.loss_chunk_tokens)
        self.wrapper, self.optimizer, self.scheduler = self.accelerator.prepare(self.wrapper, optimizer, scheduler)
        self.checkpoints = Checkpoints(self.output_dir / "checkpoints", keep=config.keep_checkpoints)
        self.metrics = MetricsLog(self.output_dir / "metrics.jsonl")
        self._ready = True

    # ------------------------------------------------------------------------------- training

    def _batch(self, step: PlannedStep, row: list[int]) -> dict[str, torch.Tensor]:
        plan = self.plans[step.stage]
        samples = self.encoder.encode_many([plan.examples[i] for i in row])
        batch = self._collators[step.stage](samples)
        return {k: v.to(self.accelerator.device) for k, v in batch.items()}

    def _resume(self, resume: bool | str | Path) -> int:
        """Load a checkpoint; returns the step it was taken at (0 when starting fresh)."""
        if resume is False:
            if self.checkpoints.complete():
                raise CheckpointError(f"{self.output_dir} already holds checkpoints of a run",
                                      hint="resume it (--resume, fit(resume=True)) or choose a new output_dir")
            if self.accelerator.is_main_process and self.metrics.path.exists():
                self.metrics.path.unlink()
            return 0
        checkpoint = self.checkpoints.latest() if resume is True else Path(resume)
        if checkpoint is None:
            raise CheckpointError(f"no checkpoint to resume from in {self.checkpoints.directory}",
                                  hint="run without --resume to start from scratch")
        state = Checkpoints.state(checkpoint)
        if state.get("fingerprint") != self.config.fingerprint():
            raise CheckpointError(f"{checkpoint} was written by a different training config",
                                  hint="resume with the config that started the run, or use a new output_dir")
        self.accelerator.load_state(str(checkpoint))
        if self.accelerator.is_main_process:
            self.metrics.truncate(int(state["step"]))
        logger.info("resumed from %s (step %d)", checkpoint, state["step"])
        return int(state["step"])

    def _save(self, step: int) -> Path:
        accelerator = self.accelerator
        if accelerator.is_main_process:
            self.checkpoints.staging(step)
        accelerator.wait_for_everyone()
        tmp = self.checkpoints.staging(step, create=False)
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        final = self.checkpoints.directory / f"step-{step:06d}"
        if accelerator.is_main_process:
            final = self.checkpoints.commit(tmp, step, {"step": step, "total_steps": self.total_steps,
                                                        "fingerprint": self.config.fingerprint()})
        accelerator.wait_for_everyone()
        return final

    def _optimizer_step(self, index: int) -> StepInfo:
        accelerator, config = self.accelerator, self.config
        step = self.schedule[index]
        began = time.monotonic()
        mine = step.rows[accelerator.process_index::accelerator.num_processes]
        batches = [self._batch(step, row) for row in mine]
        local = torch.tensor([sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches),
                              sum(int(b["input_ids"].numel()) for b in batches)], device=accelerator.device)
        label_tokens, tokens = (int(v) for v in accelerator.reduce(local, reduction="sum"))
        scale = config.gradient_accumulation_steps * accelerator.num_processes / max(1, label_tokens)
        learning_rate = float(self.scheduler.get_last_lr()[0])
        total = torch.zeros((), device=accelerator.device)
        for batch in batches:
            with accelerator.accumulate(self.wrapper):
                loss_sum = self.wrapper(**batch)
                accelerator.backward(loss_sum * scale)
                if accelerator.sync_gradients and config.optim.max_grad_norm:
                    accelerator.clip_grad_norm_(self.wrapper.parameters(), config.optim.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
            total += loss_sum.detach().float()
        self.scheduler.step()
        loss = float(accelerator.reduce(total, reduction="sum")) / max(1, label_tokens)
        return StepInfo(index + 1, self.total_steps, step.stage, self.config.stages[step.stage].length_tokens, loss,
                        learning_rate, tokens, label_tokens, time.monotonic() - began)

    def fit(self, *, resume: bool | str | Path = False, max_steps: int | None = None) -> TrainResult:
        """Train to the end of the schedule (or ``max_steps`` optimizer steps in total).

        Args:
            resume: ``True``: continue from the newest checkpoint in ``output_dir``; a path: from
                that checkpoint; ``False``: start fresh (refused when ``output_dir`` holds checkpoints).
            max_steps: stop after this many steps in total (a checkpoint is written there).

        Raises:
            CheckpointError: nothing to resume, a checkpoint of another config, or a fresh start in
                an ``output_dir`` that holds checkpoints.
            DataError: a bad sample under ``on_bad_sample: fail``.
        """
        began = time.monotonic()
        self.setup()
        accelerator, config = self.accelerator, self.config
        start = self._resume(resume)
        stop = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        if config.tensorboard:
            accelerator.init_trackers("giraffe")
        stage = None
        checkpoint = self.checkpoints.latest()
        for index in range(start, stop):
            if self.schedule[index].stage != stage:
                stage = self.schedule[index].stage
                set_rope_for_length(self.model, config.stages[stage].length_tokens, config.model.rope)
            info = self._optimizer_step(index)
            if accelerator.is_main_process:
                self.metrics.append({"step": info.step, "stage": info.stage, "loss": info.loss,
                                     "lr": info.learning_rate, "tokens": info.tokens,
                                     "label_tokens": info.label_tokens, "seconds": round(info.seconds, 4)})
                if config.tensorboard:
                    accelerator.log({"train/loss": info.loss, "train/learning_rate": info.learning_rate,
                                     "train/tokens_per_second": info.tokens / max(info.seconds, 1e-9),
                                     "train/stage_length": info.length_tokens}, step=info.step)
                if info.step % config.log_every_steps == 0 or info.step == stop:
                    logger.info("step %d/%d stage %d loss %.4f lr %.3g %d tokens %.2fs", info.step, self.total_steps,
                                info.stage, info.loss, info.learning_rate, info.tokens, info.seconds)
                for callback in self.callbacks:
                    callback(info)
            if info.step % config.save_every_steps == 0 or info.step == stop:
                checkpoint = self._save(info.step)
        completed = stop == self.total_steps
        model_dir = self.save_model(self.output_dir / "final") if completed and start < stop else None
        if config.tensorboard:
            accelerator.end_training()
        losses = [row["loss"] for row in self.metrics.rows()] if accelerator.is_main_process else []
        return TrainResult(stop, self.total_steps, completed, losses, self.output_dir, checkpoint, model_dir,
                           self.report, time.monotonic() - began)

    # ---------------------------------------------------------------------------------- model

    def trained_model(self) -> Any:
        """The model being trained, unwrapped from accelerate (a peft model with LoRA)."""
        self.setup()
        return self.accelerator.unwrap_model(self.wrapper).model

    def engine(self) -> Engine:
        """An :class:`~giraffe_core.engine.Engine` over the model as trained so far (for evaluation).

        With LoRA this is the base model, whose layers carry the adapters (peft injects them in place).
        """
        model = self.trained_model()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return Engine(base, self.processor, name="trained")

    def save_model(self, directory: str | Path) -> Path:
        """Write the trained model and processor to ``directory`` (loadable with ``giraffe_core.load``).

        With LoRA, the adapter goes to ``directory/adapter`` and the weights with the adapter
        merged (in place: call this when training is over) to ``directory``. Under DeepSpeed the
        weights are gathered by accelerate and only the adapter is written for LoRA (merge it
        after loading with peft's ``merge_and_unload``).
        """
        from accelerate.utils import DistributedType

        directory = Path(directory)
        accelerator = self.accelerator
        model = self.trained_model()
        sharded = accelerator.distributed_type == DistributedType.DEEPSPEED
        state = None
        if sharded:  # every process takes part in gathering the weights
            gathered = accelerator.get_state_dict(self.wrapper)
            state = {k.removeprefix("model."): v for k, v in gathered.items()} if gathered is not None else None
        if accelerator.is_main_process:
            directory.mkdir(parents=True, exist_ok=True)
            if hasattr(model, "merge_and_unload"):
                model.save_pretrained(directory / "adapter", state_dict=state)
                if not sharded:
                    model.merge_and_unload().save_pretrained(directory)
            else:
                model.save_pretrained(directory, state_dict=state)
            self.processor.save_pretrained(directory)
        accelerator.wait_for_everyone()
        return directory
