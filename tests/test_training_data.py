"""Training data (:mod:`training.data`): readers, labels, trajectories, the ETVLM mixture.

References: the tokenizer's own decoding of the labelled tokens (exactly the assistant replies
and their ``<|im_end|>``); the token ids the agent loop handed its backend at every step of a run
it recorded (a trajectory sample must start with them, token for token); ``plan_groups`` itself
for the tiers of video frames; hand-counted shares and lengths for the mixture; files written in
the test for line numbers.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from giraffe_agent.backends import BackendRequest, ScriptedBackend
from giraffe_agent.envs.base import ActResult, Observation
from giraffe_agent.loop import Agent, AgentConfig
from giraffe_core.extras import is_available
from giraffe_core.memory import MemoryConfig
from giraffe_core.resolution import GroupScheme, VisionGeometry, plan_groups
from giraffe_core.samples import screenshot
from training.config import MixtureConfig
from training.data import (
    IGNORE_INDEX,
    DataLog,
    Encoder,
    Example,
    MixReport,
    concatenate,
    plan_stage,
    read_hf,
    read_llava,
    read_long_text,
    read_sources,
    read_trajectories,
    read_video_qa,
)
from training.errors import DataError


@pytest.fixture(scope="module")
def encoder(tiny_engine):
    return Encoder(tiny_engine.processor, tiny_engine.tokens)


def _png(path: Path, colour=(200, 30, 30), size=(64, 48)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path.name


def _targets(encoder: Encoder, sample) -> str:
    ids = sample.labels[sample.labels != IGNORE_INDEX]
    return encoder.tokenizer.decode(ids.tolist())


# --------------------------------------------------------------------------------------------------
# readers and labels
# --------------------------------------------------------------------------------------------------


def test_llava_json_reader_labels_and_bad_records(tmp_path, encoder):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png", (30, 30, 200), (40, 80))
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    records = [
        {"id": "1", "image": "img/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes, red."}]},
        {"id": "2", "images": ["img/a.png", "img/b.png"], "conversations": [
            {"from": "human", "value": "First <image> then <image> differ how?"}, {"from": "gpt", "value": "Colour."}]},
        {"id": "3", "image": "img/missing.png", "conversations": [
            {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}]},
        {"id": "4", "image": "img/broken.png", "conversations": [
            {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}]},
        {"id": "5", "conversations": []},
        {"id": "6", "colour": "red", "conversations": [{"from": "human", "value": "hi"},
                                                       {"from": "gpt", "value": "x"}]},
        {"id": "7", "image": "img/a.png", "conversations": [
            {"from": "human", "value": "<image> and <image>"}, {"from": "gpt", "value": "x"}]},
    ]
    path = tmp_path / "data.json"
    path.write_text("[\n" + ",\n".join(json.dumps(r, indent=2) for r in records) + "\n]\n")
    starts = [2 + sum(json.dumps(r, indent=2).count("\n") + 1 for r in records[:i]) for i in range(len(records))]
    log = DataLog("skip")
    examples = read_llava(path, log, label="llava")
    assert [e.source for e in examples] == [f"{path}:{starts[0]}", f"{path}:{starts[1]}"]
    assert [e.category for e in examples] == ["short_visual", "interleaved"]
    assert log.read["llava"] == 7 and len(log.problems) == 5
    reasons = {p.line: p.reason for p in log.problems}
    assert reasons[starts[2]].startswith("missing image") and reasons[starts[3]].startswith("corrupt image")
    assert reasons[starts[4]] == "empty conversation" and "unknown field(s): ['colour']" in reasons[starts[5]]
    assert "more <image> tags than images" in reasons[starts[6]]
    # labels: exactly the assistant turns and their <|im_end|>; never image, system or user tokens
    sample = encoder.encode(examples[0])
    assert _targets(encoder, sample) == "Red.<|im_end|>Yes, red.<|im_end|>"
    assert not (sample.labels == encoder.tokens.image_token_id).any()
    assert (sample.input_ids == encoder.tokens.image_token_id).sum() == sample.image_grid_thw.prod(-1).sum() // 4
    second = encoder.encode(examples[1])
    assert len(second.image_grid_thw) == 2 and _targets(encoder, second) == "Colour.<|im_end|>"
    with pytest.raises(DataError, match=rf"{path.name}:{starts[2]}: missing image"):
        read_llava(path, DataLog("fail"), label="llava")


def test_long_text_jsonl_and_no_target(tmp_path, encoder):
    path = tmp_path / "long.jsonl"
    lines = [{"instruction": "Summarise:", "input": "lorem " * 50, "output": "Lorem."},
             {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
             {"instruction": "no output"},
             {"messages": [{"role": "user", "content": "only a question"}]}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n{broken\n")
    log = DataLog("skip")
    examples = read_long_text(path, log, label="long")
    assert [e.source.rsplit(":", 1)[1] for e in examples] == ["1", "2"]
    assert {p.line for p in log.problems} == {3, 4, 5}
    assert _targets(encoder, encoder.encode(examples[0])) == "Lorem.<|im_end|>"
    assert examples[0].category == "long_text"


@pytest.mark.skipif(not is_available("datasets"), reason="datasets is not installed (pip install 'giraffe[train]')")
def test_hugging_face_dataset_saved_to_disk(tmp_path, encoder):
    import datasets

    _png(tmp_path / "img" / "a.png")
    rows = [{"image": "img/a.png", "conversations": [{"from": "human", "value": "<image>\nColour?"},
                                                       {"from": "gpt", "value": "Red."}]},
            {"image": "img/gone.png", "conversations": [{"from": "human", "value": "<image>"},
                                                          {"from": "gpt", "value": "x"}]}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    log = DataLog("skip")
    examples = read_hf(str(tmp_path / "ds"), log, label="hf", image_root=str(tmp_path))
    assert len(examples) == 1 and log.problems[0].line == 1 and "missing image" in log.problems[0].reason
    assert _targets(encoder, encoder.encode(examples[0])) == "Red.<|im_end|>"
    # decoded images (datasets' Image feature) are used as they are
    images = datasets.Dataset.from_list([{"images": [Image.new("RGB", (56, 56), (0, 200, 0))],
                                          "messages": [{"role": "user", "content": [{"type": "image"},
                                                                                    {"type": "text", "text": "?"}]},
                                                       {"role": "assistant", "content": [{"type": "text",
                                                                                          "text": "Green."}]}]}])
    images.save_to_disk(str(tmp_path / "ds2"))
    decoded = read_hf(str(tmp_path / "ds2"), DataLog(), label="hf2")
    assert _targets(encoder, encoder.encode(decoded[0])) == "Green.<|im_end|>"


def test_video_qa_frames_tiered_and_cached(tmp_path, encoder):
    av = pytest.importorskip("av")
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 112, 84, "yuv420p"
        for k in range(12):  # 3 s at 4 fps
            for packet in stream.encode(av.VideoFrame.from_image(Image.new("RGB", (112, 84), (20 * k, 0, 0)))):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([{"video": "clip.mp4", "questions": [{"question": "What fades in?", "answer": "Red."},
                                                                    {"question": "How long?", "answer": "3 s."}]},
                                {"video": "nope.mp4", "questions": [{"question": "?", "answer": "!"}]}]))
    scheme = GroupScheme(group_size=2, high_tokens=12, ratio=3)
    geometry = VisionGeometry.from_processor(encoder.processor)
    kwargs = dict(label="video", frames_dir=tmp_path / "frames", geometry=geometry, fps=2, max_frames=5, scheme=scheme)
    log = DataLog("skip")
    (example,) = read_video_qa(path, log, **kwargs)
    assert "missing video" in log.problems[0].reason
    parts = [p for p in example.messages[0]["content"] if p["type"] == "image"]
    expected = plan_groups([(112, 84)] * len(parts), geometry, scheme)
    assert len(parts) == 5 and [p["max_tokens"] for p in parts] == [f.max_tokens for f in expected.frames]
    assert example.messages[0]["content"][0]["text"] == "[t=00:00:00]\n"
    sample = encoder.encode(example)
    assert [tuple(g) for g in sample.image_grid_thw.tolist()] == [f.grid_thw for f in expected.frames]
    assert _targets(encoder, sample) == "Red.<|im_end|>3 s.<|im_end|>"
    stamps = [Path(p["image"]).stat().st_mtime_ns for p in parts]
    again = read_video_qa(path, DataLog("skip"), **kwargs)[0]
    assert [Path(p["image"]).stat().st_mtime_ns for p in again.messages[0]["content"] if p["type"] == "image"] == stamps


# --------------------------------------------------------------------------------------------------
# trajectories: the sample for step k is exactly what the agent sent at step k
# --------------------------------------------------------------------------------------------------


class _Env:
    """A 320x200 page that changes after every action; optional reward at the end."""

    def __init__(self, reward: float | None = None) -> None:
        self.screen, self.reward = 0, reward

    def _observe(self) -> Observation:
        return Observation(image=screenshot(320, 200, title=f"Screen {self.screen}", seed=self.screen),
                           viewport_css=(320, 200), device_scale_factor=1.0, wall_time=1000.0 + self.screen,
                           url=f"http://127.0.0.1:9/{self.screen}", title=f"Screen {self.screen}",
                           info={} if self.reward is None else {"reward": self.reward})

    async def start(self) -> Observation:
        return self._observe()

    async def act(self, action, transform) -> ActResult:
        self.screen += 1
        return ActResult(True, f"did {action.action}")

    async def observe(self) -> Observation:
        await asyncio.sleep(0)
        return self._observe()

    async def close(self) -> None:
        return None


def _record(out: Path, replies: list[str], *, reward: float | None = None) -> list[torch.Tensor]:
    """Run the agent loop with scripted replies; returns the input ids the backend received per call."""
    sent: list[torch.Tensor] = []

    def script(request: BackendRequest) -> str:
        sent.append(request.context.layout.input_ids[0].clone())
        return replies[len(sent) - 1]

    memory = MemoryConfig(budget_tokens=3000, reserve_tokens=64, full_max_tokens=40, low_max_tokens=10, full_frames=2,
                          low_frames=2, text_frames=2, block_frames=1)
    agent = Agent("Open the third screen.", _Env(reward), ScriptedBackend(script),
                  out_dir=out, config=AgentConfig(memory=memory, write_report=False, max_parse_retries=1))
    agent.run()
    return sent


def test_trajectory_samples_are_the_exact_contexts_sent(tmp_path, encoder):
    replies = ['{"action": "click", "x": 100, "y": 200}', "not an action",
               '{"action": "scroll", "direction": "down", "amount": 2}', '{"action": "click", "x": 5, "y": 5}',
               '{"action": "done", "text": "there"}']
    sent = _record(tmp_path / "runs" / "ok", replies)
    _record(tmp_path / "runs" / "failed", ['{"action": "fail", "text": "cannot"}'])
    log = DataLog("skip")
    examples = read_trajectories(tmp_path / "runs", log, label="runs", include_parse_errors=True)
    assert len(examples) == len(sent) == 5
    for example, ids, reply in zip(examples, sent, replies):
        sample = encoder.encode(example)
        n = len(ids)
        assert torch.equal(sample.input_ids[:n], ids)  # token for token what the agent sent
        tail = encoder.tokenizer(reply, add_special_tokens=False)["input_ids"] + [encoder.end_id]
        assert sample.input_ids[n:].tolist() == tail and sample.labels[n:].tolist() == tail
        assert (sample.labels[:n] == IGNORE_INDEX).all()
        assert example.source.endswith(f"trajectory.jsonl:{examples.index(example) + 1}")
    assert log.filtered[("runs", "run not successful")] == 1
    # filters: parse errors out by default, a step range
    log = DataLog("skip")
    kept = read_trajectories(tmp_path / "runs" / "ok", log, label="ok", first_step=1, last_step=2)
    assert [e.completion for e in kept] == [replies[2], replies[3]]
    assert log.filtered[("ok", "reply did not parse")] == 1 and log.filtered[("ok", "outside the step range")] == 2


def test_trajectory_reward_decides_success(tmp_path):
    _record(tmp_path / "lost", ['{"action": "done", "text": "x"}'], reward=-1.0)
    _record(tmp_path / "won", ['{"action": "done", "text": "x"}'], reward=1.0)
    log = DataLog("skip")
    assert read_trajectories(tmp_path / "lost", log, label="r") == []
    assert log.filtered[("r", "run not successful")] == 1
    assert len(read_trajectories(tmp_path / "won", log, label="r")) == 1


# --------------------------------------------------------------------------------------------------
# the mixture
# --------------------------------------------------------------------------------------------------


def _synthetic(category: str, lengths: list[int]) -> list[Example]:
    return [Example([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], f"{category}:{i}",
                    category, num_tokens=n, prefix_tokens=5) for i, n in enumerate(lengths)]


def test_mixture_shares_long_share_and_held_back():
    pool = (_synthetic("long_text", [9000 + i for i in range(40)])
            + _synthetic("short_visual", [500] * 60 + [20000] * 3)
            + _synthetic("interleaved", [3000] * 40 + [12000] * 20)
            + _synthetic("video", [15000] * 50 + [6000] * 30 + [200_000] * 4))
    config = MixtureConfig(sources=[{"kind": "long_text", "path": "x"}], long_share=0.6, concatenate=[],
                           samples_per_stage=100)
    plan = plan_stage(pool, config, 131072)
    assert plan.held_back == 4 and len(plan.examples) == 100 and plan.reused == 0
    counts = {c: sum(e.category == c for e in plan.examples) for c in ("long_text", "short_visual", "interleaved",
                                                                       "video")}
    assert counts == {"long_text": 20, "short_visual": 25, "interleaved": 25, "video": 30}
    assert sum(e.num_tokens > 8192 for e in plan.examples) == 60
    report = MixReport.build([plan], config, DataLog())
    stage = report.stages[0]
    assert stage.shares == {"interleaved": 0.25, "long_text": 0.2, "short_visual": 0.25, "video": 0.3}
    assert stage.long_share == 0.6 and sum(stage.histogram.values()) == 100 and stage.held_back == 4
    # default size: as many as the scarcest category allows without reuse (long text: 40 / 0.2)
    assert len(plan_stage(pool, config.model_copy(update={"samples_per_stage": None}), 131072).examples) == 200


def test_a_stage_with_its_own_ratios_draws_a_curriculum():
    """StageConfig.ratios replace the mixture's for that stage (e.g. a first stage of copy exercises
    only), and the trainer plans each stage with its own."""
    pool = _synthetic("long_text", [100] * 300) + _synthetic("trajectory", [400] * 100)
    config = MixtureConfig(sources=[{"kind": "long_text", "path": "x"}], ratios={"long_text": 0.5, "trajectory": 0.5},
                           long_share=None, concatenate=[])
    mixed = plan_stage(pool, config, 1024, 0)
    first = plan_stage(pool, config, 1024, 0, {"long_text": 1.0})
    tilted = plan_stage(pool, config, 1024, 1, {"long_text": 0.75, "trajectory": 0.25})
    count = lambda plan, c: sum(e.category == c for e in plan.examples)  # noqa: E731
    assert (count(mixed, "long_text"), count(mixed, "trajectory")) == (100, 100)  # trajectories are scarce
    assert (count(first, "long_text"), count(first, "trajectory")) == (300, 0)
    assert (count(tilted, "long_text"), count(tilted, "trajectory")) == (300, 100)
    report = MixReport.build([first, tilted], config, DataLog())
    assert report.stages[0].shares == {"long_text": 1.0} and report.stages[1].shares["long_text"] == 0.75


def test_concatenation_joins_whole_samples_with_exact_lengths(encoder):
    chats = [Example([{"role": "user", "content": [{"type": "image", "image": screenshot(80 + 10 * i, 60, seed=i),
                                                     "max_tokens": 8}, {"type": "text", "text": f"Question {i}?"}]},
                      {"role": "assistant", "content": f"Answer {i}."}], f"s:{i}", "short_visual")
             for i in range(7)]
    for chat in chats:
        encoder.measure(chat)
    capacity = 3 * chats[0].num_tokens
    joined = concatenate(chats, capacity)
    assert 1 < len(joined) < len(chats)
    order = []
    for dialogue in joined:
        assert dialogue.num_tokens <= capacity
        assert dialogue.num_tokens == encoder.measure(Example(dialogue.messages, "", "x")).num_tokens
        order += [m["content"] for m in dialogue.messages if m["role"] == "assistant"]
        sample = encoder.encode(dialogue)
        assert _targets(encoder, sample) == "".join(f"{a}<|im_end|>" for a in order[-sum(
            m["role"] == "assistant" for m in dialogue.messages):])
    assert order == [f"Answer {i}." for i in range(7)]  # every sample, whole, in order


def test_read_sources_reports_too_long_and_counts(tmp_path, encoder):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"instruction": "word " * 400, "output": "ok"}) + "\n"
                    + json.dumps({"instruction": "short", "output": "ok"}) + "\n")
    config = MixtureConfig(sources=[{"kind": "long_text", "path": str(path)}], ratios={"long_text": 1.0},
                           long_share=None, concatenate=[])
    log = DataLog("skip")
    examples = read_sources(config, encoder, max_length_tokens=200, frames_dir=tmp_path, log=log)
    assert len(examples) == 1 and log.kept[path.name] == 1
    assert log.problems[0].line == 1 and log.problems[0].reason.startswith("too long")
    with pytest.raises(DataError, match="too long"):
        read_sources(config.model_copy(update={"on_bad_sample": "fail"}), encoder, max_length_tokens=200,
                     frames_dir=tmp_path, log=DataLog("fail"))


def test_copy_augmentation_replaces_copied_values_everywhere_and_is_deterministic():
    from training.data import copied_values, copy_variants

    image = {"type": "image", "image": "frames/f0.png", "max_tokens": 64}
    messages = [
        {"role": "system", "content": "Reply with one JSON action."},
        {"role": "user", "content": [
            {"type": "text", "text": 'Enter the username "keli" and the password "1b" and press login.\n'},
            {"type": "text", "text": '[step 0 · action: {"action": "type", "text": "keli", "x": 444, "y": 421}]\n'}]},
        {"role": "assistant", "content": '{"action": "type", "text": "keli", "x": 444, "y": 421}'},
        {"role": "user", "content": [{"type": "text", "text": "typed 'keli' at (71, 88) CSS px\n"}, image]},
    ]
    example = Example(messages, "runs/a/trajectory.jsonl:2", "trajectory",
                      completion='{"action": "type", "text": "1b", "x": 381, "y": 669}')
    assert copied_values(example) == ["keli", "1b"]  # JSON keys of the header are not the task's values
    variants = copy_variants(example, 3)
    assert [v.source for v in variants] == [f"runs/a/trajectory.jsonl:2#copy{k}" for k in (1, 2, 3)]
    assert [v.messages for v in variants] == [v.messages for v in copy_variants(example, 3)]  # deterministic
    seen = set()
    for v in variants:
        text = json.dumps(v.messages) + v.completion
        assert '"keli"' not in text and "'keli'" not in text and '"1b"' not in text
        found = re.search(r'username \\"(\w+)\\" and the password \\"(\w+)\\"', json.dumps(v.messages))
        user, password = found.groups()
        assert user.isalpha() and user.islower() and 2 <= len(user) <= 6
        assert password[0].isdigit() and 1 <= len(password) <= 4
        assert v.completion == f'{{"action": "type", "text": "{password}", "x": 381, "y": 669}}'
        assert f"typed '{user}' at" in v.messages[3]["content"][0]["text"]
        assert v.messages[3]["content"][1] == image and v.messages[0] == messages[0]
        seen.add((user, password))
    assert len(seen) == 3
    assert example.messages == messages  # the original is untouched
    plain = Example(messages[:2], "x:1", "trajectory", completion='{"action": "click", "x": 1, "y": 2}')
    plain.messages[1] = {"role": "user", "content": 'Click the "OK" button.'}
    assert copied_values(plain) == [] and copy_variants(plain, 3) == []


def test_a_value_typed_in_another_case_is_replaced_in_that_case():
    from training.data import copied_values, copy_variants

    task = {"role": "user", "content": 'Type "KELI" in all lower case letters in the text input and press Submit.\n'}
    done = [{"role": "assistant", "content": '{"action": "type", "text": "keli", "x": 1, "y": 2}'},
            {"role": "user", "content": "typed 'keli' at (1, 2) CSS px\n"}]
    example = Example([task, *done], "e:1", "trajectory", completion='{"action": "key", "keys": "Tab"}')
    assert copied_values(example) == ["KELI"]
    for variant in copy_variants(example, 4):
        new = re.search(r'Type "(\w+)"', variant.messages[0]["content"]).group(1)
        assert new.isupper() and new != "KELI"
        assert variant.messages[1]["content"] == f'{{"action": "type", "text": "{new.lower()}", "x": 1, "y": 2}}'
        assert variant.messages[2]["content"] == f"typed '{new.lower()}' at (1, 2) CSS px\n"
    mixed = Example([{"role": "user", "content": 'Type "Keli".'}], "e:2", "trajectory",
                    completion='{"action": "type", "text": "keLI"}')  # not one case throughout: not a copy
    assert copied_values(mixed) == []


def test_copy_drills_are_text_only_variants_with_new_values():
    from training.data import copy_drills, text_only

    image = {"type": "image", "image": "frames/f1.png"}
    messages = [
        {"role": "system", "content": "Reply with one JSON action."},
        {"role": "user", "content": [{"type": "text", "text": 'Enter "Kanesha" and press Submit.\n'},
                                     {"type": "text", "text": "[step 0 · t=1.4s]\n"}, image]},
        {"role": "assistant", "content": '{"action": "type", "text": "Kanesha", "x": 1, "y": 2}'},
        {"role": "user", "content": [{"type": "text", "text": "typed 'Kanesha' at (1, 2) CSS px\n"},
                                     {"type": "text", "text": "[step 1 · t=1.9s]\n"}, image]},
    ]
    example = Example(messages, "r/trajectory.jsonl:2", "trajectory", completion='{"action": "click", "x": 5, "y": 6}')
    plain = text_only(example)
    assert plain.messages == [
        messages[0], {"role": "user", "content": 'Enter "Kanesha" and press Submit.\n'}, messages[2],
        {"role": "user", "content": "typed 'Kanesha' at (1, 2) CSS px\n"}]
    assert plain.completion == example.completion and plain.source.endswith("#text")
    drills = copy_drills(example, 2)
    assert len(drills) == 2 and all("Kanesha" not in json.dumps(d.messages) for d in drills)
    assert all(not any(isinstance(m["content"], list) for m in d.messages) for d in drills)  # no screenshots
    value = re.search(r'Enter "(\w+)"', drills[0].messages[1]["content"]).group(1)
    assert value[0].isupper() and value[1:].islower() and f'"text": "{value}"' in drills[0].messages[2]["content"]
    assert copy_drills(Example(messages[:2], "x:1", "trajectory", completion="{}"), 3) == []  # nothing copied


def test_a_json_key_the_task_happens_to_quote_is_not_a_copied_value():
    from training.data import copied_values, copy_variants

    task = {"role": "user", "content": 'Close the dialog box by clicking the "x".'}
    example = Example([task], "d:1", "trajectory", completion='{"action": "click", "x": 120, "y": 30}')
    assert copied_values(example) == [] and copy_variants(example, 2) == []
