"""The trainer (:mod:`training.trainer`) and ``giraffe train`` on the tiny preset, on CPU.

References: a learnable task generated here (a coloured square, "what colour?"): the loss must
fall by at least half and the trained model must answer held-out images better than the untrained
one (exact match of greedy answers); the tiny preset's own initial weights (the frozen vision
tower and merger must be unchanged after training); an uninterrupted run of the same config (a
run SIGKILLed after a checkpoint and resumed must give the same losses); TensorBoard's own event
reader; ``giraffe_core.load`` on the saved model.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from browser_fixtures import requires_browser
from cli_result import reported_error
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from giraffe_core.engine import load, tiny_model
from giraffe_core.errors import ConfigError
from giraffe_core.extras import is_available
from training import Trainer, load_config
from training.errors import CheckpointError

pytestmark = pytest.mark.skipif(not (is_available("accelerate") and is_available("peft")),
                                reason="the train extra is not installed (pip install 'giraffe[train]')")

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 30), "blue": (30, 30, 220), "yellow": (230, 210, 20)}
QUESTION = "What colour is the square?"


def square(rng: random.Random) -> tuple[Image.Image, str]:
    """A 56x56 image (4 visual tokens) with one square of a random colour, size and place."""
    name = rng.choice(sorted(COLOURS))
    image = Image.new("RGB", (56, 56), (245, 245, 245))
    x, y, side = rng.randint(0, 20), rng.randint(0, 20), rng.randint(20, 34)
    ImageDraw.Draw(image).rectangle([x, y, x + side, y + side], fill=COLOURS[name])
    return image, name


def colour_dataset(folder: Path, count: int, seed: int = 0) -> Path:
    """A LLaVA-style JSON file of ``count`` coloured squares."""
    rng = random.Random(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        image, name = square(rng)
        image.save(folder / "img" / f"{i}.png")
        records.append({"id": str(i), "image": f"img/{i}.png", "conversations": [
            {"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": name}]})
    path = folder / "colours.json"
    path.write_text(json.dumps(records))
    return path


def config_dict(out: Path, data: Path, **changes) -> dict:
    base = {"output_dir": str(out),
            "data": {"sources": [{"kind": "llava", "path": str(data)}], "ratios": {"short_visual": 1.0},
                     "long_share": None, "concatenate": []},
            "stages": [{"length_tokens": 256, "steps": 30}],
            "optim": {"learning_rate": 2e-3, "warmup_steps": 2}, "gradient_checkpointing": False,
            "save_every_steps": 1000, "tensorboard": False, "log_every_steps": 1000}
    base.update(changes)
    return base


def accuracy(engine, count: int = 16) -> float:
    rng = random.Random(12345)  # held out: images the training set never had
    right = 0
    for _ in range(count):
        image, name = square(rng)
        chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}]
        right += engine.generate(chat, max_new_tokens=3).text.strip() == name
    return right / count


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    return colour_dataset(tmp_path_factory.mktemp("colours"), 48)


@pytest.mark.slow
def test_learnable_task_halves_the_loss_and_beats_the_untrained_model(tmp_path, colours):
    # a from-scratch tiny model: the vision tower and merger train too
    config = load_config(config_dict(tmp_path / "out", colours, stages=[{"length_tokens": 512, "steps": 60}],
                                     tune={"method": "full", "train_vision": True, "train_merger": True}))
    trainer = Trainer(config)
    result = trainer.fit()
    assert result.completed and result.steps == 60 and len(result.losses) == 60
    assert sum(result.losses[-3:]) / 3 <= 0.5 * result.losses[0]
    trained = trainer.engine()
    trained.model.eval()
    untrained = accuracy(load("tiny"))
    # better than the untrained model, and than always naming one colour (1 in 4): it looks at the image
    assert accuracy(trained) > max(untrained, 0.25)


@pytest.mark.slow
def test_frozen_tower_and_resume_after_sigkill_continue_the_same_curve(tmp_path, colours):
    stages = [{"length_tokens": 256, "steps": 3}, {"length_tokens": 8192, "steps": 3}]  # 8192: M-RoPE++ factor 2
    common = {"stages": stages, "save_every_steps": 2, "tune": {"lora_r": 4, "lora_alpha": 8}}
    straight = load_config(config_dict(tmp_path / "straight", colours, tensorboard=True, **common))
    trainer = Trainer(straight)
    result = trainer.fit()
    assert result.completed and len(result.losses) == 6 and result.losses[-1] < result.losses[0]

    # the vision tower and merger are frozen: their weights are the tiny preset's own
    initial = tiny_model().state_dict()
    model = trainer.trained_model().get_base_model()
    visual = {k: v for k, v in model.state_dict().items() if ".visual." in k and "lora_" not in k}
    assert visual and all(torch.equal(v, initial[k]) for k, v in visual.items())
    # the adapters trained and were merged into the projections they target; nothing else moved
    weights = model.state_dict()
    merged = [k for k in weights if k.endswith("q_proj.weight") and ".language_model." in k]
    assert merged and all(not torch.equal(weights[k], initial[k]) for k in merged)
    assert torch.equal(weights["model.language_model.embed_tokens.weight"],
                       initial["model.language_model.embed_tokens.weight"])

    # the last stage set M-RoPE++ for 8192 tokens, and the saved model loads with it
    saved = load(result.model_dir)
    assert saved.rope_parameters["rope_type"] == "mrope_plus_plus" and saved.rope_parameters["factor"] == 2.0
    assert (result.model_dir / "adapter" / "adapter_config.json").is_file()

    # TensorBoard has a loss point for every step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in (tmp_path / "straight" / "tensorboard").rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]

    # the same run in a child process, SIGKILLed after its first checkpoint, then resumed here
    killed = config_dict(tmp_path / "killed", colours, **common)
    child = textwrap.dedent(f"""
        import time, sys
        from training import Trainer, load_config
        config = load_config({killed!r})
        Trainer(config, callbacks=[lambda info: time.sleep(1.0)]).fit()
        print("finished", flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    first = tmp_path / "killed" / "checkpoints" / "step-000002"
    deadline = time.monotonic() + 120
    while not first.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    out, err = process.communicate()
    assert first.is_dir(), f"no checkpoint before the kill: {err.decode()[-2000:]}"
    assert b"finished" not in out and not (tmp_path / "killed" / "final").exists()
    resumed = Trainer(load_config(killed)).fit(resume=True)
    assert resumed.completed and resumed.steps == 6
    assert resumed.losses == pytest.approx(result.losses, rel=1e-6)


def _first_step_gradients(out: Path, data: Path, **changes) -> dict[str, torch.Tensor]:
    """Gradients the optimizer sees at step 1 (read by a torch optimizer pre-step hook)."""
    config = load_config(config_dict(out, data, stages=[{"length_tokens": 512, "steps": 1}],
                                     tune={"method": "full"}, optim={"learning_rate": 1e-3}, **changes))
    trainer = Trainer(config)
    trainer.setup()
    names = {id(p): n for n, p in trainer.trained_model().named_parameters()}
    seen: dict[str, torch.Tensor] = {}

    def grab(optimizer, args, kwargs) -> None:
        for group in optimizer.param_groups:
            seen.update({names[id(p)]: p.grad.clone() for p in group["params"] if p.grad is not None})

    trainer.optimizer.optimizer.register_step_pre_hook(grab)
    trainer.fit()
    return seen


@pytest.mark.slow
def test_accumulation_and_packing_do_not_change_the_gradient(tmp_path):
    data = colour_dataset(tmp_path / "four", 4, seed=3)
    one_batch = _first_step_gradients(tmp_path / "a", data, packing=False, batch_samples=4)
    accumulated = _first_step_gradients(tmp_path / "b", data, packing=False, batch_samples=2,
                                        gradient_accumulation_steps=2)
    packed = _first_step_gradients(tmp_path / "c", data)  # one packed row of the four samples
    assert one_batch and one_batch.keys() == accumulated.keys() == packed.keys()
    for name, grad in one_batch.items():
        torch.testing.assert_close(accumulated[name], grad, rtol=1e-4, atol=1e-7, msg=name)
        torch.testing.assert_close(packed[name], grad, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.slow
def test_cli_trains_reports_and_resumes(tmp_path, colours):
    from giraffe_cli.app import app

    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(config_dict(tmp_path / "cli", colours, stages=[{"length_tokens": 256, "steps": 2}],
                                             save_every_steps=1)))
    runner = CliRunner()
    report = runner.invoke(app, ["train", str(config), "--report-only", "--json"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.output)["stages"][0]["shares"] == {"short_visual": 1.0}
    first = runner.invoke(app, ["train", str(config), "--max-steps", "1", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["steps"] == 1 and not json.loads(first.output)["completed"]
    rest = runner.invoke(app, ["train", str(config), "--resume"])  # the progress bar's path
    assert rest.exit_code == 0, rest.output
    assert (tmp_path / "cli" / "final" / "config.json").is_file()
    assert (tmp_path / "cli" / "checkpoints" / "step-000002").is_dir()  # both steps, the second resumed
    assert len((tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()) == 2
    again = runner.invoke(app, ["train", str(config)])  # a fresh start would overwrite the run
    assert again.exit_code == 2 and isinstance(reported_error(again), CheckpointError)
    missing = runner.invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and isinstance(reported_error(missing), ConfigError)
    assert "Traceback" not in again.output + missing.output


def test_each_stage_draws_its_samples_with_its_own_ratios(tmp_path, colours):
    """A curriculum: the first stage only text, the second the mixture's half and half."""
    from giraffe_cli.app import app

    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": str(i)}) + "\n" for i in range(48)))
    data = {"sources": [{"kind": "llava", "path": str(colours)}, {"kind": "long_text", "path": str(texts)}],
            "ratios": {"short_visual": 0.5, "long_text": 0.5}, "long_share": None, "concatenate": []}
    stages = [{"length_tokens": 256, "steps": 1, "ratios": {"long_text": 1.0}}, {"length_tokens": 256, "steps": 1}]
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({**config_dict(tmp_path / "out", colours, stages=stages), "data": data}))
    report = CliRunner().invoke(app, ["train", str(config), "--report-only", "--json"])
    assert report.exit_code == 0, report.output
    shares = [stage["shares"] for stage in json.loads(report.output)["stages"]]
    assert shares == [{"long_text": 1.0}, {"long_text": 0.5, "short_visual": 0.5}]


@pytest.mark.slow
@requires_browser
@pytest.mark.skipif(not is_available("miniwob"), reason="needs the MiniWoB++ pages (pip install 'giraffe[miniwob]')")
def test_the_finetuning_example_records_and_trains(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "finetune_on_trajectories.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("reward 1.0") == 5
    line = next(li for li in done.stdout.splitlines() if " steps: loss " in li)
    first, last = (float(v) for v in line.split("loss ")[1].split(";")[0].split(" -> "))
    assert last < 0.75 * first
    assert (tmp_path / "runs" / "tiny-cpu" / "final" / "config.json").is_file()
