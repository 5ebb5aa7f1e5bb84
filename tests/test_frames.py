"""Tests for :mod:`giraffe_core.frames`: chats with frames of MIXED sizes -> model inputs.

The claim under test is "exact visual-token accounting: the planner's count equals what the model
consumes". It is checked against the token stream itself (runs of ``<|image_pad|>`` between
``<|vision_start|>`` and ``<|vision_end|>``), the pixel rows the vision tower receives, a real
forward pass of the tiny Qwen2-VL model, and transformers' own ``get_rope_index``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from giraffe_core.errors import ConfigError, InputError
from giraffe_core.frames import ModelInputs, build_inputs, image_parts, load_image


def _ids(engine, token: str) -> int:
    return engine.processor.tokenizer.convert_tokens_to_ids(token)


def _pad_runs(input_ids: torch.Tensor, pad_id: int) -> list[tuple[int, int]]:
    """(start, length) of every maximal run of ``pad_id`` in a 1-D id sequence."""
    ids = input_ids.tolist()
    runs, i = [], 0
    while i < len(ids):
        if ids[i] == pad_id:
            j = i
            while j < len(ids) and ids[j] == pad_id:
                j += 1
            runs.append((i, j - i))
            i = j
        else:
            i += 1
    return runs


@pytest.fixture(scope="module")
def prepared(tiny_engine, mixed_images) -> ModelInputs:
    a, b, c = mixed_images
    chat = [{"role": "user", "content": [
        {"type": "image", "image": a, "max_tokens": 60},
        {"type": "text", "text": "Frame one, then"},
        {"type": "image", "image": b, "max_tokens": 20},
        {"type": "image", "image": c},
        {"type": "text", "text": "What changed between the frames?"},
    ]}]
    return tiny_engine.prepare(chat)


# --------------------------------------------------------------------------------------------------
# exact accounting
# --------------------------------------------------------------------------------------------------


def test_image_pad_runs_equal_planned_tokens(tiny_engine, prepared):
    plan = prepared.plan
    assert plan is not None and len(plan.frames) == 3
    assert [f.max_tokens for f in plan.frames] == [60, 20, 1280]
    assert [f.source_size for f in plan.frames] == [(300, 200), (120, 260), (200, 200)]
    assert len({f.size for f in plan.frames}) == 3  # genuinely mixed sizes reach the model
    ids = prepared.input_ids[0]
    runs = _pad_runs(ids, _ids(tiny_engine, "<|image_pad|>"))
    assert [length for _, length in runs] == [f.tokens for f in plan.frames]
    for start, length in runs:  # each run is wrapped by <|vision_start|> ... <|vision_end|>
        assert int(ids[start - 1]) == _ids(tiny_engine, "<|vision_start|>")
        assert int(ids[start + length]) == _ids(tiny_engine, "<|vision_end|>")
    assert int((ids == _ids(tiny_engine, "<|vision_start|>")).sum()) == 3
    # the mask of image tokens the model uses to scatter vision features covers exactly the pads
    assert torch.equal(prepared.mm_token_type_ids[0].bool(), ids == _ids(tiny_engine, "<|image_pad|>"))


def test_grids_and_pixel_rows_equal_the_plan(prepared):
    plan = prepared.plan
    grids = [tuple(int(v) for v in g) for g in prepared.image_grid_thw]
    assert grids == [f.grid_thw for f in plan.frames]
    assert all(g[0] == 1 for g in grids)
    assert all(g[1] * g[2] == 4 * f.tokens for g, f in zip(grids, plan.frames))
    assert prepared.pixel_values.shape == (sum(g[0] * g[1] * g[2] for g in grids), 3 * 2 * 14 * 14)
    assert [f.tokens for f in plan.frames] == [54, 18, 49]  # hand-worked: 252x168, 84x168, 196x196 px


def test_the_model_consumes_the_inputs(tiny_engine, prepared):
    with torch.no_grad():
        out = tiny_engine.model(**prepared.model_kwargs())
    vocab = tiny_engine.model.config.text_config.vocab_size
    assert out.logits.shape == (1, prepared.num_tokens, vocab)
    assert torch.isfinite(out.logits).all()


def test_positions_equal_transformers_get_rope_index(tiny_engine, prepared):
    expected, _ = tiny_engine.model.model.get_rope_index(
        prepared.input_ids, prepared.mm_token_type_ids, prepared.image_grid_thw, None, prepared.attention_mask)
    assert prepared.position_ids.shape == (3, 1, prepared.num_tokens)
    assert torch.equal(prepared.position_ids, expected)
    assert int(prepared.next_position[0]) == int(expected.max()) + 1
    # images compress positions: the prompt spans fewer positions than it has tokens
    assert int(prepared.next_position[0]) < prepared.num_tokens


def test_positions_matter_to_the_model(tiny_engine, prepared):
    """Control for the equality tests: plain 1-D positions would change the logits."""
    kwargs = prepared.model_kwargs()
    flat = torch.arange(prepared.num_tokens).view(1, 1, -1).expand(3, 1, -1)
    with torch.no_grad():
        ours = tiny_engine.model(**kwargs).logits
        wrong = tiny_engine.model(**{**kwargs, "position_ids": flat}).logits
        auto = tiny_engine.model(**{k: v for k, v in kwargs.items() if k != "position_ids"}).logits
    assert not torch.allclose(ours[0, -1], wrong[0, -1])
    torch.testing.assert_close(ours, auto, rtol=0, atol=0)


def test_model_kwargs_device_and_dtype(prepared):
    kwargs = prepared.model_kwargs("cpu", torch.bfloat16)
    assert kwargs["pixel_values"].dtype == torch.bfloat16
    assert kwargs["input_ids"].dtype == torch.long
    assert set(kwargs) == {"input_ids", "attention_mask", "mm_token_type_ids", "position_ids", "pixel_values",
                           "image_grid_thw"}


def test_single_large_frame_default_budget(tiny_engine):
    """A 1920x1080 screenshot with no tier gets the processor's cap: 1,222 visual tokens (PAPER.md §5)."""
    chat = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (1920, 1080), (9, 99, 199))},
                                         {"type": "text", "text": "hi"}]}]
    inputs = tiny_engine.prepare(chat)
    runs = _pad_runs(inputs.input_ids[0], _ids(tiny_engine, "<|image_pad|>"))
    assert [length for _, length in runs] == [1222]
    assert inputs.image_grid_thw.tolist() == [[1, 52, 94]]


def test_default_max_tokens_applies_to_untiered_frames(tiny_engine, mixed_chat):
    inputs = tiny_engine.prepare(mixed_chat, default_max_tokens=10)
    assert [f.max_tokens for f in inputs.plan.frames] == [60, 20, 10]
    assert inputs.plan.frames[2].tokens <= 10
    runs = _pad_runs(inputs.input_ids[0], _ids(tiny_engine, "<|image_pad|>"))
    assert [length for _, length in runs] == [f.tokens for f in inputs.plan.frames]


def test_tier_names(tiny_engine, mixed_images):
    chat = [{"role": "user", "content": [
        {"type": "image", "image": mixed_images[0], "max_tokens": 40, "tier": "recent"},
        {"type": "image", "image": mixed_images[1], "max_tokens": 8},
        {"type": "text", "text": "?"}]}]
    plan = tiny_engine.prepare(chat).plan
    assert [f.tier for f in plan.frames] == ["recent", "t8"]
    assert plan.tokens_by_tier() == {"recent": plan.frames[0].tokens, "t8": plan.frames[1].tokens}


def test_text_only_chat(tiny_engine):
    inputs = tiny_engine.prepare([{"role": "user", "content": "Hello there"}])
    assert inputs.pixel_values is None and inputs.image_grid_thw is None and inputs.plan is None
    n = inputs.num_tokens
    assert torch.equal(inputs.position_ids, torch.arange(n).view(1, 1, n).expand(3, 1, n))
    assert int(inputs.next_position[0]) == n
    assert "pixel_values" not in inputs.model_kwargs()


def test_generation_prompt_flag(tiny_engine, mixed_chat):
    with_prompt = tiny_engine.prepare(mixed_chat)
    without = tiny_engine.prepare(mixed_chat, add_generation_prompt=False)
    assert with_prompt.text.endswith("<|im_start|>assistant\n")
    assert without.text.endswith("<|im_end|>\n")
    assert with_prompt.num_tokens == without.num_tokens + len(
        tiny_engine.processor.tokenizer("<|im_start|>assistant\n")["input_ids"])


def test_build_inputs_with_a_start_offset(tiny_engine, mixed_chat):
    base = tiny_engine.prepare(mixed_chat)
    shifted = build_inputs(tiny_engine.processor, mixed_chat, tiny_engine.tokens, start=100)
    assert torch.equal(shifted.position_ids, base.position_ids + 100)
    assert int(shifted.next_position[0]) == int(base.next_position[0]) + 100


def test_chat_is_not_modified(tiny_engine, mixed_chat):
    before = [dict(m, content=[dict(p) for p in m["content"]]) for m in mixed_chat]
    tiny_engine.prepare(mixed_chat)
    assert mixed_chat == before


# --------------------------------------------------------------------------------------------------
# image sources
# --------------------------------------------------------------------------------------------------


def test_every_image_source_gives_identical_inputs(tiny_engine, mixed_images, tmp_path):
    image = mixed_images[0]
    png = io.BytesIO()
    image.save(png, format="PNG")
    path = tmp_path / "frame.png"
    path.write_bytes(png.getvalue())
    rgba = np.concatenate([np.asarray(image), np.full((*np.asarray(image).shape[:2], 1), 255, np.uint8)], axis=2)
    sources = {"pil": image, "path": str(path), "pathlib": path, "bytes": png.getvalue(),
               "bytearray": bytearray(png.getvalue()), "array": np.asarray(image), "rgba_array": rgba}
    results = {}
    for name, source in sources.items():
        chat = [{"role": "user", "content": [{"type": "image", "image": source, "max_tokens": 30},
                                             {"type": "text", "text": "Describe."}]}]
        results[name] = tiny_engine.prepare(chat)
    ref = results["pil"]
    for name, got in results.items():
        for key in ("input_ids", "attention_mask", "mm_token_type_ids", "position_ids", "pixel_values",
                    "image_grid_thw"):
            assert torch.equal(getattr(got, key), getattr(ref, key)), (name, key)


def test_load_image_converts_to_rgb():
    assert load_image(Image.new("L", (10, 12))).mode == "RGB"
    assert load_image(Image.new("RGBA", (10, 12))).size == (10, 12)
    assert load_image(np.zeros((12, 10, 4), np.uint8)).mode == "RGB"


@pytest.mark.parametrize(("source", "match"), [
    (b"definitely not a PNG", "cannot read image"),
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8), np.uint8), r"\(H, W, 3\|4\)"),
    (np.zeros((8, 8, 2), np.uint8), "uint8"),
    (12345, "cannot read an image from a int"),
    ("/no/such/dir/frame.png", "cannot read image"),
])
def test_unreadable_images_are_input_errors(tiny_engine, source, match):
    chat = [{"role": "user", "content": [{"type": "image", "image": source}, {"type": "text", "text": "?"}]}]
    with pytest.raises(InputError, match=match):
        tiny_engine.prepare(chat)


def test_missing_payload_is_an_input_error(tiny_engine):
    for part in ({"type": "image"}, {"type": "image", "image": None}):
        with pytest.raises(InputError, match="needs an 'image'"):
            tiny_engine.prepare([{"role": "user", "content": [part, {"type": "text", "text": "?"}]}])


def test_video_part_is_an_input_error_with_a_hint(tiny_engine):
    with pytest.raises(InputError, match="video") as info:
        tiny_engine.prepare([{"role": "user", "content": [{"type": "video", "video": ["a.png", "b.png"]}]}])
    assert "plan_groups" in str(info.value)


@pytest.mark.parametrize("messages", [
    [{"content": "no role"}],
    [{"role": "user"}],
    ["just a string"],
    [{"role": "user", "content": ["a bare string part"]}],
])
def test_malformed_messages_are_input_errors(messages):
    with pytest.raises(InputError):
        image_parts(messages)


def test_image_parts_in_order(mixed_chat):
    parts = image_parts([*mixed_chat, {"role": "assistant", "content": "ok"}])
    assert [p.get("max_tokens") for p in parts] == [60, 20, None]


@pytest.mark.parametrize("budget", [-3, -1])
def test_negative_part_budget_is_a_config_error(tiny_engine, mixed_images, budget):
    chat = [{"role": "user", "content": [{"type": "image", "image": mixed_images[0], "max_tokens": budget}]}]
    with pytest.raises(ConfigError, match="max_tokens"):
        tiny_engine.prepare(chat)


def test_zero_part_budget_is_rejected(tiny_engine, mixed_images):
    chat = [{"role": "user", "content": [{"type": "image", "image": mixed_images[0], "max_tokens": 0}]}]
    with pytest.raises(ConfigError, match="max_tokens"):
        tiny_engine.prepare(chat)


def test_image_url_part_is_an_input_error(tiny_engine):
    chat = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                                         {"type": "text", "text": "?"}]}]
    with pytest.raises(InputError):
        tiny_engine.prepare(chat)


def test_layout_tokens_equal_the_processors_own_expansion(tiny_engine, mixed_chat):
    """layout_chat expands placeholders without the processor; its tokens must equal the processor's."""
    from giraffe_core.frames import encode_images, layout_chat

    processor = tiny_engine.processor
    layout = layout_chat(processor, mixed_chat, tiny_engine.tokens)
    resized = [load_image(im).resize(f.size, Image.Resampling.BICUBIC)
               for im, f in zip(layout.images, layout.plan.frames)]
    areas = [w * h for w, h in (f.size for f in layout.plan.frames)]
    reference = processor(text=[layout.text], images=resized, return_tensors="pt",
                          images_kwargs={"size": {"shortest_edge": min(areas), "longest_edge": max(areas)}})
    assert torch.equal(layout.input_ids, reference["input_ids"])
    pixel_values, grid = encode_images(processor, layout)
    assert torch.equal(pixel_values, reference["pixel_values"]) and torch.equal(grid, reference["image_grid_thw"])
    # spans cover exactly each frame's placeholder run
    for (start, end), frame in zip(layout.spans, layout.plan.frames):
        assert end - start == frame.tokens
        assert bool((layout.input_ids[0, start:end] == tiny_engine.tokens.image_token_id).all())
        assert int(layout.input_ids[0, start - 1]) == tiny_engine.model.config.vision_start_token_id
        assert int(layout.input_ids[0, end]) == tiny_engine.model.config.vision_end_token_id


def test_placeholder_text_in_a_message_is_an_input_error(tiny_engine):
    chat = [{"role": "user", "content": "look: <|image_pad|>"}]
    with pytest.raises(InputError, match="placeholders"):
        tiny_engine.prepare(chat)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_size_is_checked_before_any_pixel_is_decoded(tmp_path):
    """A 1-bit PNG of 12000 x 12000 pixels is ~20 KB on disk and 430 MB as RGB: refused from its header."""
    from giraffe_core.frames import MAX_IMAGE_PIXELS, _open_image

    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, format="PNG")
    bomb = buffer.getvalue()
    assert len(bomb) < 100_000 and MAX_IMAGE_PIXELS < 12000 * 12000
    (tmp_path / "bomb.png").write_bytes(bomb)
    for source in (bomb, tmp_path / "bomb.png", str(tmp_path / "bomb.png")):
        for opener in (load_image, _open_image):
            with pytest.raises(InputError, match="12000x12000"):
                opener(source)
    small = io.BytesIO()
    Image.new("1", (100, 100)).save(small, format="PNG")  # control: the same kind of file, within the limit
    assert load_image(small.getvalue()).size == (100, 100)
    huge = io.BytesIO()  # past Pillow's own bomb limit (2 x 89 Mpx): still a typed error, not Pillow's
    Image.new("1", (20000, 20000)).save(huge, format="PNG")
    with pytest.raises(InputError):
        load_image(huge.getvalue())
