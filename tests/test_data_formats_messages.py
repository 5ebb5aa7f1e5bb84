"""What a user bringing LLaMA-Factory / ms-swift data is told: refused records name the reason and
the kind that reads them, a source that gives nothing says why, the shipped CPU example with only
its source changed says which ratios to set, notes reach the terminal, and ``giraffe train
--json`` keeps stdout to JSON.

References: records written by the tests (each refusal with its file and line), the config
shipped in ``training/configs/tiny_cpu.yaml``, and a real DeepSpeed import (it logs to stdout).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from giraffe_cli.train_commands import library_output_to_stderr
from giraffe_core.errors import ConfigError
from giraffe_core.extras import is_available
from training.config import MixtureConfig, load_config
from training.data import DataLog, Encoder, read_llava, read_sources, read_video_qa
from training.data.formats import read_llamafactory, read_swift
from training.data.mixture import suggest_ratios
from training.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
train_extra = pytest.mark.skipif(not (is_available("accelerate") and is_available("peft")),
                                 reason="the train extra is not installed (pip install 'giraffe[train]')")


@pytest.fixture(scope="module")
def encoder(tiny_engine):
    return Encoder(tiny_engine.processor, tiny_engine.tokens)


def png(path: Path, size=(56, 56)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path.name


def write(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def chat(prompt: str = "<image>What colour?", answer: str = "Red.", **fields) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], **fields}


def reasons(reader, path: Path, **options) -> list[str]:
    log = DataLog("skip")
    reader(path, log, label=path.name, **options)
    return [p.reason for p in log.problems]


# --------------------------------------------------------------------------------------------------
# refused records
# --------------------------------------------------------------------------------------------------


def test_refused_records_say_why_and_which_kind_reads_them(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "v.mp4").write_bytes(b"")
    factory_tools = {"conversations": [{"from": "human", "value": "hi"},
                                       {"from": "function_call", "value": '{"name": "f", "arguments": {}}'},
                                       {"from": "observation", "value": "ok"}, {"from": "gpt", "value": "done"}]}
    llava = write(tmp_path / "llava.jsonl", [
        chat("<video>Why funny?", videos=["v.mp4"]),                 # LLaMA-Factory / ms-swift video record
        chat("<image>and <video>?", images=["a.png"]),              # a stray <video> tag in an image record
        {"conversations": factory_tools["conversations"]},           # LLaMA-Factory tool roles
    ])
    assert reasons(read_llava, llava) == [
        "unknown field(s): ['videos'] (LLaMA-Factory / ms-swift data: use kind: llamafactory or kind: swift)",
        "a <video> tag in a record without videos (a llava record holds images; for videos use kind: llamafactory "
        "or kind: swift)",
        "unknown role 'function_call' (use ['assistant', 'gpt', 'human', 'model', 'system', 'user']) "
        "(LLaMA-Factory data: use kind: llamafactory)"]
    factory = write(tmp_path / "factory.jsonl", [
        chat("<image>and <video>?", images=["a.png"]),
        chat("<image>Find <ref-object>", "<bbox>", images=["a.png"], objects={"ref": ["x"], "bbox": [[1, 2, 3, 4]]}),
        {"messages": [{"role": "user", "content": "hi"}, {"role": "tool_call", "content": "{}"}]},
        chat("<audio>What is said?", "Hello.", audios=["a.wav"]),
        chat(chosen="a", rejected="b"),
        chat("<image>?", "!", images=["a.png"], meta={"origin": "web"}),
        chat("Look", [{"type": "image", "image": "a.png"}]),
        chat("<image><image>", images=["a.png"]),
    ])
    assert reasons(read_llamafactory, factory) == [
        "more <video> tags than videos (0)",
        "unknown field(s): ['objects'] (ms-swift data: use kind: swift)",
        "unknown role 'tool_call' (use ['assistant', 'function_call', 'gpt', 'human', 'model', 'observation', "
        "'system', 'tool', 'user']) (ms-swift data: use kind: swift)",
        "audio is not supported: Giraffe trains on text, images and video",
        "preference data (chosen) is for RLHF; giraffe train does supervised fine-tuning: keep only the "
        "conversation to learn from",
        "unknown field(s): ['meta']",
        "an image in an assistant turn; images belong in user turns and tool responses",
        "more <image> tags than images (1)"]
    read_with_meta = reasons(read_llamafactory, factory, ignore_fields=["meta"])
    assert len(read_with_meta) == 7 and "unknown field(s): ['meta']" not in read_with_meta  # now it is read
    video_qa = write(tmp_path / "vqa.jsonl", [chat("<video>?", videos=["v.mp4"])])
    assert reasons(read_video_qa, video_qa, frames_dir=tmp_path, geometry=None)[0].endswith(
        "(LLaMA-Factory / ms-swift data: use kind: llamafactory or kind: swift)")
    with pytest.raises(DataError, match=r"factory\.jsonl:1: more <video> tags"):
        read_llamafactory(factory, DataLog("fail"), label="f")


def test_problems_are_counted_by_kind_not_by_their_details(tmp_path):
    png(tmp_path / "a.png")
    path = write(tmp_path / "l.jsonl", [chat("<image><video>?", images=["a.png"]), chat("<video>!", images=["a.png"]),
                                        chat(images=["x.png"]), chat(images=["y.png"])])
    log = DataLog("skip")
    read_llava(path, log, label="l")
    assert log.skipped == Counter({("l", "a <video> tag in a record without videos"): 2, ("l", "missing image"): 2})


def test_bad_tool_calls_and_grounding_are_reported(tmp_path):
    png(tmp_path / "a.png")
    path = write(tmp_path / "swift.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "tool_call", "content": "get_weather(Paris)"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "tool_call", "content": '{"arguments": {}}'}]},
        {"tools": "[{\"description\": \"no name\"}]", **chat("hi", "ok")},
        chat("<image>Find <ref-object>", "<bbox>", images=["a.png"], objects={"ref": ["x"], "bbox": [[3, 2, 1, 4]]}),
        chat("<image>", "ok", images=["http://example.com/a.png"]),
    ])
    assert reasons(read_swift, path) == [
        "a tool call is not valid JSON: Expecting value",
        'a tool call must be JSON {"name": ..., "arguments": {...}}, got {\'arguments\': {}}',
        "a tool must be a function definition with a name, got {'description': 'no name'}",
        "a bbox must be [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2, got [3, 2, 1, 4]",
        "remote image URL 'http://example.com/a.png': training data is read from local files only "
        "(download it and give its path)"]


# --------------------------------------------------------------------------------------------------
# a source that gives nothing; the shipped CPU example with another source
# --------------------------------------------------------------------------------------------------


def test_a_source_whose_records_are_all_skipped_says_how_many_and_why(tmp_path, encoder):
    png(tmp_path / "a.png")
    fine = write(tmp_path / "fine.jsonl", [chat(images=["a.png"])])
    broken = write(tmp_path / "mllm_video_demo.json".replace(".json", ".jsonl"),
                   [chat("<video>?", videos=[f"clips/{i}.mp4"]) for i in range(3)]
                   + [chat("<video>?", videos=["clips/0.mp4"], colour="red")])
    config = MixtureConfig(sources=[{"kind": "llamafactory", "path": str(fine)},
                                    {"kind": "llamafactory", "path": str(broken)},
                                    {"kind": "swift", "path": str(tmp_path / "nope.jsonl")}],
                           ratios={"short_visual": 0.5, "video": 0.5}, long_share=None, concatenate=[])
    with pytest.raises(ConfigError) as caught:
        read_sources(config, encoder, max_length_tokens=1024, frames_dir=tmp_path, log=DataLog("skip"))
    message = caught.value.message
    assert "categories ['video'] have a positive ratio but no usable samples" in message
    assert (f"no sample from {broken.name} (4 records read): 4 skipped as bad data, most often 'missing video' "
            f"(3 of them); first: {broken}:1: missing video: {tmp_path / 'clips' / '0.mp4'}") in message
    missing = tmp_path / "nope.jsonl"
    assert f"no sample from nope.jsonl: {missing}: no such file: {missing}" in message


def test_the_cpu_example_with_only_its_source_changed_says_which_ratios(tmp_path, encoder):
    png(tmp_path / "mllm_demo_data" / "1.png")
    demo = write(tmp_path / "mllm_demo.jsonl", [chat(images=["mllm_demo_data/1.png"])] * 3
                 + [chat("<image><image>Same?", "Yes.", images=["mllm_demo_data/1.png"] * 2)])
    shipped = load_config(ROOT / "training" / "configs" / "tiny_cpu.yaml")
    data = shipped.data.model_copy(update={"sources": MixtureConfig(
        sources=[{"kind": "llamafactory", "path": str(demo)}]).sources})
    with pytest.raises(ConfigError) as caught:
        read_sources(data, encoder, max_length_tokens=8192, frames_dir=tmp_path, log=DataLog("skip"))
    suggested = suggest_ratios(Counter({"short_visual": 3, "interleaved": 1}))
    assert suggested == {"short_visual": 0.75, "interleaved": 0.25}
    assert "categories ['trajectory'] have a positive ratio" in caught.value.message
    assert caught.value.hint == "to train on the samples read, set data.ratios: {short_visual: 0.75, interleaved: 0.25}"
    fixed = MixtureConfig.model_validate({**data.model_dump(), "ratios": suggested})
    assert len(read_sources(fixed, encoder, max_length_tokens=8192, frames_dir=tmp_path, log=DataLog("skip"))) == 4


def test_suggested_ratios_sum_to_one():
    for counts in ({"video": 1, "short_visual": 1, "long_text": 1}, {"video": 997, "long_text": 2, "interleaved": 1},
                   {"trajectory": 5}):
        ratios = suggest_ratios(Counter(counts))
        assert abs(sum(ratios.values()) - 1.0) < 1e-9 and MixtureConfig(
            sources=[{"kind": "long_text", "path": "x"}], ratios=ratios).ratios == ratios


# --------------------------------------------------------------------------------------------------
# the terminal
# --------------------------------------------------------------------------------------------------


def cli_config(tmp_path: Path, sources: list[dict], ratios: dict) -> Path:
    config = {"output_dir": str(tmp_path / "out"), "stages": [{"length_tokens": 512, "steps": 1}],
              "data": {"sources": sources, "ratios": ratios, "long_share": None, "concatenate": []},
              "gradient_checkpointing": False, "tensorboard": False, "save_every_steps": 1000}
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config))
    return path


@train_extra
def test_filter_and_skip_reasons_reach_the_terminal_and_json_stays_on_stdout(tmp_path):
    from giraffe_cli.app import app

    png(tmp_path / "a.png")
    demo = write(tmp_path / "mllm_demo.jsonl", [chat(images=["a.png"])] * 2
                 + [chat("<image><image>Same?", "Yes.", images=["a.png"] * 2)] * 2 + [chat(images=["b.png"])])
    config = cli_config(tmp_path, [{"kind": "llamafactory", "path": str(demo)}], {"short_visual": 1.0})
    runner = CliRunner()
    table = runner.invoke(app, ["train", str(config), "--report-only"])
    assert table.exit_code == 0, table.output
    notes = [line for line in table.stdout.splitlines() if line.startswith("note: ")]
    assert notes == ["note: 1 record of mllm_demo.jsonl skipped: missing image",
                     "note: 2 records of mllm_demo.jsonl left out: category interleaved has no ratio (give it a "
                     "ratio in data.ratios to train on them)"]
    as_json = runner.invoke(app, ["train", str(config), "--report-only", "--json"])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["data"]["filtered"] == [{"source": "mllm_demo.jsonl", "reason": "category interleaved has no ratio",
                                           "count": 2}]
    assert [line for line in as_json.stderr.splitlines() if line.startswith("note: ")] == notes


def test_library_output_goes_to_stderr_inside_the_guard(capfd):
    noisy = logging.getLogger("test.noisy.library")
    handler = logging.StreamHandler(sys.stdout)  # as DeepSpeed's logger does
    noisy.addHandler(handler)
    noisy.propagate = False
    try:
        def speak(word: str) -> None:
            noisy.warning("%s log", word)
            print(f"{word} print")
            subprocess.run([sys.executable, "-c", f"print('{word} child')"], check=True)

        speak("outside")  # control: without the guard all three reach stdout
        with library_output_to_stderr():
            speak("inside")
        print("after")
        out, err = capfd.readouterr()
        assert sorted(out.split()) == sorted(["outside", "log", "outside", "print", "outside", "child", "after"])
        assert sorted(err.split()) == sorted(["inside", "log", "inside", "print", "inside", "child"])
        assert handler.stream is sys.stdout  # restored
    finally:
        noisy.removeHandler(handler)


@pytest.mark.slow
@train_extra
@pytest.mark.skipif(not is_available("deepspeed"), reason="DeepSpeed is not installed")
def test_train_json_prints_only_json_though_deepspeed_logs_to_stdout(tmp_path):
    """Saving the final model imports DeepSpeed (through transformers), whose logger writes its
    accelerator line to stdout; ``--json`` must keep stdout to the JSON summary."""
    png(tmp_path / "a.png")
    demo = write(tmp_path / "demo.jsonl", [chat(images=["a.png"])] * 2)
    config = cli_config(tmp_path, [{"kind": "llamafactory", "path": str(demo)}], {"short_visual": 1.0})

    def run(out: str, *flags: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "giraffe_cli", "train", str(config), "--output-dir", str(tmp_path / out),
                   *flags]
        return subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT, timeout=600)

    plain = run("plain")  # control: without the guard DeepSpeed's line reaches stdout
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "[real_accelerator.py" in plain.stdout
    quiet = run("quiet", "--json")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    summary = json.loads(quiet.stdout)
    assert summary["steps"] == 1 and summary["completed"] and Path(summary["model_dir"]).is_dir()
    assert "[real_accelerator.py" in quiet.stderr
