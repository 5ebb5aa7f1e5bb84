"""The tiny preset trains a few steps on each LLaMA-Factory and ms-swift format, as the files hold it.

Each case writes a small file in one format (with generated images and videos), points a config
at it with only ``kind`` and ``path``, and trains: every record must be kept (none skipped or
filtered), the loss must be finite, and the stage must draw its categories. The CLI case trains
on all formats at once through ``giraffe train --json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from giraffe_core.extras import is_available
from training import Trainer, load_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (is_available("accelerate") and is_available("peft")),
                                 reason="the train extra is not installed (pip install 'giraffe[train]')")]

WEATHER = {"name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def _media(folder: Path) -> None:
    """Two small images and a two-second clip under ``folder/media``."""
    av = pytest.importorskip("av")
    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (56, 56), (220, 30, 30)).save(media / "red.png")
    Image.new("RGB", (84, 56), (30, 30, 220)).save(media / "blue.png")
    with av.open(str(media / "clip.mp4"), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 56, 56, "yuv420p"
        for k in range(8):
            for packet in stream.encode(av.VideoFrame.from_image(Image.new("RGB", (56, 56), (30 * k, 0, 0)))):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _turns(*pairs: str) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(pairs)]


#: format -> (kind, file name, records, the categories they fall in)
FORMATS: dict[str, tuple[str, str, list[dict], set[str]]] = {
    "llamafactory-mllm_demo": ("llamafactory", "mllm_demo.json", [
        {"messages": _turns("<image>What colour?", "Red.", "And this one?<image>", "Blue."),
         "images": ["media/red.png", "media/blue.png"]},
        {"messages": _turns("<image>Colour?", "Red."), "images": ["media/red.png"]}], {"interleaved", "short_visual"}),
    "llamafactory-mllm_video_demo": ("llamafactory", "mllm_video_demo.json", [
        {"messages": _turns("<video>What happens?", "It turns red."), "videos": ["media/clip.mp4"]}], {"video"}),
    "llamafactory-sharegpt-tools": ("llamafactory", "glaive_toolcall.json", [
        {"conversations": [{"from": "human", "value": "Weather in Oslo?"},
                           {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'},
                           {"from": "observation", "value": '{"temp_c": 3}'}, {"from": "gpt", "value": "3 °C."}],
         "system": "You help with weather.", "tools": json.dumps([WEATHER])}], {"long_text"}),
    "llamafactory-alpaca": ("llamafactory", "alpaca_images.json", [
        {"instruction": "<image>Name the colour.", "input": "", "output": "Red.", "images": ["media/red.png"]}],
        {"short_visual"}),
    "llamafactory-v1-parts": ("llamafactory", "v1_multimodal_demo.jsonl", [
        {"messages": [{"role": "user", "content": [{"type": "image_url", "value": "media/blue.png"},
                                                   {"type": "text", "value": "Colour?"}], "loss_weight": 0.0},
                      {"role": "assistant", "content": [{"type": "text", "value": "Blue."}], "loss_weight": 1.0}]}],
        {"short_visual"}),
    "swift-images-and-video": ("swift", "swift_mm.jsonl", [
        {"messages": [{"role": "system", "content": "Compare."},
                      *_turns("<image>this, <video> that, <image> again?", "Red, fading, blue.")],
         "images": ["media/red.png", "media/blue.png"], "videos": ["media/clip.mp4"]}], {"video"}),
    "swift-agent": ("swift", "swift_agent.jsonl", [
        {"tools": [{"type": "function", "function": WEATHER}],
         "messages": [{"role": "user", "content": "<image>Weather where this flag is?"},
                      {"role": "tool_call", "content": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'},
                      {"role": "tool_response", "content": '{"temp_c": 3}'}, {"role": "assistant", "content": "3 °C."}],
         "images": ["media/red.png"]}], {"short_visual"}),
    "swift-grounding": ("swift", "swift_grounding.jsonl", [
        {"messages": _turns("<image>Find <ref-object>", "<bbox>"), "images": ["media/blue.png"],
         "objects": {"ref": ["the square"], "bbox": [[10, 5, 70, 50]]}},
        {"messages": _turns("<image><ref-object> and <ref-object>", "<bbox> <bbox>"), "images": ["media/blue.png"],
         "objects": {"ref": ["left", "right"], "bbox": [[0, 0, 0.5, 1], [0.5, 0, 1, 1]], "bbox_type": "norm1"}}],
        {"short_visual"}),
    "qwen-typed-parts": ("swift", "qwen_parts.jsonl", [
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "media/red.png"},
                                                   {"type": "image_url", "image_url": {"url": "media/blue.png"}},
                                                   {"type": "text", "text": "Which is wider?"}]},
                      {"role": "assistant", "content": "The second."}]}], {"interleaved"}),
}


def write_format(folder: Path, name: str) -> tuple[dict, set[str], int]:
    """Write one format's file; returns its source entry, categories and record count."""
    kind, file_name, records, categories = FORMATS[name]
    path = folder / file_name
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=2, ensure_ascii=False))
    return {"kind": kind, "path": str(path), "fps": 2, "max_frames": 4}, categories, len(records)


def config_for(out: Path, sources: list[dict], categories: set[str], steps: int) -> dict:
    return {"output_dir": str(out), "model": {"name": "tiny"},
            "data": {"sources": sources, "ratios": {c: 1 / len(categories) for c in sorted(categories)},
                     "long_share": None, "concatenate": []},
            "stages": [{"length_tokens": 1024, "steps": steps}], "tune": {"method": "full"},
            "optim": {"learning_rate": 1e-3}, "gradient_checkpointing": False, "tensorboard": False,
            "save_every_steps": 1000, "log_every_steps": 1000}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_tiny_preset_trains_on_each_format(tmp_path, name):
    _media(tmp_path)
    source, categories, count = write_format(tmp_path, name)
    trainer = Trainer(load_config(config_for(tmp_path / "out", [source], categories, steps=3)))
    result = trainer.fit()
    data = trainer.report.data
    label = Path(source["path"]).name
    assert data["kept"] == {label: count} and data["skipped"] == [] and data["filtered"] == []
    assert set(trainer.report.stages[0].shares) == categories
    assert result.steps == 3 and len(result.losses) == 3 and all(math.isfinite(x) for x in result.losses)


def test_giraffe_train_json_on_every_format_at_once(tmp_path):
    from giraffe_cli.app import app

    _media(tmp_path)
    sources, categories, total = [], set(), 0
    for name in sorted(FORMATS):
        source, found, count = write_format(tmp_path, name)
        sources.append(source)
        categories |= found
        total += count
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(config_for(tmp_path / "out", sources, categories, steps=4)))
    result = CliRunner().invoke(app, ["train", str(config), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 4 and math.isfinite(summary["last_loss"])
    report = json.loads((tmp_path / "out" / "mix_report.json").read_text())
    assert sum(report["data"]["kept"].values()) == total and report["data"]["skipped"] == []
    assert set(report["stages"][0]["shares"]) == categories
