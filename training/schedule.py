"""The step plan and the learning-rate schedule, pure functions of the config.

:func:`plan_steps` decides, before training starts, which samples every optimizer step sees: per
stage, the mixture's samples are grouped into micro-batches (packed rows of at most the stage
length with :func:`~training.collator.pack_rows`, or ``batch_samples`` padded samples), the
micro-batches are shuffled per epoch with a seed derived from ``(seed, stage, epoch)``, and each
step takes ``gradient_accumulation_steps x processes`` of them (epochs repeat as needed, so every
step is full). Because nothing here depends on random state or on what happened before, a resumed
run sees exactly the batches an uninterrupted one would.

:func:`lr_factor` is the multiplier of the learning rate at each optimizer step: linear warmup
over ``warmup_steps``, then constant, linear decay to 0, or cosine decay to 0 at the last step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from training.collator import pack_rows
from training.config import TrainConfig
from training.data.mixture import StagePlan

__all__ = ["PlannedStep", "lr_factor", "plan_steps"]


@dataclass
class PlannedStep:
    """One optimizer step: its stage and the micro-batches of every process (sample indices into
    the stage's examples; process ``r`` of ``n`` takes ``rows[r::n]``)."""

    stage: int
    rows: list[list[int]] = field(default_factory=list)


def plan_steps(plans: list[StagePlan], config: TrainConfig, per_step: int) -> list[PlannedStep]:
    """Every optimizer step of the run; ``per_step`` = accumulation steps x processes."""
    steps: list[PlannedStep] = []
    for plan, stage in zip(plans, config.stages):
        lengths = [e.num_tokens for e in plan.examples]
        if config.packing:
            rows = pack_rows(lengths, stage.length_tokens)
        else:
            rows = [list(range(i, min(i + config.batch_samples, len(lengths))))
                    for i in range(0, len(lengths), config.batch_samples)]
        count = stage.steps or max(1, math.ceil(stage.epochs * len(rows) / per_step))
        order: list[list[int]] = []
        epoch = 0
        while len(order) < count * per_step:
            epoch_rows = list(rows)
            random.Random(f"{config.seed}:{plan.index}:{epoch}").shuffle(epoch_rows)
            order += epoch_rows
            epoch += 1
        steps += [PlannedStep(plan.index, order[k * per_step:(k + 1) * per_step]) for k in range(count)]
    return steps


def lr_factor(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """``step -> multiplier`` of the learning rate (for ``torch.optim.lr_scheduler.LambdaLR``)."""
    warmup, kind = config.optim.warmup_steps, config.optim.scheduler

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
