"""Per-sample attention for packed rows (:mod:`training.attention`) on the tiny preset.

References: each sample run ALONE through an unmodified tiny model (``sdpa``) with plain PyTorch
cross-entropy on full logits; ``rope_index`` on each sample alone (M-RoPE positions).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from giraffe_core.engine import tiny_model
from giraffe_core.extras import is_available
from giraffe_core.positions import rope_index
from giraffe_core.samples import screenshot
from training.attention import PACKED_ATTENTION, packed_attention_forward, segment_lengths, select_for_packing
from training.collator import PackedCollator, PaddedCollator
from training.data.examples import IGNORE_INDEX, Encoder, Example
from training.loss import ChunkedLossModel


@pytest.fixture(scope="module")
def samples(tiny_engine):
    """Three samples: one image, text only, two images."""
    encoder = Encoder(tiny_engine.processor, tiny_engine.tokens)

    def image(w: int, h: int, seed: int, budget: int) -> dict:
        return {"type": "image", "image": screenshot(w, h, seed=seed), "max_tokens": budget}

    chats = [
        Example([{"role": "user", "content": [image(200, 120, 1, 20), {"type": "text", "text": "What colour?"}]},
                 {"role": "assistant", "content": "Blue, mostly."}], "a:1", "short_visual"),
        Example([{"role": "user", "content": "Say hello twice, politely."},
                 {"role": "assistant", "content": "Hello! Hello again."}], "b:1", "long_text"),
        Example([{"role": "user", "content": [image(100, 180, 2, 12), {"type": "text", "text": "and"},
                                              image(140, 140, 3, 30), {"type": "text", "text": "What changed?"}]},
                 {"role": "assistant", "content": "The title."}], "c:1", "interleaved"),
    ]
    return encoder.encode_many(chats)


def _alone(model, sample) -> torch.Tensor:
    kwargs = {"input_ids": sample.input_ids[None], "position_ids": sample.position_ids[:, None], "use_cache": False}
    if sample.pixel_values is not None:
        kwargs.update(pixel_values=sample.pixel_values, image_grid_thw=sample.image_grid_thw)
    logits = model(**kwargs).logits[0, :-1].float()
    return F.cross_entropy(logits, sample.labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")


def _packed_model() -> torch.nn.Module:
    model = tiny_model().float()
    assert select_for_packing(model) == PACKED_ATTENTION
    return model


def test_segment_lengths_follow_position_restarts():
    ids = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1, 2, 3]])
    assert segment_lengths(ids, 10) == [[3, 2, 1, 4]]
    assert segment_lengths(torch.arange(6)[None], 6) == [[6]]
    assert segment_lengths(None, 6) is None
    assert segment_lengths(ids, 9) is None  # positions of another length: not this row


def test_packed_losses_equal_each_sample_alone(samples, tiny_engine):
    reference_model = tiny_model().float()
    references = [_alone(reference_model, s).item() for s in samples]
    model = _packed_model()
    assert model.config.text_config._attn_implementation == PACKED_ATTENTION
    assert model.config.vision_config._attn_implementation != PACKED_ATTENTION
    batch = PackedCollator(tiny_engine.tokens, 0, pad_to_multiple_of=32)(samples)
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0, :-1].float()
    per_token = F.cross_entropy(logits, batch["labels"][0, 1:], ignore_index=IGNORE_INDEX, reduction="none")
    at = 0
    for sample, reference in zip(samples, references, strict=True):
        loss = per_token[at:at + sample.num_tokens - 1].sum().item()  # the sample's own next-token losses
        assert abs(loss - reference) / sample.num_label_tokens < 1e-5
        # per-sample M-RoPE positions: exactly those of the sample alone
        alone = rope_index(sample.input_ids[None], sample.image_grid_thw, tokens=tiny_engine.tokens).position_ids
        assert torch.equal(batch["position_ids"][1:, 0, at:at + sample.num_tokens], alone[:, 0])
        at += sample.num_tokens


def test_packed_gradients_equal_unpacked(samples, tiny_engine):
    reference_model = tiny_model().float().train()
    sum(_alone(reference_model, s) for s in samples).backward()
    model = _packed_model().train()
    ChunkedLossModel(model, chunk_tokens=16)(**PackedCollator(tiny_engine.tokens, 0)(samples)).backward()
    for name, param in reference_model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(model.get_parameter(name).grad, param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_control_without_restarts_samples_attend_across(samples, tiny_engine):
    """The attack: drop the text-position row, so nothing marks the samples' boundaries. The same
    kernel must then see one sequence and the loss must change (so the equality above can fail)."""
    model = _packed_model()
    wrapper = ChunkedLossModel(model, chunk_tokens=64)
    batch = PackedCollator(tiny_engine.tokens, 0)(samples)
    separated = wrapper(**batch).item()
    batch["position_ids"] = batch["position_ids"][1:]
    joined = wrapper(**batch).item()
    labels = sum(s.num_label_tokens for s in samples)
    assert abs(joined - separated) / labels > 1e-3


def test_padded_batches_and_cached_decoding_keep_sdpa_results(samples, tiny_engine):
    """With a padding mask (padded batch) or a cache (generation), the implementation must fall back
    to exactly what ``sdpa`` computes."""
    reference_model, model = tiny_model().float(), _packed_model()
    batch = PaddedCollator(tiny_engine.tokens, 0)(samples)
    expected = ChunkedLossModel(reference_model, 64)(**batch).item()
    assert abs(ChunkedLossModel(model, 64)(**batch).item() - expected) / abs(expected) < 1e-6
    ids = samples[1].input_ids[None]
    want = reference_model.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False), want)


def test_kernel_matches_a_dense_block_diagonal_mask():
    torch.manual_seed(0)
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = True, 2
    q, k, v = torch.randn(1, 4, 11, 8), torch.randn(1, 2, 11, 8), torch.randn(1, 2, 11, 8)
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 4]])
    out, _ = packed_attention_forward(module, q, k, v, None, scaling=0.3, position_ids=positions)
    doc = torch.tensor([0] * 4 + [1] * 2 + [2] * 5)
    mask = (doc[:, None] == doc[None]) & torch.ones(11, 11, dtype=torch.bool).tril()
    dense = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask,
                                           scale=0.3).transpose(1, 2)
    torch.testing.assert_close(out, dense)


@pytest.mark.skipif(not (is_available("accelerate") and is_available("peft")), reason="the train extra is missing")
@pytest.mark.parametrize(("packing", "expected"), [(True, PACKED_ATTENTION), (False, "sdpa")])
def test_trainer_selects_per_sample_attention_for_packed_rows(tmp_path, packing, expected):
    from test_trainer import colour_dataset, config_dict

    from training import Trainer, load_config

    data = colour_dataset(tmp_path / "data", 2)
    config = load_config(config_dict(tmp_path / "out", data, stages=[{"length_tokens": 512, "steps": 1}],
                                     tune={"method": "full"}, packing=packing))
    trainer = Trainer(config)
    trainer.setup()
    text = trainer.trained_model().config.text_config
    assert text._attn_implementation == expected
