"""Build the demo model end to end with the SDK itself: record, train, evaluate, write the card.

What :func:`build_demo` does (``giraffe build-demo``), each step resumable:

1. **Record** scripted demonstrations of every task (:data:`DEMO_TASKS`) on the training seeds
   (``TRAIN_SEED_BASE`` and up) with ``giraffe run --miniwob TASK --demonstrator --seeds A:B``: the
   demonstrator reads the DOM, the recorded contexts hold only what the student will see
   (screenshot, the page's instruction, its own earlier actions). Tasks record in parallel, one
   ``giraffe run`` process each (``jobs`` at a time). ``OUT/recordings/TASK/seed-N/``.
2. **Train** the tiny preset from scratch with :class:`training.Trainer` on those runs, under
   ``demo/train.yaml`` (everything trains: nothing is pretrained). ``OUT/train/final/``.
3. **Evaluate** the trained model as the agent's local backend, from the screenshot and the task
   text alone (no DOM), on seeds it never saw (0 .. ``eval_seeds`` - 1), scored by MiniWoB's own
   reward through :func:`evals.run_miniwob`. ``OUT/eval/results.json``.
4. **Model card**: ``OUT/model/`` holds the model, its ``agent_config.json`` and ``README.md``
   (data, tasks, results, limits); ``ship=True`` also copies it to ``demo/model/``, the model
   ``giraffe demo`` runs.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from demo.card import write_model_card
from giraffe_agent.loop import AGENT_CONFIG_FILE, load_agent_config
from giraffe_agent.trajectory import set_aside, write_json_atomic

__all__ = ["AGENT_CONFIG_PATH", "BuildResult", "DEMO_TASKS", "DemoConfig", "MODEL_DIR", "TRAIN_CONFIG_PATH",
           "TRAIN_SEED_BASE", "build_demo", "write_copy_exercises"]

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
#: the shipped demo model (``giraffe demo`` runs it)
MODEL_DIR = HERE / "model"
#: the loop settings the demo model is trained and run with (short system prompt, newest frame only)
AGENT_CONFIG_PATH = HERE / AGENT_CONFIG_FILE
#: the training recipe of the demo model
TRAIN_CONFIG_PATH = HERE / "train.yaml"
#: MiniWoB++ tasks the demo model learns: forms it fills in with the keyboard, copying the values
#: from the task text (see the model card)
DEMO_TASKS: tuple[str, ...] = ("login-user", "enter-password", "enter-text", "enter-text-dynamic", "focus-text")
#: training episodes use seeds from here on; evaluation uses 0 .. eval_seeds - 1, never recorded
TRAIN_SEED_BASE = 1000

Progress = Callable[[str], None]

#: per task's recordings: the demonstrator mode they were recorded in (``{"keyboard": true}``)
_MODE_FILE = "demonstrator.json"


class DemoConfig(BaseModel):
    """What :func:`build_demo` records, trains and evaluates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out_dir: Path = Field(Path("runs/demo-build"), description="everything the build writes")
    tasks: tuple[str, ...] = DEMO_TASKS
    episodes: int = Field(200, ge=1, description="recorded demonstrations per task")
    keyboard: bool = Field(True, description="the demonstrator fills in forms with the keyboard (Tab, type, "
                           "Enter) instead of clicking fields and buttons (see giraffe_agent.demonstrators)")
    eval_seeds: int = Field(50, ge=1, le=TRAIN_SEED_BASE, description="unseen evaluation seeds per task")
    jobs: int = Field(4, ge=1, description="`giraffe run` processes recording at once (mostly waiting on the browser)")
    max_steps: int = Field(8, ge=1, description="most actions per episode")
    epochs: float | None = Field(None, gt=0, description="training passes of the stages trained by epochs "
                                 "(default: demo/train.yaml's)")
    copy_steps: int | None = Field(None, ge=1, description="steps of the curriculum's first stage, copy exercises "
                                   "only (default: demo/train.yaml's)")
    ship: bool = Field(False, description="copy the model to demo/model/ (the one `giraffe demo` runs)")


@dataclass
class BuildResult:
    """Where everything went, with the numbers the model card reports.

    Attributes:
        model_dir: the trained model with its agent config and card.
        recorded: successful recorded episodes per task; ``samples``: training samples (model calls).
        train_seconds: wall time of training; ``first_loss`` / ``final_loss``: mean token loss of
            the first and last optimizer step.
        success: success rate per task on the unseen seeds, and ``"overall"``.
    """

    model_dir: Path
    recorded: dict[str, int]
    samples: int
    train_seconds: float
    first_loss: float
    final_loss: float
    success: dict[str, float | None]
    eval_dir: Path


def _record_task(task: str, config: DemoConfig, recordings: Path) -> tuple[str, int]:
    """One ``giraffe run`` process recording ``task`` on the training seeds (skips those done)."""
    out = recordings / task
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "giraffe_cli", "run", "--miniwob", task, "--demonstrator", "--no-thoughts",
               "--no-report", "--seeds", f"{TRAIN_SEED_BASE}:{TRAIN_SEED_BASE + config.episodes}",
               "--agent-config", str(AGENT_CONFIG_PATH), "--max-steps", str(config.max_steps), "--out", str(out)]
    command += ["--keyboard"] if config.keyboard else []
    with open(recordings / f"{task}.log", "ab") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"recording {task} failed (exit {done.returncode}); see {recordings / f'{task}.log'}")
    return task, _solved(out)


def _solved(task_dir: Path) -> int:
    count = 0
    for result in task_dir.glob("seed-*/result.json"):
        info = json.loads(result.read_text(encoding="utf-8")).get("info") or {}
        count += (info.get("reward") or 0) > 0
    return count


def record(config: DemoConfig, progress: Progress | None = None) -> dict[str, int]:
    """Record the demonstrations (step 1); returns the successful episodes per task."""
    recordings = config.out_dir / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    for task in config.tasks:
        for run in sorted((recordings / task).glob("seed-*")):  # an evaluation seed must never be trained on
            seed = run.name.removeprefix("seed-")
            if seed.isdigit() and int(seed) < TRAIN_SEED_BASE:
                moved = set_aside(run, recordings / "not-for-training" / task)
                logger.warning("%s: seed %s is an evaluation seed; moved to %s", task, seed, moved)
        marker = recordings / task / _MODE_FILE  # runs of the other demonstrator mode must not mix in
        mode = json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else {"keyboard": False}
        if mode.get("keyboard") != config.keyboard and any((recordings / task).glob("seed-*")):
            moved = set_aside(recordings / task, recordings / "other-mode")
            logger.warning("%s: recorded with keyboard=%s; moved to %s", task, mode.get("keyboard"), moved)
        (recordings / task).mkdir(parents=True, exist_ok=True)
        write_json_atomic(marker, {"keyboard": config.keyboard})
    recorded: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=config.jobs) as pool:
        for task, solved in pool.map(lambda t: _record_task(t, config, recordings), config.tasks):
            recorded[task] = solved
            if progress is not None:
                progress(f"recorded {task}: {solved}/{config.episodes} solved by the demonstrator")
    return recorded


_ORDINALS = ("first", "second", "third")


def write_copy_exercises(path: Path, count: int = 20000, seed: int = 0) -> Path:
    """Write ``count`` copy exercises as long-text chat JSONL, answered by the type action with one
    of the quoted values: ``Type "V".``, or 2-3 quoted values and which one to type (``The values
    are "A", "B" and "C". Type the second one.`` / ``Type the third of these values: "A", "B",
    "C".``), a third of each. Values are 3-12 letters and digits, no character twice in an exercise,
    so the only way to the answer is to copy it by content (induction).

    One value alone teaches a copy that reads from "the quoted value": a model trained on those
    then typed the password of login-user as its first character followed by the rest of the
    username (``"DH7"`` -> ``"Denda"``). Several values, the wanted one anywhere among them, leave
    copying by content as the only way (docs/decisions.md)."""
    from evals.results import write_text_atomic

    rng = random.Random(seed)
    system = json.loads(AGENT_CONFIG_PATH.read_text(encoding="utf-8"))["system_prompt"]
    lines = []
    for i in range(count):
        n = i % 3 + 1
        pool = rng.sample(string.ascii_letters + string.digits, 12 * n)
        values = ["".join(pool[12 * k: 12 * k + rng.randint(3, 12)]) for k in range(n)]
        wanted = rng.randrange(n)
        quoted = [f'"{v}"' for v in values]
        if n == 1:
            prompt = f"Type {quoted[0]}."
        elif rng.random() < 0.5:
            prompt = f"The values are {', '.join(quoted[:-1])} and {quoted[-1]}. Type the {_ORDINALS[wanted]} one."
        else:
            prompt = f"Type the {_ORDINALS[wanted]} of these values: {', '.join(quoted)}."
        reply = json.dumps({"action": "type", "text": values[wanted]})
        lines.append(json.dumps({"messages": [{"role": "system", "content": system},
                                              {"role": "user", "content": prompt + "\n"},
                                              {"role": "assistant", "content": reply}]}))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def train(config: DemoConfig, progress: Progress | None = None) -> tuple[Path, list[float], float, int]:
    """Train the tiny preset on the recordings (step 2); resumes from a checkpoint when one exists.

    Returns ``(final model directory, loss per step, training seconds, samples)``.
    """
    import yaml

    from training import Trainer, load_config

    raw = yaml.safe_load(TRAIN_CONFIG_PATH.read_text(encoding="utf-8"))
    raw["output_dir"] = str(config.out_dir / "train")
    template, *others = raw["data"]["sources"]  # the first is cloned for every task's recordings
    exercises = write_copy_exercises(config.out_dir / "copy_exercises.jsonl")
    raw["data"]["sources"] = [{**template, "path": str(config.out_dir / "recordings" / task), "name": task}
                              for task in config.tasks]
    raw["data"]["sources"] += [{**source, "path": str(exercises)} for source in others
                               if source.get("name") == "copy-exercises"]
    if config.epochs is not None:  # the stages that train by epochs (a curriculum's short stage keeps its steps)
        for stage in raw["stages"]:
            if "steps" not in stage:
                stage["epochs"] = config.epochs
    if config.copy_steps is not None and len(raw["stages"]) > 1:  # the first stage is the copy stage
        raw["stages"][0]["steps"] = config.copy_steps
    train_config = load_config(raw)

    def report(info) -> None:  # type: ignore[no-untyped-def]
        if progress is not None and (info.step % train_config.log_every_steps == 0 or info.step == info.total_steps):
            progress(f"train step {info.step}/{info.total_steps}: loss {info.loss:.4f}")

    trainer = Trainer(train_config, callbacks=[report])
    trainer.setup()
    resume = trainer.checkpoints.latest() is not None
    began = time.monotonic()
    result = trainer.fit(resume=resume)
    seconds = time.monotonic() - began
    samples = sum(stage.samples for stage in result.report.stages) if result.report else 0
    if result.model_dir is None:
        raise RuntimeError(f"training in {train_config.output_dir} did not complete")
    return result.model_dir, result.losses, seconds, samples


def evaluate(config: DemoConfig, model_dir: Path, progress: Progress | None = None):  # type: ignore[no-untyped-def]
    """Evaluate the model on the unseen seeds (step 3); returns the :class:`evals.MiniWoBReport`."""
    from evals import MiniWoBConfig, engine_backends, run_miniwob
    from giraffe_core import load

    engine = load(model_dir)
    agent = load_agent_config(model_dir)
    eval_config = MiniWoBConfig(tasks=config.tasks, seeds=tuple(range(config.eval_seeds)), max_steps=config.max_steps,
                                task_text="instruction", agent=agent, write_reports=False,
                                max_new_tokens=agent.max_new_tokens if agent else 64)

    def step(done: int, total: int, label: str) -> None:
        if progress is not None and (done % 25 == 0 or done == total):
            progress(f"evaluated {done}/{total} episodes ({label})")

    return run_miniwob(engine_backends(engine), eval_config, out_dir=config.out_dir / "eval", progress=step)


def build_demo(config: DemoConfig | None = None, progress: Progress | None = None) -> BuildResult:
    """Record, train, evaluate and write the model card (see the module docstring).

    Raises:
        RuntimeError: a recording process failed, or training did not complete.
        MissingExtraError: the ``agent``, ``miniwob`` or ``train`` extra is missing.
    """
    config = config or DemoConfig()
    began = time.monotonic()
    recorded = record(config, progress)
    final, losses, train_seconds, samples = train(config, progress)
    shutil.copyfile(AGENT_CONFIG_PATH, final / AGENT_CONFIG_FILE)
    report = evaluate(config, final, progress)
    model_dir = config.out_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(final, model_dir, ignore=shutil.ignore_patterns("adapter"))
    success = {t.task: t.success_rate for t in report.tasks} | {"overall": report.overall.success_rate}
    result = BuildResult(model_dir=model_dir, recorded=recorded, samples=samples, train_seconds=train_seconds,
                         first_loss=losses[0] if losses else float("nan"),
                         final_loss=losses[-1] if losses else float("nan"), success=success,
                         eval_dir=config.out_dir / "eval")
    write_model_card(model_dir, config, result, report)
    write_json_atomic(config.out_dir / "build.json", {
        "recorded": recorded, "samples": samples, "train_seconds": round(train_seconds, 1),
        "first_loss": result.first_loss, "final_loss": result.final_loss, "success": success,
        "total_seconds": round(time.monotonic() - began, 1)})
    if config.ship:
        if MODEL_DIR.exists():
            shutil.rmtree(MODEL_DIR)
        shutil.copytree(model_dir, MODEL_DIR)
        logger.info("shipped the demo model to %s", MODEL_DIR)
    return result
