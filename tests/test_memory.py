"""Tests for :mod:`giraffe_core.memory`: tier policies, rendering, exact token counts, budgets,
cache-aligned prefixes, per-step records, zoom-back and the frame store.

References are independent of the code under test:

* the tier rule is re-implemented here from the documented formula (``align`` = round down to a
  multiple, never below 0) and compared for every ``n`` in 0..300 over several configurations;
* token counts are compared with the PROCESSOR's own tokenization of the same chat (its chat
  template, its placeholder expansion) on images resized independently with transformers'
  ``smart_resize`` under each part's token budget;
* per-tier token counts are recomputed from those sizes (``(h / 28) * (w / 28)`` visual tokens plus
  the two ``<|vision_start|>`` / ``<|vision_end|>`` wrappers);
* zooms are compared pixel by pixel with crops of the stored PNG made here with PIL.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from giraffe_core.errors import InputError
from giraffe_core.frames import build_inputs
from giraffe_core.memory import FrameStore, MemoryConfig, MemoryRecord, TimelineMemory, policy_tiers
from giraffe_core.samples import screenshot

RANK = {"full": 0, "low": 1, "text": 2, "evicted": 3}
TOKEN_PX = 28  # Qwen2-VL: 14 px patches merged 2 x 2
MIN_PIXELS = 56 * 56  # Qwen2-VL image processor's default shortest_edge (area)

# --------------------------------------------------------------------------------------------------
# helpers (independent references)
# --------------------------------------------------------------------------------------------------


def reference_tiers(n: int, *, policy: str = "blocks", full: int, low: int, text: int, q: int) -> list[str]:
    """The documented rule, written out from policy_tiers' docstring and the module docstring."""

    def align(value: int, quantum: int) -> int:
        return max(0, value - value % quantum) if value > 0 else 0

    if policy == "recent":
        start = max(0, n - full)
        return ["text"] * start + ["full"] * (n - start)
    full_start = align(n - full, q)
    low_start = align(full_start - low, 4 * q)
    text_start = align(low_start - text, 16 * q)
    out = []
    for i in range(n):
        if i >= full_start:
            out.append("full")
        elif i >= low_start:
            out.append("low")
        elif i >= text_start:
            out.append("text")
        else:
            out.append("evicted")
    return out


def planned_size(image: Image.Image, max_tokens: int) -> tuple[int, int]:
    """(width, height) the processor resizes ``image`` to under a budget of ``max_tokens``."""
    cap = max_tokens * TOKEN_PX * TOKEN_PX
    h, w = smart_resize(image.height, image.width, factor=TOKEN_PX, min_pixels=min(MIN_PIXELS, cap), max_pixels=cap)
    assert h * w <= cap, "test frames are large enough that smart_resize never rounds past the cap"
    return w, h


def image_parts(messages: list[dict]) -> list[dict]:
    return [p for m in messages if not isinstance(m["content"], str) for p in m["content"] if p.get("type") == "image"]


def processor_reference(processor, messages: list[dict]) -> dict:
    """The processor's own tokenization of ``messages``: its chat template on the messages as
    rendered, images opened from disk and resized to their budget, permissive size bounds."""
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    images = []
    for part in image_parts(messages):
        image = Image.open(part["image"]).convert("RGB")
        images.append(image.resize(planned_size(image, part["max_tokens"]), Image.Resampling.BICUBIC))
    bounds = {"shortest_edge": TOKEN_PX * TOKEN_PX, "longest_edge": TOKEN_PX * TOKEN_PX * 16384}
    if not images:
        return processor(text=[text], return_tensors="pt")
    return processor(text=[text], images=images, return_tensors="pt", images_kwargs={"size": bounds})


def frame_tokens(part: dict) -> int:
    """Prompt tokens of one image part: visual tokens of its planned size plus two wrappers."""
    w, h = planned_size(Image.open(part["image"]), part["max_tokens"])
    return (w // TOKEN_PX) * (h // TOKEN_PX) + 2


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(len(a), len(b))
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if len(differ) else n


def make_memory(engine, tmp_path, **config) -> TimelineMemory:
    return TimelineMemory.for_engine(engine, MemoryConfig(**config), store=tmp_path / "frames")


SMALL = dict(budget_tokens=8192, reserve_tokens=64, full_max_tokens=64, low_max_tokens=16)

# --------------------------------------------------------------------------------------------------
# tier policies
# --------------------------------------------------------------------------------------------------

CONFIGS = [
    dict(full_frames=8, low_frames=64, text_frames=512, block_frames=8),  # defaults
    dict(full_frames=2, low_frames=4, text_frames=8, block_frames=2),
    dict(full_frames=3, low_frames=5, text_frames=7, block_frames=3),
    dict(full_frames=1, low_frames=0, text_frames=0, block_frames=1),
    dict(full_frames=5, low_frames=10, text_frames=20, block_frames=4),
    dict(full_frames=4, low_frames=1, text_frames=3, block_frames=5),
]


def _params(c: dict) -> dict:
    return dict(full=c["full_frames"], low=c["low_frames"], text=c["text_frames"], q=c["block_frames"])


@pytest.mark.parametrize("policy", ["blocks", "recent"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_policy_tiers_match_the_documented_rule(config, policy):
    cfg = MemoryConfig(policy=policy, **config)
    for n in range(0, 301):
        assert policy_tiers(n, cfg) == reference_tiers(n, policy=policy, **_params(config)), n


def test_policy_tiers_hand_checked_examples():
    cfg = MemoryConfig(full_frames=2, low_frames=4, text_frames=8, block_frames=2)
    assert policy_tiers(0, cfg) == []
    assert policy_tiers(2, cfg) == ["full"] * 2
    assert policy_tiers(3, cfg) == ["full"] * 3  # full boundary align(1, 2) = 0
    assert policy_tiers(4, cfg) == ["low"] * 2 + ["full"] * 2
    assert policy_tiers(5, cfg) == ["low"] * 2 + ["full"] * 3
    # n = 14: full from align(12, 2) = 12; low from align(8, 8) = 8; text from align(0, 32) = 0
    assert policy_tiers(14, cfg) == ["text"] * 8 + ["low"] * 4 + ["full"] * 2
    # n = 60: full 58, low align(54, 8) = 48, text align(40, 32) = 32
    assert policy_tiers(60, cfg) == ["evicted"] * 32 + ["text"] * 16 + ["low"] * 10 + ["full"] * 2
    # everything is full while n <= full_frames, whatever the other settings
    big = MemoryConfig(full_frames=50, low_frames=0, text_frames=0, block_frames=1)
    assert policy_tiers(50, big) == ["full"] * 50


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_tiers_only_move_down_as_the_timeline_grows(config):
    for policy in ("blocks", "recent"):
        cfg = MemoryConfig(policy=policy, **config)
        previous: list[str] = []
        for n in range(1, 301):
            tiers = policy_tiers(n, cfg)
            for i, (old, new) in enumerate(zip(previous, tiers)):
                assert RANK[new] >= RANK[old], (policy, n, i, old, new)
            assert tiers[-1] == "full"  # the newest frame is always at full resolution
            previous = tiers


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_blocks_policy_changes_old_tiers_only_at_block_boundaries(config):
    q, full = config["block_frames"], config["full_frames"]
    steps = 200
    changes = {"blocks": [], "recent": []}
    for policy in changes:
        cfg = MemoryConfig(policy=policy, **config)
        previous = policy_tiers(100, cfg)
        for n in range(101, 101 + steps):
            tiers = policy_tiers(n, cfg)
            if tiers[: n - 1] != previous:
                changes[policy].append(n)
            previous = tiers
    assert len(changes["blocks"]) <= math.ceil(steps / q) + 1
    # every change is the full/low boundary crossing a multiple of q (the deeper boundaries only move then)
    assert all((n - full) % q == 0 for n in changes["blocks"]), changes["blocks"]
    # the "recent" baseline moves an old frame's tier at every single step
    assert len(changes["recent"]) == steps


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------


def _episode(memory: TimelineMemory, steps: int, *, start: float = 1000.0, size=(160, 120), model_turns=True,
             zooms: dict[int, tuple] | None = None) -> list:
    """A simulated agent episode; returns every step's render."""
    renders = []
    for k in range(steps):
        memory.add_frame(screenshot(*size, title=f"Page {k}", seed=k), step=k, url=f"https://shop.test/p/{k}",
                         title=f"Title {k}", wall_time=start + 2.5 * k)
        if zooms and k in zooms:
            target, box = zooms[k]
            memory.zoom(target, box, wall_time=start + 2.5 * k + 0.5)
        renders.append(memory.render())
        memory.set_action(f"click(#{k})")
        if model_turns:
            memory.add_text("model", f"I click button {k}.", step=k, wall_time=start + 2.5 * k + 1)
        if k % 5 == 4:
            memory.add_text("tool", f"tool result {k}", step=k, wall_time=start + 2.5 * k + 2)
    return renders


def test_render_structure_captions_tiers_and_current_marker(tiny_engine, tmp_path):
    memory = make_memory(tiny_engine, tmp_path, **SMALL, full_frames=2, low_frames=2, text_frames=2, block_frames=1)
    memory.add_text("system", "You are a web agent.", wall_time=990.0)  # the first item: t = 0 here
    memory.add_text("system", "Answer with one action.", wall_time=991.0)
    memory.add_text("task", "Buy the cheapest lamp.", wall_time=992.0)
    _episode(memory, 26, model_turns=True)
    memory.add_frame(screenshot(160, 120, title="now", seed=77), step=26, url="https://shop.test/cart",
                     title="Cart", wall_time=1100.0)
    rendered = memory.render()
    messages, tiers = rendered.messages, rendered.record.tiers
    frames = memory.frames
    assert set(tiers.values()) == {"full", "low", "text", "evicted"}
    expected = reference_tiers(len(frames), full=2, low=2, text=2, q=1)
    assert [tiers[f.id] for f in frames] == expected

    # one system message holding the system items, then strictly alternating user / assistant turns
    assert messages[0] == {"role": "system", "content": "You are a web agent.\n\nAnswer with one action."}
    roles = [m["role"] for m in messages[1:]]
    assert roles[0] == "user" and all(a != b for a, b in itertools.pairwise(roles))
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    assert "\n".join(assistant).split("\n") == [f"I click button {k}." for k in range(26)]

    user_parts = [p for m in messages if m["role"] == "user" for p in m["content"]]
    texts = [p["text"] for p in user_parts if p["type"] == "text"]
    # the task, then ONE line summarising the evicted frames
    n_evicted = expected.count("evicted")
    assert user_parts[0]["text"].startswith("Buy the cheapest lamp.")
    note = user_parts[1]["text"]
    assert note.count("\n") == 1 and note.endswith("\n") and str(n_evicted) in note
    for f in frames:
        caption_start = f"[step {f.step} · t={f.wall_time - 990.0:.1f}s · {f.url} · {f.title}"
        shown = [i for i, p in enumerate(user_parts) if p["type"] == "text" and p["text"].startswith(caption_start)]
        tier = tiers[f.id]
        if tier == "evicted":
            assert shown == [] and not any(f.path == p.get("image") for p in user_parts)
            continue
        assert len(shown) == 1, (f.id, tier)
        i = shown[0]
        after = user_parts[i + 1] if i + 1 < len(user_parts) else None
        if tier == "text":
            assert f"action: click(#{f.step})" in user_parts[i]["text"]
            assert after is None or after["type"] != "image"
            assert not any(f.path == p.get("image") for p in user_parts)
        else:
            assert after["type"] == "image" and after["image"] == f.path
            assert after["max_tokens"] == (64 if tier == "full" else 16)
            assert "action:" not in user_parts[i]["text"]
    assert sum("action:" in t for t in texts) == expected.count("text")

    # the newest frame is marked as the current screen at the very end of the last user message
    last = messages[-1]
    assert last["role"] == "user"
    assert last["content"][-2]["type"] == "image" and last["content"][-2]["image"] == frames[-1].path
    marker = last["content"][-1]
    assert marker["type"] == "text" and "step 26" in marker["text"] and "urrent" in marker["text"]
    assert sum("urrent screen" in t for t in texts) == 1
    assert rendered.layout.text.endswith("<|im_start|>assistant\n")


def test_render_without_frames_and_without_system(tiny_engine, tmp_path):
    memory = make_memory(tiny_engine, tmp_path, **SMALL)
    memory.add_text("task", "Say hi.")
    rendered = memory.render()
    assert rendered.messages == [{"role": "user", "content": [{"type": "text", "text": "Say hi.\n"}]}]
    assert rendered.record.frames == 0 and rendered.record.tokens["full"] == 0
    reference = processor_reference(tiny_engine.processor, rendered.messages)
    assert torch.equal(rendered.layout.input_ids, reference["input_ids"])


# --------------------------------------------------------------------------------------------------
# exact token counts and the budget
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_token_count_equals_the_processors_over_an_episode(tiny_engine, tmp_path):
    memory = make_memory(tiny_engine, tmp_path, **SMALL, full_frames=3, low_frames=4, text_frames=6, block_frames=1)
    memory.add_text("system", "You are a web agent.")
    memory.add_text("task", "Find the order number.")
    sizes = [(160, 120), (200, 300), (333, 111), (120, 160)]
    tiers_seen = set()
    for k in range(40):
        memory.add_frame(screenshot(*sizes[k % 4], title=f"P{k}", seed=k), step=k, url=f"https://a.test/{k}")
        if k == 20:
            memory.zoom(3, (10, 10, 90, 70))
        rendered = memory.render()
        tiers_seen |= set(rendered.record.tiers.values())
        reference = processor_reference(tiny_engine.processor, rendered.messages)
        assert rendered.token_count == int(reference["input_ids"].shape[1]), k
        assert torch.equal(rendered.layout.input_ids, reference["input_ids"]), k
        inputs = build_inputs(tiny_engine.processor, rendered.messages, tiny_engine.tokens)
        assert inputs.num_tokens == rendered.token_count
        assert torch.equal(inputs.pixel_values, reference["pixel_values"])
        assert rendered.token_count <= 8192 - 64
        memory.set_action(f"type('{k}')")
        memory.add_text("model", f"step {k} done", step=k)
    assert tiers_seen == {"full", "low", "text", "evicted"}


def test_budget_demotions_keep_the_context_under_the_budget(tiny_engine, tmp_path):
    budget, reserve = 900, 100
    memory = make_memory(tiny_engine, tmp_path, budget_tokens=budget, reserve_tokens=reserve, full_max_tokens=64,
                         low_max_tokens=16, full_frames=4, low_frames=8, text_frames=64, block_frames=2)
    memory.add_text("task", "Fill in the form.")
    history: dict[str, list[str]] = {}
    for k in range(40):
        memory.add_frame(screenshot(200, 150, title=f"P{k}", seed=k), step=k, url=f"https://form.test/{k}")
        rendered = memory.render()
        assert rendered.token_count <= budget - reserve
        assert rendered.token_count == int(processor_reference(tiny_engine.processor, rendered.messages)
                                           ["input_ids"].shape[1])
        record = rendered.record
        assert record.total_tokens == rendered.token_count and record.budget_tokens == budget
        for frame_id, tier in record.tiers.items():
            history.setdefault(frame_id, []).append(tier)
        assert record.tiers == memory.tiers()
        memory.set_action(f"click({k})")
        memory.add_text("model", f"click({k})", step=k)
    demoted = [r.demoted_by_budget for r in memory.records]
    assert sum(demoted) > 0
    # budget demotions go deeper than the policy asks for, and never come back up
    policy = MemoryConfig(full_frames=4, low_frames=8, text_frames=64, block_frames=2)
    deeper = [r for r in memory.records
              if any(RANK[t] > RANK[p] for t, p in zip(r.tiers.values(), policy_tiers(r.frames, policy)))]
    assert deeper
    for frame_id, tiers in history.items():
        assert all(RANK[b] >= RANK[a] for a, b in itertools.pairwise(tiers)), (frame_id, tiers)
    assert memory.records[-1].frames_per_tier["evicted"] > 0
    assert memory.records[-1].tiers[memory.frames[-1].id] == "full"


def test_an_impossible_budget_raises_input_error(tiny_engine, tmp_path):
    memory = make_memory(tiny_engine, tmp_path, budget_tokens=256, reserve_tokens=64, full_max_tokens=64,
                         low_max_tokens=16)
    memory.add_text("task", "word " * 400)
    memory.add_frame(screenshot(160, 120))
    with pytest.raises(InputError, match="budget"):
        memory.render()


# --------------------------------------------------------------------------------------------------
# cache-aligned prefixes
# --------------------------------------------------------------------------------------------------


def _prefix_fractions(engine, tmp_path, policy: str) -> tuple[list[float], list[bool], list]:
    # screenshots big enough that a full-resolution frame costs what it costs in real agents
    memory = make_memory(engine, tmp_path / policy, **{**SMALL, "full_max_tokens": 256, "low_max_tokens": 32},
                         policy=policy, full_frames=5, low_frames=8, text_frames=16, block_frames=8)
    memory.add_text("system", "You are a web agent.", wall_time=0.0)
    memory.add_text("task", "Compare three laptops.", wall_time=0.0)
    renders = _episode(memory, 40, start=0.0, size=(640, 400))
    fractions, quiet = [], []
    for before, after in itertools.pairwise(renders):
        old, new = before.layout.input_ids[0], after.layout.input_ids[0]
        fractions.append(common_prefix(old, new) / len(old))
        stable = all(after.record.tiers[f] == t for f, t in before.record.tiers.items())
        quiet.append(stable)
    return fractions, quiet, renders


@pytest.mark.slow
def test_blocks_keep_the_prefix_between_boundaries_and_beat_recent(tiny_engine, tmp_path):
    vision_end = tiny_engine.model.config.vision_end_token_id
    fractions, quiet, renders = _prefix_fractions(tiny_engine, tmp_path, "blocks")
    assert sum(quiet) >= 25  # most steps lie between block boundaries
    for k, stable in enumerate(quiet):
        if not stable:
            continue
        old, new = renders[k].layout.input_ids[0], renders[k + 1].layout.input_ids[0]
        # everything up to the end of the previous newest frame (where the current-screen marker
        # starts) is kept: the new step only changes the tail
        last_image_end = int((old == vision_end).nonzero()[-1]) + 1
        assert common_prefix(old, new) >= last_image_end, k
        assert len(old) - last_image_end <= 40
    recent, _, _ = _prefix_fractions(tiny_engine, tmp_path, "recent")
    blocks_mean, recent_mean = sum(fractions) / len(fractions), sum(recent) / len(recent)
    assert blocks_mean > 0.85, blocks_mean
    assert blocks_mean - recent_mean > 0.3, (blocks_mean, recent_mean)


# --------------------------------------------------------------------------------------------------
# the per-step record
# --------------------------------------------------------------------------------------------------


def test_memory_record_per_step(tiny_engine, tmp_path):
    memory = make_memory(tiny_engine, tmp_path, **SMALL, full_frames=2, low_frames=2, text_frames=3, block_frames=1)
    memory.add_text("task", "Read the news.", wall_time=1000.0)
    renders = _episode(memory, 24, zooms={12: (4, (0, 0, 80, 60))})
    tokenizer = tiny_engine.processor.tokenizer
    assert memory.records == [r.record for r in renders] and len(memory.records) == 24
    for k, rendered in enumerate(renders):
        record = rendered.record
        n = record.frames
        assert n == k + 1 + (k >= 12)
        assert list(record.tiers) == [f"f{i:05d}" for i in range(n)]
        assert set(record.frames_per_tier) == {"full", "low", "text", "evicted"}
        for tier, count in record.frames_per_tier.items():
            assert count == sum(t == tier for t in record.tiers.values())
        parts = image_parts(rendered.messages)
        for tier in ("full", "low"):
            shown = [p for p in parts if p["max_tokens"] == (64 if tier == "full" else 16)]
            assert len(shown) == record.frames_per_tier[tier]
            assert record.tokens[tier] == sum(frame_tokens(p) for p in shown), (k, tier)
        # text tier: every caption not followed by an image, each tokenized alone
        captions = []
        for m in rendered.messages:
            if isinstance(m["content"], str):
                continue
            for i, p in enumerate(m["content"]):
                nxt = m["content"][i + 1] if i + 1 < len(m["content"]) else {}
                if p["type"] == "text" and p["text"].startswith(("[step ", "[zoom of step ")) \
                        and nxt.get("type") != "image":
                    captions.append(p["text"])
        assert len(captions) == record.frames_per_tier["text"]
        assert record.tokens["text"] == sum(len(tokenizer(c)["input_ids"]) for c in captions)
        assert sum(record.tokens.values()) == record.total_tokens == rendered.token_count
        assert record.tokens["other"] > 0
        assert record.step == k
        restored = MemoryRecord.model_validate_json(record.model_dump_json())
        assert restored == record
        json.loads(record.model_dump_json())
    assert renders[-1].record.frames_per_tier["evicted"] > 0
    assert renders[-1].record.frames_per_tier["text"] > 0


# --------------------------------------------------------------------------------------------------
# zoom-back
# --------------------------------------------------------------------------------------------------


def test_zoom_back_by_id_and_by_step(tiny_engine, tmp_path):
    memory = make_memory(tiny_engine, tmp_path, **SMALL, full_frames=1, low_frames=1, text_frames=0, block_frames=1)
    memory.add_text("task", "Inspect.", wall_time=50.0)
    for k in range(20):
        memory.add_frame(screenshot(320, 200, title=f"P{k}", seed=k), step=k, url=f"https://z.test/{k}",
                         wall_time=50.0 + k)
    assert memory.tiers()["f00002"] == "evicted"
    original = Image.open(memory.frames[2].path).convert("RGB")

    cases = [("f00002", None), ("f00002", (20, 30, 220, 130)), (2, None), (2, (0, 0, 320, 200)), (5, (1, 2, 3, 4))]
    for target, box in cases:
        step_of_target = 2 if target in ("f00002", 2) else 5
        source = Image.open(memory.frames[step_of_target].path).convert("RGB")
        zoom = memory.zoom(target, box, wall_time=80.0)
        assert zoom.zoom_of == f"f{step_of_target:05d}" and zoom.source == "zoom" and zoom.step == 19
        stored = Image.open(zoom.path)
        assert stored.format == "PNG"
        expected = source if box is None else source.crop(box)
        assert stored.size == expected.size == (zoom.width, zoom.height)
        assert np.array_equal(np.asarray(stored.convert("RGB")), np.asarray(expected))
        rendered = memory.render()
        assert rendered.record.tiers[zoom.id] == "full"
        last = rendered.messages[-1]["content"]
        image = [p for p in last if p["type"] == "image"][-1]
        assert image["image"] == zoom.path and image["max_tokens"] == 64
        caption = [p["text"] for p in last if p["type"] == "text" and p["text"].startswith("[")][-1]
        assert caption.startswith(f"[zoom of step {step_of_target}")
        assert "t=30.0s" in caption and f"https://z.test/{step_of_target}" in caption
        if box is not None:
            assert ",".join(map(str, box[:2])) in caption
    assert np.array_equal(np.asarray(Image.open(memory.frames[2].path).convert("RGB")), np.asarray(original))
    assert memory.tiers()["f00002"] == "evicted"  # the original stays where it was


def test_zoom_by_step_takes_the_newest_original_frame_of_that_step(tiny_engine, tmp_path):
    memory = make_memory(tiny_engine, tmp_path, **SMALL)
    memory.add_frame(screenshot(100, 80, seed=1), step=0)
    memory.add_frame(screenshot(100, 80, seed=2), step=1)
    memory.add_frame(screenshot(100, 80, seed=3), step=1)
    first = memory.zoom(1)
    assert first.zoom_of == "f00002"
    again = memory.zoom(1)  # a zoom is not itself "the frame of step 1"
    assert again.zoom_of == "f00002"


@pytest.mark.parametrize("box", [(0, 0, 101, 80), (-1, 0, 50, 50), (50, 10, 40, 20), (10, 10, 10, 20),
                                 (0, 0, 100, 81)])
def test_zoom_with_a_bad_box_is_an_input_error(tiny_engine, tmp_path, box):
    memory = make_memory(tiny_engine, tmp_path, **SMALL)
    memory.add_frame(screenshot(100, 80), step=0)
    with pytest.raises(InputError):
        memory.zoom("f00000", box)
    assert len(memory.frames) == 1


@pytest.mark.parametrize("box", [(0, 0, 10), (0, 0, 10, 10, 3), (0.5, 0, 10, 10), ("0", 0, 10, 10), (True, 0, 9, 9)])
def test_zoom_with_a_malformed_box_is_an_input_error(tiny_engine, tmp_path, box):
    memory = make_memory(tiny_engine, tmp_path, **SMALL)
    frame = memory.add_frame(screenshot(100, 80), step=0)
    with pytest.raises(InputError, match="four integers"):
        memory.zoom("f00000", box)
    # nothing was added: no item, no orphan file in the store
    assert len(memory.frames) == 1
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [Path(frame.path).name]


@pytest.mark.parametrize("target", ["f00009", "nope", 7])
def test_zoom_on_an_unknown_target_is_an_input_error(tiny_engine, tmp_path, target):
    memory = make_memory(tiny_engine, tmp_path, **SMALL)
    memory.add_frame(screenshot(100, 80), step=0)
    memory.add_frame(screenshot(100, 80), step=1)
    with pytest.raises(InputError):
        memory.zoom(target)
    assert len(memory.frames) == 2


# --------------------------------------------------------------------------------------------------
# storage and inputs
# --------------------------------------------------------------------------------------------------


def test_frames_are_stored_as_full_resolution_pngs(tiny_engine, tmp_path):
    memory = make_memory(tiny_engine, tmp_path, **SMALL)
    big = screenshot(1280, 800, title="Big", seed=4)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (77, 131, 3), dtype=np.uint8))
    path = tmp_path / "in.png"
    noise.save(path)
    buffer = io.BytesIO()
    screenshot(90, 70, seed=5).save(buffer, format="PNG")
    rgba = np.dstack([np.asarray(noise), np.full((77, 131), 255, np.uint8)])
    sources = [(big, big), (str(path), noise), (path, noise), (buffer.getvalue(), screenshot(90, 70, seed=5)),
               (np.asarray(noise), noise), (rgba, noise)]
    for source, expected in sources:
        frame = memory.add_frame(source)
        stored = Image.open(frame.path)
        assert stored.format == "PNG" and stored.size == expected.size == (frame.width, frame.height)
        assert np.array_equal(np.asarray(stored.convert("RGB")), np.asarray(expected.convert("RGB")))
    directory = tmp_path / "frames"
    names = sorted(p.name for p in directory.iterdir())
    # <frame id>-<first 12 hex digits of the pixel digest>.png, nothing half-written left behind
    assert names == sorted(f"{f.id}-{f.digest[:12]}.png" for f in memory.frames)
    assert [n.split("-")[0] for n in names] == [f"f{i:05d}" for i in range(len(sources))]


def test_frame_store_writes_atomically(tmp_path, monkeypatch):
    store = FrameStore(tmp_path)
    good = screenshot(60, 40, seed=1)
    path = store.save("f00000", good)

    def crash(self, fp, *args, **kwargs):
        with open(fp, "wb") as handle:
            handle.write(b"\x89PNG half a frame")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(OSError):
        store.save("f00000", screenshot(60, 40, seed=2))
    with pytest.raises(OSError):
        store.save("f00001", screenshot(60, 40, seed=3))
    monkeypatch.undo()
    # the previous frame is intact and no half-written frame appears under a final name
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(good))
    assert not (tmp_path / "f00001.png").exists()


def test_bad_inputs_are_input_errors(tiny_engine, tmp_path):
    memory = make_memory(tiny_engine, tmp_path, **SMALL)
    with pytest.raises(InputError):
        memory.add_frame(b"not an image")
    with pytest.raises(InputError):
        memory.add_frame(np.zeros((4, 4), np.float32))
    with pytest.raises(InputError):
        memory.add_text("assistant", "hi")  # the role is "model"
    with pytest.raises(InputError):
        memory.add_text("task", "hi", step=-1)
    with pytest.raises(InputError):
        memory.set_action("click")  # no frame yet
    assert memory.items == []


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"budget": 1000},  # unknown key
    {"budget_tokens": 100},
    {"reserve_tokens": -1},
    {"policy": "lru"},
    {"full_max_tokens": 0},
    {"low_max_tokens": 0},
    {"full_frames": 0},
    {"low_frames": -1},
    {"text_frames": -1},
    {"block_frames": 0},
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValidationError):
        MemoryConfig(**bad)


def test_config_defaults_and_frozen():
    config = MemoryConfig()
    assert (config.budget_tokens, config.policy) == (131072, "blocks")
    with pytest.raises(ValidationError):
        config.budget_tokens = 5  # type: ignore[misc]
    assert MemoryConfig.model_validate_json(config.model_dump_json()) == config


def test_config_rejects_a_reserve_that_eats_the_whole_budget():
    with pytest.raises(ValidationError):
        MemoryConfig(budget_tokens=1000, reserve_tokens=1000)
