"""Tests for :mod:`giraffe_core.engine`: the tiny preset, ``load``, ``Engine`` and its generation.

References: Qwen2-VL's special-token order and ChatML layout written out literally below;
transformers' own ``model.generate`` WITHOUT our position ids (it then computes M-RoPE positions
itself from the image grids) for greedy decoding; ``save_pretrained`` round trips for loading.

Generation tests use ``load("tiny", seed=3)``: with seed 0 the random model greedily repeats a
single token, which would make "same tokens" comparisons nearly vacuous. Per-step logits are
compared too, which is the sharper check either way.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import LlamaConfig

from giraffe_core.engine import TINY_CONTEXT_TOKENS, Engine, Generation, choose_attention, load
from giraffe_core.errors import ConfigError, InputError, ModelLoadError

#: Qwen2-VL's special tokens in vocabulary order (ids 151643..151656 in the real model).
QWEN2VL_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
GEN_SEED = 3
NEW_TOKENS = 6


def _inv_freq(engine: Engine) -> torch.Tensor:
    return engine.model.model.language_model.rotary_emb.inv_freq.detach().clone()


def _reference_generate(engine: Engine, inputs, max_new_tokens: int):
    """transformers' generate on the same prompt without our position ids."""
    kwargs = {k: v for k, v in inputs.model_kwargs().items() if k != "position_ids"}
    return engine.model.generate(
        **kwargs, max_new_tokens=max_new_tokens, do_sample=False,
        pad_token_id=engine.model.generation_config.pad_token_id,
        eos_token_id=engine.model.generation_config.eos_token_id,
        return_dict_in_generate=True, output_logits=True)


@pytest.fixture(scope="module")
def engines() -> dict[str, Engine]:
    return {"default": load("tiny", seed=GEN_SEED),
            "mrope++": load("tiny", seed=GEN_SEED, context_length=32768)}


@pytest.fixture(scope="module")
def saved_dir(tiny_engine, tmp_path_factory):
    return tiny_engine.save_pretrained(tmp_path_factory.mktemp("tiny_saved"))


def _image_chat(image: Image.Image, text: str = "Describe this.", **part) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image, **part}, {"type": "text", "text": text}]}]


# --------------------------------------------------------------------------------------------------
# tokenizer and chat template
# --------------------------------------------------------------------------------------------------


def test_special_tokens_are_consecutive_in_qwen2_vl_order(tiny_engine):
    tok = tiny_engine.processor.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIALS]
    assert ids == list(range(ids[0], ids[0] + len(QWEN2VL_SPECIALS)))
    for token, token_id in zip(QWEN2VL_SPECIALS, ids):
        assert tok.encode(token) == [token_id]  # never split by BPE
        assert tok.convert_ids_to_tokens(token_id) == token
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    config = tiny_engine.model.config
    assert config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert config.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert tiny_engine.model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert tiny_engine.model.generation_config.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert config.text_config.vocab_size >= len(tok)


def test_chat_template_renders_qwen_chatml(tiny_engine):
    processor = tiny_engine.processor
    one_image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]
    expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is shown?<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert processor.apply_chat_template(one_image, tokenize=False, add_generation_prompt=True) == expected
    assert processor.tokenizer.apply_chat_template(one_image, tokenize=False, add_generation_prompt=True) == expected

    dialogue = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "image", "image": "a.png"},
                                     {"type": "text", "text": " and "}, {"type": "image", "image": "b.png"}]},
    ]
    expected = ("<|im_start|>system\nBe brief.<|im_end|>\n"
                "<|im_start|>user\nHi<|im_end|>\n"
                "<|im_start|>assistant\nHello.<|im_end|>\n"
                "<|im_start|>user\nCompare <|vision_start|><|image_pad|><|vision_end|> and "
                "<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n")
    assert processor.apply_chat_template(dialogue, tokenize=False, add_generation_prompt=False) == expected


@pytest.mark.parametrize("text", [
    "Hello, world!",
    "  leading and trailing spaces  \n\ttabs\r\n",
    "你好 世界。🦒 naïve café — ünïcödé",
    "def f(x):\n    return x ** 2  # comment",
    "<|im_start|>user\nhi<|im_end|>\n<|vision_start|><|image_pad|><|vision_end|>",
    "",
])
def test_text_round_trips(tiny_engine, text):
    tok = tiny_engine.processor.tokenizer
    assert tok.decode(tok.encode(text)) == text


# --------------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["default", "mrope++"])
def test_greedy_generation_matches_transformers_own_positions(engines, mixed_chat, kind):
    engine = engines[kind]
    inputs = engine.prepare(mixed_chat)
    assert inputs.image_grid_thw.shape[0] == 3 and len({tuple(g) for g in inputs.image_grid_thw.tolist()}) == 3
    gen = engine.generate(mixed_chat, max_new_tokens=NEW_TOKENS)
    assert isinstance(gen, Generation)
    assert gen.prompt_tokens == inputs.num_tokens
    assert gen.completion_tokens == len(gen.token_ids)
    eos = engine.model.generation_config.eos_token_id
    if gen.finish_reason == "length":
        assert gen.completion_tokens == NEW_TOKENS and eos not in gen.token_ids
    else:
        assert gen.token_ids[-1] == eos and gen.completion_tokens <= NEW_TOKENS
    assert gen.plan is not None and [f.tokens for f in gen.plan.frames] == [f.tokens for f in inputs.plan.frames]
    assert gen.text == engine.processor.tokenizer.decode(gen.token_ids, skip_special_tokens=True)

    reference = _reference_generate(engine, inputs, NEW_TOKENS)
    assert gen.token_ids == reference.sequences[0, inputs.num_tokens:].tolist()
    # the same, step by step, on the logits: our positions path (explicit position_ids) vs transformers' own
    ours = engine.model.generate(**inputs.model_kwargs(), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 pad_token_id=engine.model.generation_config.pad_token_id, eos_token_id=eos,
                                 return_dict_in_generate=True, output_logits=True)
    assert len(ours.logits) == len(reference.logits)
    for a, b in zip(ours.logits, reference.logits):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_generation_is_not_degenerate(engines, mixed_chat):
    """Guard for the comparison above: the seed-3 model emits more than one distinct token."""
    assert len(set(engines["default"].generate(mixed_chat, max_new_tokens=NEW_TOKENS).token_ids)) > 1


def test_mrope_plus_plus_engine_is_extended(engines, tiny_engine, mixed_chat):
    base, ext = engines["default"], engines["mrope++"]
    assert base.context_length == TINY_CONTEXT_TOKENS == 4096
    assert ext.context_length == 32768
    assert ext.rope_parameters["rope_type"] == "mrope_plus_plus"
    assert base.rope_parameters["rope_type"] == "default"
    f_base, f_ext = _inv_freq(base), _inv_freq(ext)
    assert torch.equal(f_base, _inv_freq(tiny_engine))
    assert not torch.allclose(f_base, f_ext)
    # PAPER.md §1 with s = 32768 / 4096 = 8, mrope_section [4, 6, 6] (16 pairs, head_dim 32):
    # temporal pairs untouched, width pairs divided by s, height ramps from 1 down to 1/s
    section = base.rope_parameters["mrope_section"]
    assert section == [4, 6, 6] and f_base.numel() == 16
    t, h = section[0], section[0] + section[1]
    torch.testing.assert_close(f_ext[:t], f_base[:t])
    torch.testing.assert_close(f_ext[h:], f_base[h:] / 8)
    ratio = f_ext[t:h] / f_base[t:h]
    assert float(ratio[0]) == pytest.approx(1.0) and float(ratio[-1]) == pytest.approx(1 / 8)
    assert bool((ratio[1:] <= ratio[:-1] + 1e-7).all())
    # same weights, different rotation: the extension is used by the forward pass
    for (name, p), (_, q) in zip(base.model.named_parameters(), ext.model.named_parameters()):
        assert torch.equal(p, q), name
    inputs = base.prepare(mixed_chat)
    with torch.no_grad():
        assert not torch.allclose(base.model(**inputs.model_kwargs()).logits,
                                  ext.model(**inputs.model_kwargs()).logits)


def test_generation_stops_at_end_of_turn(engines, mixed_chat, monkeypatch):
    engine = engines["default"]
    first = engine.generate(mixed_chat, max_new_tokens=1).token_ids[0]
    monkeypatch.setattr(engine.model.generation_config, "eos_token_id", first)
    gen = engine.generate(mixed_chat, max_new_tokens=NEW_TOKENS)
    assert gen.token_ids == [first] and gen.completion_tokens == 1 and gen.finish_reason == "stop"


def test_generate_accepts_prepared_inputs(engines, mixed_chat):
    engine = engines["default"]
    assert (engine.generate(engine.prepare(mixed_chat), max_new_tokens=3).token_ids
            == engine.generate(mixed_chat, max_new_tokens=3).token_ids)


@pytest.mark.slow
def test_sampling_with_a_seed_is_reproducible_and_leaves_global_rng(engines, mixed_chat):
    engine = engines["default"]
    state = torch.get_rng_state()
    a = engine.generate(mixed_chat, max_new_tokens=4, do_sample=True, temperature=1.5, seed=11)
    b = engine.generate(mixed_chat, max_new_tokens=4, do_sample=True, temperature=1.5, seed=11)
    assert a.token_ids == b.token_ids
    assert torch.equal(torch.get_rng_state(), state)


def test_text_only_generation(engines):
    gen = engines["mrope++"].generate([{"role": "user", "content": "Say something."}], max_new_tokens=3)
    assert gen.plan is None and 1 <= gen.completion_tokens <= 3


# --------------------------------------------------------------------------------------------------
# counting tokens and the context limit
# --------------------------------------------------------------------------------------------------


def test_count_tokens_is_text_plus_visual_tokens(tiny_engine, mixed_images):
    chat = _image_chat(mixed_images[0], "Describe this.", max_tokens=40)
    n = tiny_engine.count_tokens(chat)
    inputs = tiny_engine.prepare(chat)
    assert n == inputs.num_tokens == inputs.input_ids.shape[1] == inputs.attention_mask.sum()
    rendered = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this.<|im_end|>\n"
                "<|im_start|>assistant\n")
    text_tokens = len(tiny_engine.processor.tokenizer.encode(rendered))
    assert n == text_tokens - 1 + inputs.plan.visual_tokens  # the one placeholder expands to the frame's tokens
    assert tiny_engine.count_tokens(chat, default_max_tokens=5) == n  # the part's own tier wins
    assert tiny_engine.count_tokens(_image_chat(mixed_images[0])) > n


def test_count_tokens_equals_generation_prompt(engines, mixed_chat):
    engine = engines["default"]
    assert engine.count_tokens(mixed_chat) == engine.generate(mixed_chat, max_new_tokens=1).prompt_tokens


@pytest.fixture(scope="module")
def big_frame() -> Image.Image:
    return Image.new("RGB", (1920, 1080), (30, 60, 90))  # 1,222 tokens at the default cap


def test_context_overflow_is_an_input_error(tiny_engine, big_frame):
    chat = [{"role": "user", "content": [{"type": "image", "image": big_frame}] * 4 + [{"type": "text", "text": "?"}]}]
    assert tiny_engine.count_tokens(chat) > 4 * 1222 > TINY_CONTEXT_TOKENS
    with pytest.raises(InputError, match="context") as info:
        tiny_engine.generate(chat, max_new_tokens=1)
    assert "context_length" in str(info.value) and "4096" in str(info.value)


def test_context_limit_counts_new_tokens(tiny_engine, big_frame, monkeypatch):
    chat = _image_chat(big_frame)
    n = tiny_engine.count_tokens(chat)
    room = TINY_CONTEXT_TOKENS - n
    assert 0 < room < TINY_CONTEXT_TOKENS
    with pytest.raises(InputError, match="context_length"):
        tiny_engine.generate(chat, max_new_tokens=room + 1)

    eos = tiny_engine.model.generation_config.eos_token_id

    def fake_generate(input_ids, **kwargs):  # stands in for decoding `room` tokens
        return torch.cat([input_ids, torch.tensor([[eos]])], dim=1)

    monkeypatch.setattr(tiny_engine.model, "generate", fake_generate)
    gen = tiny_engine.generate(chat, max_new_tokens=room)  # exactly fills the context: allowed
    assert gen.finish_reason == "stop" and gen.prompt_tokens == n


def test_extended_engine_accepts_what_the_default_rejects(engines, big_frame, monkeypatch):
    chat = [{"role": "user", "content": [{"type": "image", "image": big_frame}] * 4}]
    with pytest.raises(InputError):
        engines["default"].generate(chat, max_new_tokens=1)
    engine = engines["mrope++"]
    eos = engine.model.generation_config.eos_token_id
    monkeypatch.setattr(engine.model, "generate",
                        lambda input_ids, **kw: torch.cat([input_ids, torch.tensor([[eos]])], dim=1))
    assert engine.generate(chat, max_new_tokens=1).prompt_tokens > TINY_CONTEXT_TOKENS


@pytest.mark.parametrize("bad", [0, -1])
def test_max_new_tokens_must_be_positive(tiny_engine, bad):
    with pytest.raises(InputError, match="max_new_tokens"):
        tiny_engine.generate([{"role": "user", "content": "hi"}], max_new_tokens=bad)


# --------------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------------


def test_tiny_engine_basics(tiny_engine):
    assert tiny_engine.name == "tiny"
    assert tiny_engine.device == torch.device("cpu") and tiny_engine.dtype == torch.float32
    assert tiny_engine.model.config._attn_implementation == "sdpa"
    assert not tiny_engine.model.training
    assert "context_length=4096" in repr(tiny_engine) and "'default'" in repr(tiny_engine)
    assert sum(p.numel() for p in tiny_engine.model.parameters()) < 5_000_000


def test_tiny_is_deterministic_and_leaves_global_rng(tiny_engine):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    again, other = load("tiny"), load("tiny", seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    same = dict(again.model.named_parameters())
    diff = dict(other.model.named_parameters())
    for name, p in tiny_engine.model.named_parameters():
        assert torch.equal(p, same[name]), name
    assert any(not torch.equal(p, diff[name]) for name, p in tiny_engine.model.named_parameters())


def test_choose_attention():
    assert choose_attention("cpu", torch.float32) == "sdpa"
    assert choose_attention(torch.device("cpu"), torch.bfloat16) == "sdpa"
    assert choose_attention("cuda", torch.float32) == "sdpa"  # FlashAttention-2 needs half precision


def test_save_then_load_gives_identical_logits(tiny_engine, saved_dir, mixed_chat):
    loaded = load(str(saved_dir))
    assert isinstance(loaded, Engine) and loaded.name == str(saved_dir)
    assert loaded.rope_parameters == tiny_engine.rope_parameters
    assert loaded.context_length == tiny_engine.context_length
    assert loaded.geometry == tiny_engine.geometry
    assert loaded.tokens == tiny_engine.tokens
    assert loaded.processor.tokenizer.chat_template == tiny_engine.processor.tokenizer.chat_template
    a, b = tiny_engine.prepare(mixed_chat), loaded.prepare(mixed_chat)
    for key in ("input_ids", "position_ids", "pixel_values", "image_grid_thw"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    with torch.no_grad():
        torch.testing.assert_close(tiny_engine.model(**a.model_kwargs()).logits,
                                   loaded.model(**b.model_kwargs()).logits, rtol=0, atol=0)
    assert loaded.model.generation_config.eos_token_id == tiny_engine.model.generation_config.eos_token_id


def test_load_saved_default_model_with_mrope_plus_plus(saved_dir, engines):
    extended = load(str(saved_dir), context_length=32768)
    assert extended.context_length == 32768
    assert extended.rope_parameters["rope_type"] == "mrope_plus_plus"
    assert extended.rope_parameters["factor"] == pytest.approx(8.0)
    torch.testing.assert_close(_inv_freq(extended), _inv_freq(engines["mrope++"]))
    again = load(str(saved_dir))  # the saved directory itself is untouched
    assert again.context_length == 4096 and again.rope_parameters["rope_type"] == "default"


def test_load_extended_save_round_trip(engines, tmp_path):
    path = engines["mrope++"].save_pretrained(tmp_path / "ext")
    loaded = load(str(path))
    assert loaded.rope_parameters == engines["mrope++"].rope_parameters
    assert loaded.context_length == 32768
    torch.testing.assert_close(_inv_freq(loaded), _inv_freq(engines["mrope++"]))


def test_load_accepts_the_path_save_pretrained_returns(saved_dir):
    assert load(saved_dir).context_length == 4096


def test_missing_directory_is_a_model_load_error(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ModelLoadError, match="no_such_model") as info:
        load(str(missing))
    assert isinstance(info.value, OSError)
    with pytest.raises(ModelLoadError):
        load("./definitely/not/here")


def _broken_copy(engine: Engine, directory, damage: str):
    engine.save_pretrained(directory)
    if damage == "empty":
        for f in directory.iterdir():
            f.unlink()
    elif damage == "config only":
        for f in directory.iterdir():
            if f.name != "config.json":
                f.unlink()
    elif damage == "invalid json":
        (directory / "config.json").write_text("{not json", encoding="utf-8")
    elif damage == "no image processor":
        (directory / "processor_config.json").unlink()
    elif damage == "corrupt weights":
        (directory / "model.safetensors").write_bytes(b"garbage")
    elif damage == "no tokenizer.json":
        (directory / "tokenizer.json").unlink()
    return str(directory)


@pytest.mark.parametrize("damage", ["empty", "config only", "invalid json", "no image processor"])
def test_broken_directory_is_a_model_load_error(tiny_engine, tmp_path, damage):
    with pytest.raises(ModelLoadError, match="cannot load"):
        load(_broken_copy(tiny_engine, tmp_path / "m", damage))


def test_corrupt_weights_are_a_model_load_error(tiny_engine, tmp_path):
    with pytest.raises(ModelLoadError):
        load(_broken_copy(tiny_engine, tmp_path / "m", "corrupt weights"))


def test_tokenizer_inconsistent_with_config_is_rejected(tiny_engine, tmp_path):
    with pytest.raises((ModelLoadError, ConfigError)):
        load(_broken_copy(tiny_engine, tmp_path / "m", "no tokenizer.json"))


def test_non_qwen_vl_directory_is_a_config_error(tmp_path):
    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=100).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="llama"):
        load(str(tmp_path))


def test_unknown_hub_id_offline_is_a_model_load_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the env var is read at import
    with pytest.raises(ModelLoadError, match="giraffe-tests/no-such-model"):
        load("giraffe-tests/no-such-model")
    with pytest.raises(ModelLoadError):
        load("giraffe-tests/no-such-model", local_files_only=True)


def test_unknown_rope_method_is_a_config_error():
    with pytest.raises(ConfigError, match="rope"):
        load("tiny", context_length=32768, rope="bogus")
