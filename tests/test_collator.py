"""Collation and the loss (:mod:`training.collator`, :mod:`training.loss`) on the tiny preset.

References: each sample run ALONE through the unmodified tiny model with plain PyTorch
cross-entropy on its full logits (the packed and padded batches must give the same summed loss,
within 1e-5, and the same gradients); ``rope_index`` on each sample alone (packed positions);
``torch.nn.functional.cross_entropy`` on full logits (chunked loss, values and gradients).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from giraffe_core.engine import tiny_model
from giraffe_core.errors import InputError
from giraffe_core.positions import rope_index
from giraffe_core.samples import screenshot
from training.collator import PackedCollator, PaddedCollator, pack_rows
from training.data.examples import IGNORE_INDEX, Encoder, Example
from training.loss import ChunkedLossModel, chunked_cross_entropy


@pytest.fixture(scope="module")
def encoder(tiny_engine):
    return Encoder(tiny_engine.processor, tiny_engine.tokens)


@pytest.fixture(scope="module")
def samples(encoder):
    """Four samples: images of mixed sizes and tiers, text only, multi-turn, and a completion."""
    def image(w: int, h: int, seed: int, budget: int) -> dict:
        return {"type": "image", "image": screenshot(w, h, seed=seed), "max_tokens": budget}

    chats = [
        Example([{"role": "user", "content": [image(200, 120, 1, 20), {"type": "text", "text": "What colour is it?"}]},
                 {"role": "assistant", "content": "Blue, mostly."}], "a:1", "short_visual"),
        Example([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."},
                 {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Again?"},
                 {"role": "assistant", "content": "Hello again."}], "b:1", "long_text"),
        Example([{"role": "user", "content": [image(100, 180, 2, 12), {"type": "text", "text": "and"},
                                              image(140, 140, 3, 30), {"type": "text", "text": "What changed?"}]},
                 {"role": "assistant", "content": "The title."}], "c:1", "interleaved"),
        Example([{"role": "user", "content": [image(160, 210, 4, 16), {"type": "text", "text": "Click the button."}]}],
                "d:1", "trajectory", completion='{"action": "click", "x": 500, "y": 300}'),
    ]
    return encoder.encode_many(chats)


def _alone(model, sample) -> torch.Tensor:
    """Summed next-token loss of one sample run alone, from full logits (the reference)."""
    kwargs = {"input_ids": sample.input_ids[None], "position_ids": sample.position_ids[:, None], "use_cache": False}
    if sample.pixel_values is not None:
        kwargs.update(pixel_values=sample.pixel_values, image_grid_thw=sample.image_grid_thw)
    logits = model(**kwargs).logits[0, :-1].float()
    return F.cross_entropy(logits, sample.labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")


def test_pack_rows_first_fit_never_cuts():
    rows = pack_rows([5, 3, 4, 2, 6, 1], 8, open_rows=2)
    assert sorted(i for row in rows for i in row) == list(range(6))
    assert all(sum([5, 3, 4, 2, 6, 1][i] for i in row) <= 8 for row in rows)
    assert rows == [[0, 1], [2, 3, 5], [4]]
    with pytest.raises(InputError, match="never cut"):
        pack_rows([3, 9], 8)


def test_packed_positions_restart_per_sample(samples, tiny_engine):
    batch = PackedCollator(tiny_engine.tokens, 0, pad_to_multiple_of=16)(samples)
    total = sum(s.num_tokens for s in samples)
    length = batch["input_ids"].shape[1]
    assert length % 16 == 0 and length - total < 16
    assert batch["position_ids"].shape == (4, 1, length)
    at = 0
    for s in samples:
        alone = rope_index(s.input_ids[None], s.image_grid_thw, tokens=tiny_engine.tokens).position_ids[:, 0]
        assert torch.equal(batch["position_ids"][1:, 0, at:at + s.num_tokens], alone)
        assert torch.equal(batch["position_ids"][0, 0, at:at + s.num_tokens], torch.arange(s.num_tokens))
        assert batch["labels"][0, at] == IGNORE_INDEX  # no predecessor inside its own sample
        at += s.num_tokens
    assert (batch["labels"][0, total:] == IGNORE_INDEX).all()
    assert torch.equal(batch["image_grid_thw"], torch.cat([s.image_grid_thw for s in samples if s.image_grid_thw
                                                           is not None]))
    with pytest.raises(InputError, match="more than a row"):
        PackedCollator(tiny_engine.tokens, 0, max_length=total - 1)(samples)


def test_packed_and_padded_loss_equal_each_sample_alone(samples, tiny_engine):
    model = tiny_model().float()
    reference = sum(_alone(model, s) for s in samples)
    wrapper = ChunkedLossModel(model, chunk_tokens=5)
    packed = wrapper(**PackedCollator(tiny_engine.tokens, 0, pad_to_multiple_of=32)(samples))
    padded = wrapper(**PaddedCollator(tiny_engine.tokens, 0)(samples))
    labels = sum(s.num_label_tokens for s in samples)
    assert abs(packed.item() - reference.item()) / labels < 1e-5
    assert abs(padded.item() - reference.item()) / labels < 1e-5
    # without the text-position row, the samples would attend to each other: the loss changes
    batch = PackedCollator(tiny_engine.tokens, 0)(samples)
    batch["position_ids"] = batch["position_ids"][1:]
    assert abs(wrapper(**batch).item() - reference.item()) / labels > 1e-3


def test_packed_gradients_equal_unpacked(samples, tiny_engine):
    model = tiny_model().float().train()
    sum(_alone(model, s) for s in samples).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ChunkedLossModel(model, chunk_tokens=8)(**PackedCollator(tiny_engine.tokens, 0)(samples)).backward()
    for name, grad in expected.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_chunked_cross_entropy_equals_plain(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(2, 13, 16, requires_grad=True)
    head = torch.nn.Linear(16, 50, bias=False)
    labels = torch.randint(0, 50, (2, 13))
    labels[0, :4] = IGNORE_INDEX
    labels[1, 9:] = IGNORE_INDEX
    plain = F.cross_entropy(head(hidden)[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    grads = torch.autograd.grad(plain, [hidden, head.weight])
    chunked = chunked_cross_entropy(hidden, head, labels, chunk_tokens=chunk)
    torch.testing.assert_close(chunked, plain)
    for got, want in zip(torch.autograd.grad(chunked, [hidden, head.weight]), grads):
        torch.testing.assert_close(got, want)
    none = torch.full_like(labels, IGNORE_INDEX)
    zero = chunked_cross_entropy(hidden, head, none)
    assert zero.item() == 0.0 and zero.requires_grad
