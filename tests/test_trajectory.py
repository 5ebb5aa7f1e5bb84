"""Run directories (:mod:`giraffe_agent.trajectory`): round trips, crash safety, atomic files,
redaction, and the stored context rebuilding the model's exact token sequence.

References: the objects written (records compare equal after a round trip); a child process killed
with SIGKILL while it writes (every step it reported complete is read back intact, at most one
partial line is skipped); ``layout_chat`` on the ORIGINAL rendered context (the stored one must
rebuild identical ``input_ids`` and position ids, also from a copy of the run directory).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from giraffe_agent.actions import Click, Type
from giraffe_agent.backends.base import Completion
from giraffe_agent.envs.base import ActResult, Observation
from giraffe_agent.report import write_report
from giraffe_agent.trajectory import (
    ParseInfo,
    RunMeta,
    RunResult,
    RunWriter,
    StepRecord,
    StoredContext,
    Timings,
    TrajectoryError,
    context_messages,
    read_run,
)
from giraffe_core.frames import layout_chat
from giraffe_core.memory import MemoryConfig, TimelineMemory
from giraffe_core.samples import screenshot

ROOT = Path(__file__).resolve().parents[1]
#: small tiers so that a few steps cover full, low, text and evicted frames
CONFIG = MemoryConfig(budget_tokens=2000, reserve_tokens=64, full_max_tokens=48, low_max_tokens=12,
                      full_frames=2, low_frames=2, text_frames=2, block_frames=1)


def observe(step: int, title: str = "Shop") -> Observation:
    """A synthetic observation: 320x200 CSS px at device scale 1."""
    return Observation(image=screenshot(320, 200, title=f"{title} {step}", seed=step), viewport_css=(320, 200),
                       device_scale_factor=1.0, wall_time=1000.0 + step, url=f"http://127.0.0.1:9/page{step}",
                       title=f"{title} {step}", events=[f"blocked request {step}"] if step % 2 else [])


def record_episode(engine, run: RunWriter, steps: int, *, zoom_at: int | None = None,
                   outputs: dict[int, str] | None = None) -> list:
    """Drive a memory and write one StepRecord per step (like the loop does); returns the contexts."""
    memory = TimelineMemory.for_engine(engine, CONFIG, store=run.frames_dir)
    memory.add_text("system", "You are a web agent.", wall_time=1000.0)
    memory.add_text("task", "Buy the blue shirt.", wall_time=1000.0)
    contexts = []
    for step in range(steps):
        obs = observe(step)
        memory.add_frame(obs.image, step=step, url=obs.url, title=obs.title, wall_time=obs.wall_time)
        if zoom_at is not None and step == zoom_at:
            memory.zoom(0, box=(0, 0, 160, 100), step=step, wall_time=obs.wall_time)
        context = memory.render()
        contexts.append(context)
        transform = obs.transform(context.layout.plan.frames[-1].size)
        action = Click(x=100 * step, y=500)
        raw = (outputs or {}).get(step, f'{{"action": "click", "x": {100 * step}, "y": 500}}')
        run.append_step(StepRecord.build(
            run.directory, step=step, raw_output=raw, parse=ParseInfo(ok=True, style="json"),
            context=context, frames=memory.frames, action=action, result=ActResult(True, f"clicked {step}"),
            observation=obs, transform=transform,
            completion=Completion(raw, context.token_count, 7, 3 * step),
            timings=Timings(model_s=0.5, act_s=0.25, step_s=1.0)))
        memory.add_text("model", raw, step=step, wall_time=obs.wall_time)
        memory.set_action(raw)
    return contexts


# --------------------------------------------------------------------------------------------------
# round trip and the exact context
# --------------------------------------------------------------------------------------------------


def test_round_trip_of_meta_steps_and_result(tiny_engine, tmp_path):
    out = tmp_path / "run"
    with RunWriter.create(out) as run:
        meta = RunMeta(task="Buy the blue shirt.", start_url="http://127.0.0.1:9/", backend="scripted",
                       config={"memory": CONFIG.model_dump(), "loop": {"max_steps": 4}})
        run.write_meta(meta)
        record_episode(tiny_engine, run, 4)
        written = read_run(out).steps
        result = RunResult.from_steps(written, status="done", answer="bought", total_s=4.5)
        run.write_result(result)
    back = read_run(out)
    assert back.meta == meta and back.result == result and back.skipped_lines == 0
    assert back.steps == written and [r.step for r in back.steps] == [0, 1, 2, 3]
    assert result.steps == 4 and result.completion_tokens == 28 and result.reused_tokens == 3 * (0 + 1 + 2 + 3)
    assert result.prompt_tokens == sum(r.context.token_count for r in back.steps)
    assert result.tokens_per_tier["full"] == sum(r.tokens.tiers["full"] for r in back.steps)
    assert result.durations.model_s == pytest.approx(2.0) and result.durations.act_s == pytest.approx(1.0)
    last = back.steps[-1]
    assert last.action == Click(x=300, y=500).model_dump(mode="json")
    assert last.result.ok and last.result.message == "clicked 3"
    assert last.url == "http://127.0.0.1:9/page3" and last.title == "Shop 3" and last.events == ["blocked request 3"]
    assert last.frame_id == "f00003" and last.frame_path.startswith("frames/f00003-")
    assert last.transform.viewport_css == (320, 200)
    assert last.transform.image_px == last.frames[-1].size
    # tiers at step 3 with 2 full frames: frames shown are the full and low ones, with their ids
    assert [f.tier for f in last.frames] == ["low", "low", "full", "full"]
    assert [f.id for f in last.frames] == ["f00000", "f00001", "f00002", "f00003"]
    assert all(not Path(f.path).is_absolute() and (out / f.path).is_file() for r in back.steps for f in r.frames)
    assert last.tokens.frames_per_tier == {"full": 2, "low": 2, "text": 0, "evicted": 0}
    assert last.tokens.prompt == last.context.token_count and last.tokens.completion == 7


def test_context_messages_rebuild_the_exact_input_ids(tiny_engine, tmp_path):
    out = tmp_path / "run"
    with RunWriter.create(out) as run:
        run.write_meta(RunMeta(task="t", backend="scripted"))
        contexts = record_episode(tiny_engine, run, 24, zoom_at=21)
    # the episode covers every tier and a zoom-back
    tiers = {tier for context in contexts for tier in context.record.tiers.values()}
    assert tiers == {"full", "low", "text", "evicted"}
    assert "zoom of step 0" in contexts[21].layout.text
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)  # relative frame paths: the copy is as good as the original
    for directory in (out, moved):
        steps = read_run(directory).steps
        assert len(steps) == len(contexts)
        for record, context in zip(steps, contexts):
            messages = context_messages(record, directory)
            assert all(Path(p["image"]).is_relative_to(directory.resolve())
                       for m in messages if not isinstance(m["content"], str) for p in m["content"] if "image" in p)
            layout = layout_chat(tiny_engine.processor, messages, tiny_engine.tokens,
                                 add_generation_prompt=record.context.add_generation_prompt)
            assert torch.equal(layout.input_ids, context.layout.input_ids)
            assert torch.equal(layout.position_ids, context.layout.position_ids)
            assert layout.num_tokens == record.context.token_count
    # the stored image parts keep the memory's tier, budget and key, with a relative path
    stored = read_run(out).steps[-1].context.messages
    parts = [p for m in stored if not isinstance(m["content"], str) for p in m["content"] if p.get("type") == "image"]
    original = [p for p in contexts[-1].layout.parts]
    assert [{k: v for k, v in p.items() if k != "image"} for p in parts] == \
        [{k: v for k, v in p.items() if k != "image"} for p in original]
    assert all(p["image"].startswith("frames/") for p in parts)


def test_images_outside_the_run_are_copied_in(tiny_engine, tmp_path):
    memory = TimelineMemory.for_engine(tiny_engine, CONFIG, store=tmp_path / "elsewhere")
    memory.add_text("task", "look")
    memory.add_frame(screenshot(300, 180, seed=4), step=0)
    context = memory.render()
    (tmp_path / "run" / "frames").mkdir(parents=True)
    stored = StoredContext.from_rendered(context, tmp_path / "run")
    images = [p["image"] for m in stored.messages if not isinstance(m["content"], str) for p in m["content"]
              if "image" in p]
    assert len(images) == 1 and images[0].startswith("frames/ext-") and (tmp_path / "run" / images[0]).is_file()
    layout = layout_chat(tiny_engine.processor, context_messages(stored, tmp_path / "run"), tiny_engine.tokens)
    assert torch.equal(layout.input_ids, context.layout.input_ids)


def test_context_messages_refuses_missing_and_escaping_frames(tmp_path):
    (tmp_path / "frames").mkdir()
    stored = StoredContext(messages=[{"role": "user", "content": [{"type": "image", "image": "frames/nope.png"}]}],
                           token_count=10)
    with pytest.raises(TrajectoryError, match="missing"):
        context_messages(stored, tmp_path)
    (tmp_path.parent / "outside.png").write_bytes(b"x")
    stored.messages[0]["content"][0]["image"] = "../outside.png"
    with pytest.raises(TrajectoryError, match="outside"):
        context_messages(stored, tmp_path)
    with pytest.raises(TrajectoryError, match="no rendered context"):
        context_messages(StepRecord(step=0, raw_output="", parse=ParseInfo(ok=False)), tmp_path)


# --------------------------------------------------------------------------------------------------
# crash safety
# --------------------------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    from giraffe_agent.trajectory import ParseInfo, RunMeta, RunResult, RunWriter, StepRecord

    def payload(i):
        return (f"step {i} " + "abcdefghij" * (20000 + 3000 * (i % 5)))

    run = RunWriter.create(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        run.write_meta(RunMeta(task="crash " * (5000 + 1000 * (i % 3)), backend="scripted"))
        run.append_step(StepRecord(step=i, raw_output=payload(i), parse=ParseInfo(ok=True, style="json")))
        run.write_result(RunResult(status="running", steps=i + 1, answer="x" * (60000 + 20000 * (i % 4))))
        print(i, flush=True)
        i += 1
""")


def payload(i: int) -> str:
    return f"step {i} " + "abcdefghij" * (20000 + 3000 * (i % 5))


@pytest.mark.slow
def test_sigkill_mid_run_leaves_every_completed_step_readable(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    reported, reads = -1, 0
    try:
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while reported < 25:
            assert time.monotonic() < deadline and child.poll() is None, "the child stopped writing"
            reported = int(child.stdout.readline())
            # a reader racing the writer never sees partial JSON in meta.json or result.json
            for name, model in (("meta.json", RunMeta), ("result.json", RunResult)):
                model.model_validate_json((out / name).read_bytes())
                reads += 1
        time.sleep(0.003)  # land the kill somewhere inside the next iteration's writes
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest = child.communicate(timeout=30)[0].split()  # what it reported while we were reading
    assert child.returncode == -signal.SIGKILL and reads >= 50
    reported = max([reported, *map(int, rest)])  # the last step the child knew complete
    run = read_run(out)
    assert reported + 1 <= len(run.steps) <= reported + 2
    for i, record in enumerate(run.steps):
        assert record.step == i and record.raw_output == payload(i)
    tail_partial = not (out / "trajectory.jsonl").read_bytes().endswith(b"\n")
    assert run.skipped_lines == int(tail_partial) <= 1
    if tail_partial:
        assert "incomplete last line" in run.warnings[0]
    assert reported + 1 <= run.result.steps <= reported + 2  # the old result or the new one, whole
    assert run.meta.backend == "scripted"


def test_a_truncated_last_line_is_skipped_and_reported(tmp_path):
    out = tmp_path / "run"
    with RunWriter.create(out) as run:
        run.write_meta(RunMeta(task="t", backend="scripted"))
        for i in range(3):
            run.append_step(StepRecord(step=i, raw_output=f"out {i} · ünïcode", parse=ParseInfo(ok=True)))
    path = out / "trajectory.jsonl"
    full = path.read_bytes()
    last = full.rstrip(b"\n").rsplit(b"\n", 1)[1]
    for cut in (1, len(last) // 2, len(last) - 1):  # a crash anywhere inside the last line
        path.write_bytes(full[:len(full) - len(last) - 1] + last[:cut])
        back = read_run(out)
        assert [r.step for r in back.steps] == [0, 1] and back.skipped_lines == 1
        assert "line 3" in back.warnings[0] and back.result is None
    # a line that ends mid-way in a multi-byte character is skipped the same way
    cut = last.index("ü".encode()) + 1
    path.write_bytes(full[:len(full) - len(last) - 1] + last[:cut])
    assert read_run(out).skipped_lines == 1
    # a corrupt line before the last cannot come from a crash: strict refuses, lenient skips it
    lines = full.split(b"\n")
    lines[1] = lines[1][:20]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(TrajectoryError, match="line 2"):
        read_run(out)
    lenient = read_run(out, strict=False)
    assert [r.step for r in lenient.steps] == [0, 2] and lenient.skipped_lines == 1


def test_writer_refuses_an_existing_run_and_writes_after_close(tmp_path):
    out = tmp_path / "run"
    run = RunWriter.create(out)
    run.write_meta(RunMeta(task="t", backend="b"))
    run.close()
    run.close()  # twice is fine
    with pytest.raises(TrajectoryError, match="closed"):
        run.append_step(StepRecord(step=0, raw_output="", parse=ParseInfo(ok=False)))
    with pytest.raises(TrajectoryError, match="already holds a run"):
        RunWriter.create(out)
    with pytest.raises(TrajectoryError, match="not a run directory"):
        read_run(tmp_path)
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files behind


def test_records_refuse_unknown_fields():
    with pytest.raises(ValueError, match="extra"):
        StepRecord.model_validate({"step": 0, "raw_output": "", "parse": {"ok": True}, "surprise": 1})
    with pytest.raises(ValueError, match="extra"):
        RunMeta.model_validate({"task": "t", "backend": "b", "colour": "blue"})


# --------------------------------------------------------------------------------------------------
# redaction
# --------------------------------------------------------------------------------------------------


def test_redaction_reaches_every_file_of_the_run(tiny_engine, tmp_path):
    secret = "hunter2-s3cr3t"

    def redact(text: str) -> str:
        return text.replace(secret, "[REDACTED:password]")

    out = tmp_path / "run"
    with RunWriter.create(out, redact=redact) as run:
        run.write_meta(RunMeta(task=f"log in with {secret}", start_url=f"http://127.0.0.1:9/?p={secret}",
                               backend="scripted", config={"safety": {secret: secret, "list": [secret]}}))
        record_episode(tiny_engine, run, 2, outputs={1: f'{{"action": "type", "text": "{secret}"}}'})
        record = StepRecord(step=2, raw_output=secret, parse=ParseInfo(ok=False, error=f"bad {secret}"),
                            action=Type(text=secret).model_dump(mode="json"), url=f"http://x/{secret}",
                            title=secret, events=[f"blocked {secret}"])
        run.append_step(record)
        run.write_result(RunResult(status="done", answer=f"typed {secret}", error=secret, steps=3))
    write_report(out)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"meta.json", "trajectory.jsonl", "result.json", "report.html"}
    for path in files:
        assert secret.encode() not in path.read_bytes(), f"{path.name} leaks the secret"
    back = read_run(out)
    assert back.meta.task == "log in with [REDACTED:password]"
    mark = "[REDACTED:password]"
    assert back.meta.config["safety"] == {mark: mark, "list": [mark]}
    assert back.steps[1].raw_output == '{"action": "type", "text": "[REDACTED:password]"}'
    assert back.steps[2].action["text"] == "[REDACTED:password]"
    assert back.steps[2].events == ["blocked [REDACTED:password]"]
    assert back.result.answer == "typed [REDACTED:password]"
    assert "[REDACTED:password]" in (out / "report.html").read_text()


def test_meta_and_result_files_are_plain_json(tmp_path):
    out = tmp_path / "run"
    with RunWriter.create(out) as run:
        run.write_meta(RunMeta(task="t", backend="b", config={"a": 1}))
        run.write_result(RunResult(status="failed", error="boom"))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["task"] == "t" and meta["config"] == {"a": 1} and meta["giraffe_version"] and meta["started_at"] > 0
    assert json.loads((out / "result.json").read_text())["status"] == "failed"
    assert (out / "frames").is_dir() and (out / "trajectory.jsonl").read_bytes() == b""
