"""The demo model's card (``README.md`` in its directory): data, tasks, results, limits."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.results import write_text_atomic

if TYPE_CHECKING:  # pragma: no cover
    from demo.build import BuildResult, DemoConfig

__all__ = ["CARD_FILE", "pointed_at", "write_model_card"]

CARD_FILE = "README.md"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def pointed_at(eval_dir: Path, task: str) -> tuple[int, int]:
    """``(distinct points, actions with a point)`` over the model's clicks and typed-at positions in
    the evaluation runs of ``task`` (``eval_dir/runs/TASK/seed-N``): how much WHERE it acts varies."""
    points = []
    for trajectory in sorted((eval_dir / "runs" / task).glob("seed-*/trajectory.jsonl")):
        for line in trajectory.read_text(encoding="utf-8").splitlines():
            action = (json.loads(line).get("action") or {}) if line.strip() else {}
            if action.get("x") is not None and action.get("y") is not None:
                points.append((action["x"], action["y"]))
    return len(set(points)), len(points)


def write_model_card(model_dir: Path, config: DemoConfig, result: BuildResult, report: Any,
                     extra_limits: str = "") -> Path:
    """Write ``model_dir/README.md`` from the build's numbers and the evaluation ``report``
    (an :class:`evals.MiniWoBReport`) and ``extra_limits`` (Markdown list items); returns its path."""
    from demo.build import TRAIN_SEED_BASE

    model_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    mix_path = config.out_dir / "train" / "mix_report.json"
    mix_line = "Mixture: see the training run's mix_report.json."
    if mix_path.is_file():
        mix = json.loads(mix_path.read_text(encoding="utf-8"))
        stages = "; ".join(f"stage {stage['stage'] + 1}: {stage['samples']:,} samples, {stage['tokens']:,} tokens "
                           f"({', '.join(f'{c} {v:.0%}' for c, v in stage['shares'].items())})"
                           for stage in mix["stages"])
        mix_line = (f"Mixture per epoch of each stage: {stages}. Kept per source: "
                    + ", ".join(f"{k} {v:,}" for k, v in mix["data"]["kept"].items()) + ".")
    clicking = ("Where a target moves by more than its own size (enter-text's Submit button, moved by up to 40 px; "
                "the n-th of three jittered fields in focus-text-2; the close button of a dialog of random size in "
                "click-dialog), a model trained on click demonstrations clicks where the target is on average and "
                "succeeds about as often as that point hits (32-48 % on click-dialog and focus-text-2 in our "
                "trials; near chance where targets move anywhere, as in click-test and click-button). A vision "
                "tower trained from scratch in minutes on a CPU does not get there; a pretrained Qwen2-VL does.")
    if config.keyboard:
        replies = ('Replies are one JSON action. The demonstrator fills in forms with the keyboard, and so does the '
                   'model: `{"action": "key", "keys": "Tab"}` to the next field, `{"action": "type", "text": "kI8"}` '
                   'into the focused one, Tab to the button, then `{"action": "key", "keys": "Enter"}`; '
                   'focus-text is one Tab.')
        locating = ("It does not learn to locate things on the screen, and these tasks do not ask it to: it fills "
                    "in forms with the keyboard, moving between fields with Tab in the page's order, so what it "
                    "learns is each task's steps (from its own earlier actions in the context) and to copy the "
                    "text to type from the instruction. The screenshot hardly matters to it. " + clicking)
    else:
        replies = ('Replies are one JSON action, coordinates on the 0-1000 grid of the screenshot, e.g. '
                   '`{"action": "type", "text": "kI8", "x": 444, "y": 421}`.')
        locating = ("It does not learn to locate things on the screen. It learns each task's steps, the fixed "
                    "points where a page's fields and buttons are, and to copy the text to type from the "
                    "instruction. " + clicking)
    text_config = model_config.get("text_config", model_config)
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    rows = "\n".join(
        f"| {t.task} | {t.successes}/{t.episodes} | {_percent(t.success_rate)} | "
        f"{'-' if t.ci95 is None else f'{100 * t.ci95[0]:.0f}-{100 * t.ci95[1]:.0f} %'} | "
        f"{result.recorded.get(t.task, 0)} | {'{} / {}'.format(*pointed_at(result.eval_dir, t.task))} |"
        for t in report.tasks)
    overall = report.overall
    below = [t.task for t in report.tasks if (t.success_rate or 0) < 0.8]

    card = f"""# giraffe-demo-tiny

A tiny Giraffe-architecture model (Qwen2-VL layout: vision tower, merger, {text_config.get("num_hidden_layers")}-layer
language model of width {text_config.get("hidden_size")}; M-RoPE++ on) trained FROM SCRATCH on a CPU by the SDK
itself, to show the whole loop working end to end: scripted MiniWoB++ demonstrations recorded with
`giraffe run --demonstrator`, trained with `training/` (`demo/train.yaml`), run as the agent's
local backend and scored by MiniWoB++'s own reward through `evals/`. Rebuild it with
`giraffe build-demo` (about an hour on 2 CPU cores; see below).

It is a demonstration of the pipeline, not a general web agent: it has seen nothing but the
{len(config.tasks)} tasks below, rendered at 160x210 CSS pixels, and it reads its instruction from the task
text (MiniWoB's utterance, as MiniWoB++ gives it to agents), not from the screenshot.

## Data

- {sum(result.recorded.values())} successful demonstrations ({config.episodes} recorded per task, seeds
  {TRAIN_SEED_BASE}-{TRAIN_SEED_BASE + config.episodes - 1}): one sample per model call, the exact
  context the agent rendered, then the demonstrator's reply.
- The demonstrator reads the DOM; the recorded contexts hold only what the model sees at run time:
  the system prompt, the instruction, the newest screenshot (older ones are dropped by the memory
  config in `agent_config.json`) and the model's own earlier actions.
- {replies}
- Copying: a sample whose reply types a value quoted in the task also gets 1 variant with new
  random values and 4 text-only drills (`copy_augment`, `copy_drills`), and 20,000 copy exercises
  (one, two or three quoted values of random distinct characters and which one to type -> the
  type action with it) make up a first training stage alone and half of the second stage's
  samples. Without them the model typed values it had memorised (0 % on every typing task). The
  model learns to copy in a sudden loss drop (an induction-head phase change); at a learning rate
  of 2e-3 that drop came late or never, at 5e-4 on the exercises alone it comes within about
  1,000 steps, hence the curriculum. Exercises of one value only taught a copy that reads from
  the first quoted value: that model typed login-user's password as its first character
  (docs/decisions.md).
- {mix_line}

## Training

- Everything trains (language model, vision tower, merger): nothing is pretrained.
- {result.train_seconds / 60:.1f} minutes on a {os.cpu_count()}-core {platform.machine()} CPU (torch threads: all);
  mean token loss {result.first_loss:.3f} at the first step, {result.final_loss:.3f} at the last.
- Weights: {weights / 1e6:.1f} MB (safetensors).

## Results

Unseen seeds 0-{config.eval_seeds - 1} per task; success = MiniWoB++'s raw reward above 0; at most
{config.max_steps} actions; greedy decoding; the screenshot and the instruction only (no DOM).

| task | solved | success | 95 % CI | training demos | points acted at: distinct / all |
|---|---|---|---|---|---|
{rows}
| **overall** | {overall.successes}/{overall.episodes} | **{_percent(overall.success_rate)}** | | | |

The last column counts the distinct (x, y) of the model's clicks and typed-at positions over the
episodes: a handful for hundreds of actions means it acts at a fixed point per step of a task,
whatever the screenshot shows.

Reproduce (after `giraffe build-demo --ship`):

```bash
giraffe eval miniwob --model demo/model --task-text instruction \\
    --tasks {",".join(config.tasks)} --seeds 0:{config.eval_seeds}
```

## Limits

{extra_limits}- {"Tasks below 80 %: " + ", ".join(below) + "." if below else "Every task is at or above 80 %."}
- {locating}
- Built {time.strftime("%Y-%m-%d", time.gmtime())}; the initial weights come from the tiny preset's seed, but
  thread scheduling makes CPU training not bit-exact, so a rebuild gives close, not identical, numbers.
"""
    path = model_dir / CARD_FILE
    write_text_atomic(path, card)
    return path
