"""Tests of M-RoPE++ and its baselines (giraffe_core.rope) against independent references.

Every expected frequency is computed here, in float64 NumPy, from the formulas of
shared/design/PAPER.md section 1 (M-RoPE++), the NTK-aware rule, PI and the YaRN paper; none
of them calls a helper of the code under test. They are compared with the ``inv_freq`` buffers
transformers' own rotary-embedding classes build from the config.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import (
    LlamaConfig,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLTextConfig,
)
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

import giraffe_core  # noqa: F401  (registers the rope types)
from giraffe_core.errors import ConfigError
from giraffe_core.rope import (
    ROPE_METHODS,
    apply_rope_extension,
    inverse_frequencies,
    pair_axes,
    rope_parameters_for,
    validate_rope_parameters,
)

RTOL = 1e-6
T, H, W = 0, 1, 2

# ------------------------------------------------------------------------------ NumPy references


def np_base_freq(theta: float, dim: int) -> np.ndarray:
    """theta_d = theta ** (-2d / dim) for pair d, float64."""
    return float(theta) ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)


def np_chunked_axes(section: list[int]) -> np.ndarray:
    """Qwen2-VL / 2.5-VL: the first s0 pairs t, the next s1 h, the last s2 w."""
    return np.array([T] * section[0] + [H] * section[1] + [W] * section[2])


def np_interleaved_axes(section: list[int], n_pairs: int) -> np.ndarray:
    """Qwen3-VL: pair i is h if i%3==1 and i<3*s1, w if i%3==2 and i<3*s2, else t."""
    axes = []
    for i in range(n_pairs):
        if i % 3 == 1 and i < 3 * section[1]:
            axes.append(H)
        elif i % 3 == 2 and i < 3 * section[2]:
            axes.append(W)
        else:
            axes.append(T)
    return np.array(axes)


def np_mrope_pp(theta: float, dim: int, axes: np.ndarray, s: float, original: int, ramp: str) -> np.ndarray:
    """M-RoPE++ (paper variant): t unchanged, w / s, h ramped from factor 1 down to 1/s."""
    base = np_base_freq(theta, dim)
    out = base.copy()
    h = np.flatnonzero(axes == H)
    first = h[np.argmax(base[h])]  # the h pair of highest frequency
    last = h[np.argmin(base[h])]  # the h pair of lowest frequency
    if ramp == "wavelength":
        wavelength = 2 * np.pi / base
        r = (s * original) / wavelength  # r_d = L_new / lambda_d
        g = (r[h] - r[last]) / (r[first] - r[last])
    else:
        g = (last - h) / (last - first)
    g = np.clip(g, 0.0, 1.0)
    out[h] = (1.0 / s + (1.0 - 1.0 / s) * g) * base[h]
    out[axes == W] = base[axes == W] / s
    return out


def np_ntk(theta: float, dim: int, s: float) -> np.ndarray:
    """NTK-aware: base -> base * s ** (dim / (dim - 2)) for every pair."""
    return np_base_freq(theta * s ** (dim / (dim - 2)), dim)


def np_release(theta: float, dim: int, axes: np.ndarray, s: float) -> np.ndarray:
    """The authors' released code: t unchanged, h and w NTK-aware."""
    return np.where(axes == T, np_base_freq(theta, dim), np_ntk(theta, dim, s))


def np_yarn(theta: float, dim: int, s: float, original: int, beta_fast: float = 32, beta_slow: float = 1):
    """YaRN (Peng et al. 2023): extrapolate pairs with more than beta_fast rotations over the original
    context, interpolate (/ s) pairs with fewer than beta_slow, a linear ramp in the pair index between
    (bounds truncated with floor/ceil, as in the paper's reference code); attention 0.1 ln s + 1."""
    base = np_base_freq(theta, dim)

    def pair_with_rotations(n_rotations: float) -> float:
        # r_d = original / lambda_d = original * theta ** (-2d/dim) / (2 pi) = n_rotations, solved for d
        return dim * math.log(original / (n_rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(pair_with_rotations(beta_fast)), 0)
    high = min(math.ceil(pair_with_rotations(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    interpolate = np.clip((np.arange(dim // 2) - low) / (high - low), 0.0, 1.0)
    freq = base / s * interpolate + base * (1.0 - interpolate)
    return freq, 0.1 * math.log(s) + 1.0


def assert_freq(actual: torch.Tensor, expected: np.ndarray) -> None:
    assert actual.dtype == torch.float32
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual.detach().cpu().double().numpy(), expected, rtol=RTOL, atol=0)


# ------------------------------------------------------------------------------------ configs

QWEN2_7B_SECTION = [16, 24, 24]
QWEN2_7B_THETA = 1_000_000.0
QWEN2_7B_ORIGINAL = 32768


def qwen2_7b_text(cls=Qwen2VLConfig):
    """Qwen2-VL-7B's text shape (head_dim 128, 64 pairs), one layer; only the config is built."""
    return cls(
        text_config={
            "hidden_size": 3584,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "num_hidden_layers": 1,
            "intermediate_size": 64,
            "vocab_size": 64,
            "max_position_embeddings": QWEN2_7B_ORIGINAL,
            "rope_parameters": {"rope_type": "default", "rope_theta": QWEN2_7B_THETA,
                                "mrope_section": list(QWEN2_7B_SECTION)},
        },
    )


TINY_SECTION = [4, 6, 6]  # head_dim 32 -> 16 pairs
TINY_THETA = 10_000.0
TINY_ORIGINAL = 64
TINY_IDS = {"image": 120, "video": 121, "vision_start": 122, "vision_end": 123}


def tiny_config(rope_parameters: dict | None = None) -> Qwen2VLConfig:
    """A one-layer Qwen2-VL (head_dim 32) with a one-block vision tower."""
    return Qwen2VLConfig(
        text_config={
            "vocab_size": 128,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": TINY_ORIGINAL,
            "rope_parameters": rope_parameters
            or {"rope_type": "default", "rope_theta": TINY_THETA, "mrope_section": list(TINY_SECTION)},
            "bos_token_id": None,
            "eos_token_id": 1,
            "pad_token_id": 0,
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=TINY_IDS["image"],
        video_token_id=TINY_IDS["video"],
        vision_start_token_id=TINY_IDS["vision_start"],
        vision_end_token_id=TINY_IDS["vision_end"],
    )


def tiny_model(config: Qwen2VLConfig, state_dict: dict | None = None) -> Qwen2VLForConditionalGeneration:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2VLForConditionalGeneration(config)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.eval()


def text_image_inputs() -> dict:
    """Text, one 56x56 image (4x4 patches -> 4 merged tokens), text."""
    gen = torch.Generator().manual_seed(1)
    grid = torch.tensor([[1, 4, 4]])
    ids = (
        torch.randint(2, 100, (7,), generator=gen).tolist()
        + [TINY_IDS["vision_start"]] + [TINY_IDS["image"]] * 4 + [TINY_IDS["vision_end"]]
        + torch.randint(2, 100, (9,), generator=gen).tolist()
    )
    return {
        "input_ids": torch.tensor([ids]),
        "mm_token_type_ids": torch.tensor([[int(i == TINY_IDS["image"]) for i in ids]]),  # text 0, image 1
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "pixel_values": torch.randn(16, 3 * 2 * 14 * 14, generator=gen),
        "image_grid_thw": grid,
    }


def language_inv_freq(model) -> torch.Tensor:
    return model.model.language_model.rotary_emb.inv_freq


def qwen3_text(section=(24, 20, 20), theta=5_000_000.0, original=1024) -> Qwen3VLTextConfig:
    return Qwen3VLTextConfig(
        hidden_size=256,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=128,
        num_hidden_layers=1,
        intermediate_size=64,
        vocab_size=64,
        max_position_embeddings=original,
        rope_parameters={"rope_type": "default", "rope_theta": theta, "mrope_section": list(section),
                         "mrope_interleaved": True},
    )


# --------------------------------------------------------------- M-RoPE++ paper variant, chunked


@pytest.mark.parametrize("s", [4, 8])
@pytest.mark.parametrize("method,ramp", [("mrope_plus_plus", "wavelength"), ("mrope_plus_plus_index", "pair_index")])
def test_mrope_pp_qwen2_7b_frequencies(method, ramp, s):
    config = qwen2_7b_text()
    apply_rope_extension(config, s * QWEN2_7B_ORIGINAL, method)
    params = config.text_config.rope_parameters
    assert params["rope_type"] == "mrope_plus_plus" and params["ramp"] == ramp and params["variant"] == "paper"
    assert params["factor"] == s and params["original_max_position_embeddings"] == QWEN2_7B_ORIGINAL

    rotary = Qwen2VLRotaryEmbedding(config.text_config)
    axes = np_chunked_axes(QWEN2_7B_SECTION)
    expected = np_mrope_pp(QWEN2_7B_THETA, 128, axes, s, QWEN2_7B_ORIGINAL, ramp)
    assert_freq(rotary.inv_freq, expected)
    assert rotary.attention_scaling == 1.0

    base = np_base_freq(QWEN2_7B_THETA, 128)
    got = rotary.inv_freq.double().numpy()
    np.testing.assert_allclose(got[:16], base[:16], rtol=RTOL)  # t pairs unchanged
    np.testing.assert_allclose(got[40:], base[40:] / s, rtol=RTOL)  # w pairs theta / s
    factor_h = got[16:40] / base[16:40]
    assert factor_h[0] == pytest.approx(1.0, rel=RTOL)  # first h pair: factor 1
    assert factor_h[-1] == pytest.approx(1.0 / s, rel=RTOL)  # last h pair: factor 1/s
    assert np.all(np.diff(factor_h) < 0)  # strictly decreasing in between
    if ramp == "pair_index":
        np.testing.assert_allclose(factor_h, np.linspace(1.0, 1.0 / s, 24), rtol=RTOL)


@pytest.mark.parametrize("s", [4, 8])
@pytest.mark.parametrize("method,ramp", [("mrope_plus_plus", "wavelength"), ("mrope_plus_plus_index", "pair_index")])
def test_mrope_pp_tiny_model_buffer(method, ramp, s):
    config = apply_rope_extension(tiny_config(), s * TINY_ORIGINAL, method)
    model = tiny_model(config)
    expected = np_mrope_pp(TINY_THETA, 32, np_chunked_axes(TINY_SECTION), s, TINY_ORIGINAL, ramp)
    assert_freq(language_inv_freq(model), expected)
    base = np_base_freq(TINY_THETA, 32)
    got = language_inv_freq(model).double().numpy()
    np.testing.assert_allclose(got[:4], base[:4], rtol=RTOL)
    np.testing.assert_allclose(got[10:], base[10:] / s, rtol=RTOL)
    assert got[4] / base[4] == pytest.approx(1.0, rel=RTOL)
    assert got[9] / base[9] == pytest.approx(1.0 / s, rel=RTOL)


def test_wavelength_and_pair_index_ramps_differ():
    """The two readings of the paper's ramp are different functions (not a no-op parameter)."""
    a = Qwen2VLRotaryEmbedding(apply_rope_extension(qwen2_7b_text(), 8 * QWEN2_7B_ORIGINAL).text_config)
    b = Qwen2VLRotaryEmbedding(
        apply_rope_extension(qwen2_7b_text(), 8 * QWEN2_7B_ORIGINAL, "mrope_plus_plus_index").text_config
    )
    assert torch.equal(a.inv_freq[:17], b.inv_freq[:17]) and torch.equal(a.inv_freq[39:], b.inv_freq[39:])
    assert not torch.allclose(a.inv_freq[17:39], b.inv_freq[17:39], rtol=1e-3)


def test_qwen2_forward_uses_chunked_layout():
    config = apply_rope_extension(qwen2_7b_text(), 4 * QWEN2_7B_ORIGINAL)
    rotary = Qwen2VLRotaryEmbedding(config.text_config)
    freq = np_mrope_pp(QWEN2_7B_THETA, 128, np_chunked_axes(QWEN2_7B_SECTION), 4, QWEN2_7B_ORIGINAL, "wavelength")
    _check_cos(rotary, freq, np_chunked_axes(QWEN2_7B_SECTION))


# ----------------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("s", [4, 8])
def test_release_variant(s):
    config = apply_rope_extension(qwen2_7b_text(), s * QWEN2_7B_ORIGINAL, "giraffe_release")
    assert config.text_config.rope_parameters["variant"] == "release"
    rotary = Qwen2VLRotaryEmbedding(config.text_config)
    axes = np_chunked_axes(QWEN2_7B_SECTION)
    assert_freq(rotary.inv_freq, np_release(QWEN2_7B_THETA, 128, axes, s))
    np.testing.assert_allclose(rotary.inv_freq[:16].double().numpy(), np_base_freq(QWEN2_7B_THETA, 128)[:16],
                               rtol=RTOL)
    assert rotary.attention_scaling == 1.0


@pytest.mark.parametrize("s", [4, 8])
def test_giraffe_ntk(s):
    config = apply_rope_extension(qwen2_7b_text(), s * QWEN2_7B_ORIGINAL, "ntk")
    assert config.text_config.rope_parameters["rope_type"] == "giraffe_ntk"
    rotary = Qwen2VLRotaryEmbedding(config.text_config)
    assert_freq(rotary.inv_freq, np_ntk(QWEN2_7B_THETA, 128, s))
    assert rotary.inv_freq[0].item() == 1.0  # the highest frequency is never scaled by NTK-aware
    assert rotary.attention_scaling == 1.0


@pytest.mark.parametrize("s", [4, 8])
def test_pi_linear(s):
    config = apply_rope_extension(qwen2_7b_text(), s * QWEN2_7B_ORIGINAL, "pi")
    assert config.text_config.rope_parameters["rope_type"] == "linear"
    rotary = Qwen2VLRotaryEmbedding(config.text_config)
    assert_freq(rotary.inv_freq, np_base_freq(QWEN2_7B_THETA, 128) / s)
    assert rotary.attention_scaling == 1.0


@pytest.mark.parametrize("s", [4, 8])
def test_yarn(s):
    config = apply_rope_extension(qwen2_7b_text(), s * QWEN2_7B_ORIGINAL, "yarn")
    params = config.text_config.rope_parameters
    assert params["rope_type"] == "yarn" and params["original_max_position_embeddings"] == QWEN2_7B_ORIGINAL
    rotary = Qwen2VLRotaryEmbedding(config.text_config)
    expected, attention = np_yarn(QWEN2_7B_THETA, 128, s, QWEN2_7B_ORIGINAL)
    assert_freq(rotary.inv_freq, expected)
    assert rotary.attention_scaling == pytest.approx(attention, rel=1e-12)
    assert rotary.attention_scaling == pytest.approx(0.1 * math.log(s) + 1.0, rel=1e-12)


def test_baselines_on_tiny_model():
    s = 4
    cases = {
        "ntk": np_ntk(TINY_THETA, 32, s),
        "giraffe_release": np_release(TINY_THETA, 32, np_chunked_axes(TINY_SECTION), s),
        "pi": np_base_freq(TINY_THETA, 32) / s,
        "yarn": np_yarn(TINY_THETA, 32, s, TINY_ORIGINAL)[0],
    }
    for method, expected in cases.items():
        model = tiny_model(apply_rope_extension(tiny_config(), s * TINY_ORIGINAL, method))
        assert_freq(language_inv_freq(model), expected)


@pytest.mark.parametrize("method", ["mrope_plus_plus", "mrope_plus_plus_index", "giraffe_release", "ntk", "pi", "yarn"])
def test_qwen2_5_vl_same_as_qwen2_vl(method):
    s = 8
    c2 = apply_rope_extension(qwen2_7b_text(Qwen2VLConfig), s * QWEN2_7B_ORIGINAL, method)
    c25 = apply_rope_extension(qwen2_7b_text(Qwen2_5_VLConfig), s * QWEN2_7B_ORIGINAL, method)
    assert c25.text_config.model_type == "qwen2_5_vl_text"
    assert c25.text_config.rope_parameters == c2.text_config.rope_parameters
    r2 = Qwen2VLRotaryEmbedding(c2.text_config)
    r25 = Qwen2_5_VLRotaryEmbedding(c25.text_config)
    assert torch.equal(r2.inv_freq, r25.inv_freq)
    assert r2.attention_scaling == r25.attention_scaling
    if method == "mrope_plus_plus":
        expected = np_mrope_pp(QWEN2_7B_THETA, 128, np_chunked_axes(QWEN2_7B_SECTION), s, QWEN2_7B_ORIGINAL,
                               "wavelength")
        assert_freq(r25.inv_freq, expected)
    assert pair_axes(c25).tolist() == np_chunked_axes(QWEN2_7B_SECTION).tolist()


# ----------------------------------------------------------------------------- Qwen3-VL layout


def _check_cos(rotary, freq: np.ndarray, axes: np.ndarray) -> None:
    """The rotary embedding's cos/sin for 3-D positions equal cos/sin(pos[axis(pair)] * freq[pair])."""
    n = 12
    t = np.arange(n, dtype=np.int64)
    h = 100 + 3 * np.arange(n)
    w = 11 + 7 * np.arange(n)
    pos = np.stack([t, h, w])  # (3, n)
    position_ids = torch.from_numpy(pos)[:, None, :]  # (3, batch 1, n)
    x = torch.zeros(1, n, 8, dtype=torch.float32)
    cos, sin = rotary(x, position_ids)
    angle = pos[axes, :].T * freq[None, :]  # (n, pairs): each pair rotated by its own axis's position
    expected_cos = np.concatenate([np.cos(angle), np.cos(angle)], axis=-1)
    expected_sin = np.concatenate([np.sin(angle), np.sin(angle)], axis=-1)
    np.testing.assert_allclose(cos[0].double().numpy(), expected_cos, atol=2e-4, rtol=0)
    np.testing.assert_allclose(sin[0].double().numpy(), expected_sin, atol=2e-4, rtol=0)


def test_qwen3_pair_axes_interleaved():
    text = qwen3_text()
    expected = np_interleaved_axes([24, 20, 20], 64)
    assert [int((expected == a).sum()) for a in (T, H, W)] == [24, 20, 20]
    assert pair_axes(text).tolist() == expected.tolist()
    composite = Qwen3VLConfig(text_config=text.to_dict())
    assert pair_axes(composite).tolist() == expected.tolist()
    # and it is not the chunked layout
    assert expected.tolist() != np_chunked_axes([24, 20, 20]).tolist()
    # a second valid section
    other = qwen3_text(section=(22, 21, 21))
    assert pair_axes(other).tolist() == np_interleaved_axes([22, 21, 21], 64).tolist()


@pytest.mark.parametrize("s", [4, 8])
@pytest.mark.parametrize("method,ramp", [("mrope_plus_plus", "wavelength"), ("mrope_plus_plus_index", "pair_index")])
def test_qwen3_mrope_pp_interleaved(method, ramp, s):
    original = 1024
    text = qwen3_text(original=original)
    apply_rope_extension(text, s * original, method)
    assert text.rope_parameters["mrope_interleaved"] is True
    rotary = Qwen3VLTextRotaryEmbedding(text)
    axes = np_interleaved_axes([24, 20, 20], 64)
    expected = np_mrope_pp(5_000_000.0, 128, axes, s, original, ramp)
    assert_freq(rotary.inv_freq, expected)
    base = np_base_freq(5_000_000.0, 128)
    got = rotary.inv_freq.double().numpy()
    h = np.flatnonzero(axes == H)
    assert h[0] == 1 and h[-1] == 58
    assert got[1] / base[1] == pytest.approx(1.0, rel=RTOL)  # highest-frequency h pair: factor 1
    assert got[58] / base[58] == pytest.approx(1.0 / s, rel=RTOL)  # lowest-frequency h pair: 1/s
    np.testing.assert_allclose(got[axes == T], base[axes == T], rtol=RTOL)
    np.testing.assert_allclose(got[axes == W], base[axes == W] / s, rtol=RTOL)
    # the forward pass rotates each pair with its interleaved axis at these frequencies
    _check_cos(rotary, expected, axes)


def test_qwen3_release_and_composite_config():
    original = 1024
    composite = Qwen3VLConfig(text_config=qwen3_text(original=original).to_dict())
    apply_rope_extension(composite, 8 * original, "giraffe_release")
    rotary = Qwen3VLTextRotaryEmbedding(composite.text_config)
    axes = np_interleaved_axes([24, 20, 20], 64)
    expected = np_release(5_000_000.0, 128, axes, 8)
    assert_freq(rotary.inv_freq, expected)
    _check_cos(rotary, expected, axes)


# -------------------------------------------------------------------------------------- logits


@pytest.fixture(scope="module")
def default_model():
    model = tiny_model(tiny_config())
    with torch.no_grad():
        logits = model(**text_image_inputs()).logits
    return model, logits


@pytest.mark.parametrize("method", ["mrope_plus_plus", "mrope_plus_plus_index", "giraffe_release", "ntk"])
def test_factor_one_equals_default_exactly(default_model, method):
    model, logits = default_model
    config = tiny_config()
    params = rope_parameters_for(config, TINY_ORIGINAL // 2, method)
    assert params["factor"] == 1.0 and params["rope_type"] in ("mrope_plus_plus", "giraffe_ntk")
    config.text_config.rope_parameters = params
    extended = tiny_model(config, model.state_dict())
    assert torch.equal(language_inv_freq(extended), language_inv_freq(model))
    with torch.no_grad():
        out = extended(**text_image_inputs()).logits
    assert torch.equal(out, logits)


@pytest.mark.parametrize("method", ["mrope_plus_plus", "mrope_plus_plus_index", "giraffe_release", "ntk", "pi", "yarn"])
def test_factor_above_one_changes_logits(default_model, method):
    model, _ = default_model
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(2, 100, (1, 2 * TINY_ORIGINAL), generator=gen)  # beyond the original context
    config = apply_rope_extension(tiny_config(), 4 * TINY_ORIGINAL, method)
    extended = tiny_model(config, model.state_dict())
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = extended(input_ids=ids).logits
    assert torch.isfinite(b).all()
    assert not torch.allclose(a, b)
    # the first token attends only to itself: position plays no role there
    torch.testing.assert_close(a[:, 0], b[:, 0])


# --------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("method", ["mrope_plus_plus", "mrope_plus_plus_index", "giraffe_release", "ntk"])
def test_builds_under_meta_device(method):
    """from_pretrained builds the model under a "meta" default device; our rope init must not fail there."""
    config = apply_rope_extension(qwen2_7b_text(), 131072, method)
    with torch.device("meta"):
        rotary = Qwen2VLRotaryEmbedding(config.text_config)
    assert rotary.inv_freq.device.type == "meta" and rotary.inv_freq.shape == (64,)
    with torch.device("meta"):
        axes = pair_axes(config)
    assert axes.device.type == "cpu"


_DUMP = textwrap.dedent(
    """
    import sys, torch
    with_giraffe, path, out = sys.argv[1] == "1", sys.argv[2], sys.argv[3]
    if with_giraffe:
        import giraffe_core  # noqa: F401
    from transformers import Qwen2VLForConditionalGeneration
    assert ("giraffe_core" in sys.modules) == with_giraffe
    model = Qwen2VLForConditionalGeneration.from_pretrained(path)
    rotary = model.model.language_model.rotary_emb
    torch.save({"inv_freq": rotary.inv_freq, "attention_scaling": rotary.attention_scaling,
                "rope_parameters": dict(model.config.text_config.rope_parameters),
                "max_position_embeddings": model.config.text_config.max_position_embeddings}, out)
    """
)


@pytest.fixture(scope="module")
def saved_extended(tmp_path_factory):
    path = tmp_path_factory.mktemp("extended")
    config = apply_rope_extension(tiny_config(), 131072)
    model = tiny_model(config)
    model.save_pretrained(path)
    return path, model


def _run_dump(with_giraffe: bool, path, out) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", _DUMP, "1" if with_giraffe else "0", str(path), str(out)],
        check=False, capture_output=True, text=True, env=env, cwd=path, timeout=120,
    )


@pytest.mark.slow
def test_round_trip_fresh_process(saved_extended, tmp_path):
    path, model = saved_extended
    out = tmp_path / "dump.pt"
    result = _run_dump(True, path, out)
    assert result.returncode == 0, result.stderr[-3000:]
    dumped = torch.load(out)
    assert torch.equal(dumped["inv_freq"], language_inv_freq(model))
    assert dumped["attention_scaling"] == 1.0
    assert dumped["rope_parameters"] == dict(model.config.text_config.rope_parameters)
    assert dumped["rope_parameters"]["rope_type"] == "mrope_plus_plus"
    assert dumped["rope_parameters"]["factor"] == 131072 / TINY_ORIGINAL
    assert dumped["max_position_embeddings"] == 131072
    expected = np_mrope_pp(TINY_THETA, 32, np_chunked_axes(TINY_SECTION), 131072 / TINY_ORIGINAL, TINY_ORIGINAL,
                           "wavelength")
    assert_freq(dumped["inv_freq"], expected)


@pytest.mark.slow
def test_fresh_process_without_giraffe_core_cannot_build(saved_extended, tmp_path):
    """Documents why giraffe_core must be imported before loading an extended checkpoint."""
    path, _ = saved_extended
    result = _run_dump(False, path, tmp_path / "dump.pt")
    assert result.returncode != 0
    assert "KeyError" in result.stderr and "mrope_plus_plus" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "dump.pt").exists()


# ------------------------------------------------------------------------- rope_parameters_for


def test_rope_parameters_for_scale():
    config = qwen2_7b_text()
    assert rope_parameters_for(config, 131072)["factor"] == 4.0
    assert rope_parameters_for(config, 262144)["factor"] == 8.0
    assert rope_parameters_for(config.text_config, 49152)["factor"] == 1.5  # text config works too
    assert rope_parameters_for(config, 1000)["factor"] == 1.0  # never below 1
    assert rope_parameters_for(config, 32768)["factor"] == 1.0
    params = rope_parameters_for(config, 131072)
    assert params["original_max_position_embeddings"] == 32768
    assert params["mrope_section"] == QWEN2_7B_SECTION and params["rope_theta"] == QWEN2_7B_THETA
    # the helper does not modify the config
    assert config.text_config.rope_parameters["rope_type"] == "default"
    assert config.text_config.max_position_embeddings == 32768


def test_rope_parameters_for_already_extended():
    config = apply_rope_extension(qwen2_7b_text(), 131072)
    assert config.text_config.max_position_embeddings == 131072
    assert config.text_config.rope_parameters["original_max_position_embeddings"] == 32768
    # s comes from the original context, not from the raised max_position_embeddings
    assert rope_parameters_for(config, 262144)["factor"] == 8.0
    assert rope_parameters_for(config, 131072, "yarn")["original_max_position_embeddings"] == 32768
    apply_rope_extension(config, 262144, "mrope_plus_plus_index")
    assert config.text_config.rope_parameters["factor"] == 8.0
    assert config.text_config.rope_parameters["original_max_position_embeddings"] == 32768
    assert config.text_config.max_position_embeddings == 262144


def test_rope_parameters_for_after_pi():
    """PI ("linear") stores no original context; it must still not be lost on re-extension."""
    config = apply_rope_extension(qwen2_7b_text(), 131072, "pi")
    assert config.text_config.rope_parameters == {"rope_type": "linear", "factor": 4.0,
                                                  "rope_theta": QWEN2_7B_THETA, "mrope_section": QWEN2_7B_SECTION}
    assert rope_parameters_for(config, 131072)["factor"] == 4.0
    assert rope_parameters_for(config, 131072)["original_max_position_embeddings"] == 32768
    apply_rope_extension(config, 65536, "pi")
    assert config.text_config.rope_parameters["factor"] == 2.0
    assert config.text_config.max_position_embeddings == 65536
    assert rope_parameters_for(config, 262144)["factor"] == 8.0


def test_rope_parameters_for_methods():
    config = qwen2_7b_text()
    none = rope_parameters_for(config, 131072, "none")
    assert none["rope_type"] == "default" and "factor" not in none
    rotary = Qwen2VLRotaryEmbedding(apply_rope_extension(qwen2_7b_text(), 131072, "none").text_config)
    assert_freq(rotary.inv_freq, np_base_freq(QWEN2_7B_THETA, 128))
    types = {m: rope_parameters_for(config, 131072, m)["rope_type"] for m in ROPE_METHODS}
    assert types == {"none": "default", "pi": "linear", "ntk": "giraffe_ntk", "yarn": "yarn",
                     "mrope_plus_plus": "mrope_plus_plus", "mrope_plus_plus_index": "mrope_plus_plus",
                     "giraffe_release": "mrope_plus_plus"}
    with pytest.raises(ConfigError, match="unknown rope method 'mrope'"):
        rope_parameters_for(config, 131072, "mrope")
    with pytest.raises(ConfigError, match="unknown rope method"):
        apply_rope_extension(config, 131072, "longrope")
    for bad in (0, -5, 1.5, True, "131072"):
        with pytest.raises(ConfigError, match="context_length"):
            rope_parameters_for(config, bad)


def test_inverse_frequencies_helper_matches_buffer():
    config = apply_rope_extension(qwen2_7b_text(), 131072)
    assert torch.equal(inverse_frequencies(config), Qwen2VLRotaryEmbedding(config.text_config).inv_freq)


# -------------------------------------------------------------------------------------- errors


def _mpp(**overrides) -> dict:
    params = {"rope_type": "mrope_plus_plus", "rope_theta": TINY_THETA, "mrope_section": list(TINY_SECTION),
              "factor": 4.0, "original_max_position_embeddings": TINY_ORIGINAL}
    params.update(overrides)
    return params


BAD_PARAMETERS = [
    pytest.param(_mpp(factor=0.5), r"factor must be >= 1.*0\.5", id="factor<1"),
    pytest.param(_mpp(factor="4"), r"factor must be a number.*'4'", id="factor-str"),
    pytest.param(_mpp(factor=None), r"factor must be a number.*None", id="factor-none"),
    pytest.param(_mpp(factor=float("nan")), r"factor must be a number", id="factor-nan"),
    pytest.param(_mpp(factor=True), r"factor must be a number", id="factor-bool"),
    pytest.param(_mpp(mrope_section=[4, 6, 5]), r"mrope_section \[4, 6, 5\].*head_dim/2 = 16", id="section-sum"),
    pytest.param(_mpp(mrope_section=[4, 6]), r"mrope_section \[4, 6\]", id="section-len"),
    pytest.param(_mpp(ramp="linear"), r"ramp 'linear'", id="ramp"),
    pytest.param(_mpp(variant="yarn"), r"variant 'yarn'", id="variant"),
    pytest.param(_mpp(ramps="pair_index"), r"\['ramps'\]", id="typo-key"),
    pytest.param(_mpp(attention_factor=1.2), r"\['attention_factor'\]", id="foreign-key"),
    pytest.param(_mpp(original_max_position_embeddings=0), r"original_max_position_embeddings", id="original"),
    pytest.param({"rope_type": "giraffe_ntk", "rope_theta": TINY_THETA, "mrope_section": list(TINY_SECTION),
                  "factor": 0.25}, r"factor must be >= 1", id="ntk-factor<1"),
    pytest.param({"rope_type": "giraffe_ntk", "rope_theta": TINY_THETA, "mrope_section": list(TINY_SECTION),
                  "factor": 2.0, "ramp": "wavelength"}, r"\['ramp'\]", id="ntk-foreign-key"),
]


@pytest.mark.parametrize("params,message", BAD_PARAMETERS)
def test_bad_parameters_raise_when_checked(params, message):
    config = tiny_config(rope_parameters=copy.deepcopy(params))
    with pytest.raises(ConfigError, match=message):
        validate_rope_parameters(config)


@pytest.mark.parametrize("params,message", BAD_PARAMETERS)
def test_bad_parameters_raise_at_model_construction(params, message):
    config = tiny_config(rope_parameters=copy.deepcopy(params))
    with pytest.raises(ConfigError, match=message):
        Qwen2VLForConditionalGeneration(config)


def test_apply_rope_extension_checks_and_leaves_config_unchanged():
    config = tiny_config(rope_parameters={"rope_type": "default", "rope_theta": TINY_THETA,
                                          "mrope_section": [4, 6, 5]})
    before = copy.deepcopy(config.text_config.rope_parameters)
    with pytest.raises(ConfigError, match=r"mrope_section \[4, 6, 5\]"):
        apply_rope_extension(config, 4 * TINY_ORIGINAL)
    assert config.text_config.rope_parameters == before
    assert config.text_config.max_position_embeddings == TINY_ORIGINAL


def test_valid_parameters_pass_and_are_normalised():
    params = validate_rope_parameters(tiny_config(rope_parameters=_mpp()))
    assert params["ramp"] == "wavelength" and params["variant"] == "paper"
    assert params["mrope_section"] == TINY_SECTION
    # an integer factor is a number too
    validate_rope_parameters(tiny_config(rope_parameters=_mpp(factor=2)))


def test_model_without_mrope_is_rejected():
    llama = LlamaConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=1, intermediate_size=64,
                        vocab_size=64)
    for call in (lambda: rope_parameters_for(llama, 131072),
                 lambda: apply_rope_extension(llama, 131072),
                 lambda: validate_rope_parameters(llama),
                 lambda: pair_axes(llama)):
        with pytest.raises(ConfigError, match=r"'llama'.*M-RoPE"):
            call()
    assert llama.rope_parameters.get("rope_type") == "default"


@pytest.mark.parametrize("section", [(10, 27, 27), (20, 22, 22), (16, 24, 24), (24, 20, 19)])
def test_interleaved_section_that_does_not_fit(section):
    text = qwen3_text(section=section)
    if sum(section) == 64:
        match = r"does not fit the interleaved"
    else:
        match = r"summing to head_dim/2 = 64"
    with pytest.raises(ConfigError, match=match):
        apply_rope_extension(text, 4096)
    with pytest.raises(ConfigError, match=match):
        pair_axes(text)
    text.rope_parameters = {**text.rope_parameters, "rope_type": "mrope_plus_plus", "factor": 4.0,
                            "original_max_position_embeddings": 1024}
    with pytest.raises(ConfigError, match=match):
        Qwen3VLTextRotaryEmbedding(text)
