"""Edges of giraffe_core.rope checked against transformers itself and a float64 definition written here.

* Every family's default ``mrope_section`` (the one used when a config has none) is the one
  transformers' own rotary embedding assumes for that family's default config, and which pair
  rotates with which axis is read from transformers' own forward pass, not from our tables.
* The interleaved (Qwen3-VL) layout with height != width sections, and both edges of its fit check.
* An asymmetric interleaved section's M-RoPE++ frequencies against :func:`reference_mrope_pp`.
* The section is written back into the parameters; an unsupported family is refused everywhere.
"""

from __future__ import annotations

import copy
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import (
    LlamaConfig,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
    Qwen3VLConfig,
    Qwen3VLMoeConfig,
    Qwen3VLTextConfig,
)
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding
from transformers.models.qwen3_vl_moe.configuration_qwen3_vl_moe import Qwen3VLMoeTextConfig
from transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe import Qwen3VLMoeTextRotaryEmbedding

import giraffe_core  # noqa: F401  (registers the rope types)
from giraffe_core.errors import ConfigError
from giraffe_core.rope import (
    MROPE_PLUS_PLUS,
    NTK_AWARE,
    ROPE_METHODS,
    apply_rope_extension,
    inverse_frequencies,
    pair_axes,
    register_rope_types,
    rope_parameters_for,
    validate_rope_parameters,
)

#: family -> (transformers' default composite config, its text rotary embedding)
FAMILIES = {
    "qwen2_vl": (Qwen2VLConfig, Qwen2VLRotaryEmbedding),
    "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLRotaryEmbedding),
    "qwen3_vl": (Qwen3VLConfig, Qwen3VLTextRotaryEmbedding),
    "qwen3_vl_moe": (Qwen3VLMoeConfig, Qwen3VLMoeTextRotaryEmbedding),
}


def transformers_axes(rotary: torch.nn.Module) -> np.ndarray:
    """Which position (0 = t, 1 = h, 2 = w) each frequency pair rotates with, in transformers' forward.

    The three positions are 0.1, 0.2 and 0.3, so every angle is below 0.3 rad where sine is strictly
    increasing: the sine a pair comes out with names its position.
    """
    inv_freq = rotary.inv_freq.double()
    positions = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float32).view(3, 1, 1)
    _, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    out = sin[0, 0, : len(inv_freq)].double()
    candidates = torch.sin(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)[:, None] * inv_freq[None, :])
    return (out[None, :] - candidates).abs().argmin(0).numpy()


def default_config(family: str):
    """transformers' default config of ``family``, its rope parameters without an mrope_section."""
    config = FAMILIES[family][0]()
    assert "mrope_section" not in config.get_text_config(decoder=True).rope_parameters
    return config


# ------------------------------------------------------------------------------ default sections


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_default_section_is_transformers_default(family):
    config = default_config(family)
    text = config.get_text_config(decoder=True)
    rotary = FAMILIES[family][1](text)
    assert validate_rope_parameters(config)["mrope_section"] == list(rotary.mrope_section)
    assert rope_parameters_for(config, 10**6)["mrope_section"] == list(rotary.mrope_section)
    np.testing.assert_array_equal(pair_axes(config).numpy(), transformers_axes(rotary))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_written_back_section_is_what_a_model_uses(family):
    config = apply_rope_extension(default_config(family), 4 * 32768)
    text = config.get_text_config(decoder=True)
    section = text.rope_parameters["mrope_section"]
    rotary = FAMILIES[family][1](text)
    assert list(rotary.mrope_section) == section == list(FAMILIES[family][1](default_config(family).get_text_config(
        decoder=True)).mrope_section)
    assert torch.equal(rotary.inv_freq, inverse_frequencies(config))


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", ROPE_METHODS)
def test_every_method_writes_the_section(family, method):
    params = rope_parameters_for(default_config(family), 65536, method)
    assert params["mrope_section"] == list(FAMILIES[family][1](default_config(family).get_text_config(
        decoder=True)).mrope_section)


def test_an_explicit_section_wins_over_the_default():
    config = Qwen2VLConfig()
    text = config.get_text_config(decoder=True)
    text.rope_parameters = {**text.rope_parameters, "mrope_section": [32, 16, 16]}
    assert validate_rope_parameters(config)["mrope_section"] == [32, 16, 16]
    assert rope_parameters_for(config, 10**6)["mrope_section"] == [32, 16, 16]
    assert pair_axes(config).tolist() == [0] * 32 + [1] * 16 + [2] * 16
    np.testing.assert_array_equal(pair_axes(config).numpy(), transformers_axes(Qwen2VLRotaryEmbedding(text)))


# ------------------------------------------------------------------------ the interleaved layout


def qwen3_text(section: tuple[int, int, int], head_dim: int = 128, theta: float = 5e6,
               original: int = 1024, config_class: type = Qwen3VLTextConfig) -> Qwen3VLTextConfig:
    return config_class(
        hidden_size=2 * head_dim, num_attention_heads=2, num_key_value_heads=1, head_dim=head_dim,
        num_hidden_layers=1, intermediate_size=64, vocab_size=64, max_position_embeddings=original,
        rope_parameters={"rope_type": "default", "rope_theta": theta, "mrope_section": list(section),
                         "mrope_interleaved": True},
    )


#: (head_dim, section, fits): h needs 3*s1 - 2 < pairs, w needs 3*s2 - 1 < pairs
FIT_EDGES = [
    (128, (22, 21, 21), True),   # the largest h and w: pairs 61 (h) and 62 (w) of 64
    (128, (21, 22, 21), False),  # h would need pair 64
    (128, (21, 21, 22), False),  # w would need pair 65
    (128, (26, 21, 17), True),
    (128, (26, 17, 21), True),
    (128, (64, 0, 0), True),
    (64, (11, 11, 10), True),    # 32 pairs: h up to pair 31, w up to pair 29
    (64, (10, 12, 10), False),
    (64, (10, 11, 11), False),   # w would need pair 32
    (64, (12, 10, 10), True),
    (32, (6, 5, 5), True),       # 16 pairs: h up to pair 13, w up to pair 14
    (32, (4, 6, 6), False),
]


@pytest.mark.parametrize("family", [(Qwen3VLTextConfig, Qwen3VLTextRotaryEmbedding),
                                    (Qwen3VLMoeTextConfig, Qwen3VLMoeTextRotaryEmbedding)], ids=["dense", "moe"])
@pytest.mark.parametrize("head_dim,section,fits", FIT_EDGES)
def test_the_interleaved_fit_check_at_its_edges(family, head_dim, section, fits):
    text = qwen3_text(section, head_dim=head_dim, config_class=family[0])
    rotary = family[1](text)
    counts = np.bincount(transformers_axes(rotary), minlength=3).tolist()
    # transformers silently uses fewer h or w pairs than a section that does not fit asks for
    assert (counts == list(section)) is fits
    if fits:
        np.testing.assert_array_equal(pair_axes(text).numpy(), transformers_axes(rotary))
        assert validate_rope_parameters(text)["mrope_section"] == list(section)
    else:
        for call in (lambda: pair_axes(text), lambda: validate_rope_parameters(text),
                     lambda: apply_rope_extension(copy.deepcopy(text), 4096)):
            with pytest.raises(ConfigError, match="does not fit the interleaved"):
                call()


@pytest.mark.parametrize("section", [(16, 24, 24), (26, 21, 17), (26, 17, 21), (32, 16, 16)])
def test_the_chunked_layout_takes_any_section_that_sums(section):
    config = Qwen2VLConfig()
    text = config.get_text_config(decoder=True)
    text.rope_parameters = {**text.rope_parameters, "mrope_section": list(section)}
    axes = pair_axes(config)
    assert axes.tolist() == [0] * section[0] + [1] * section[1] + [2] * section[2]
    np.testing.assert_array_equal(axes.numpy(), transformers_axes(Qwen2VLRotaryEmbedding(text)))


@pytest.mark.parametrize("section", [(16, 24, 23), (16, 24, 25), (-1, 33, 32), (16, 48), (16, 24, 24, 0)])
def test_a_section_that_does_not_sum_to_the_pairs_is_refused(section):
    for text in (qwen3_text((24, 20, 20)), Qwen2VLConfig().get_text_config(decoder=True)):
        text.rope_parameters = {**text.rope_parameters, "mrope_section": list(section)}
        with pytest.raises(ConfigError, match="must be three non-negative sizes summing to head_dim/2 = 64\n"):
            pair_axes(text)


def reference_mrope_pp(theta: float, dim: int, section: tuple[int, int, int], s: float, ramp: str) -> np.ndarray:
    """M-RoPE++ (paper variant) on the interleaved layout, float64, written from the module docstring:
    pair i is h if i % 3 == 1 and i < 3*s1, w if i % 3 == 2 and i < 3*s2, else t; t keeps theta_i, w gets
    theta_i / s, h gets (1/s + (1 - 1/s) g_i) theta_i with g from 1 (its highest frequency) to 0 (its lowest),
    linear in theta_i ("wavelength") or in i ("pair_index")."""
    i = np.arange(dim // 2)
    theta_i = theta ** (-2.0 * i / dim)
    is_h = (i % 3 == 1) & (i < 3 * section[1])
    is_w = (i % 3 == 2) & (i < 3 * section[2])
    out = theta_i.copy()
    if ramp == "wavelength":
        g = (theta_i[is_h] - theta_i[is_h].min()) / (theta_i[is_h].max() - theta_i[is_h].min())
    else:
        g = (i[is_h].max() - i[is_h]) / (i[is_h].max() - i[is_h].min())
    out[is_h] = (1.0 / s + (1.0 - 1.0 / s) * g) * theta_i[is_h]
    out[is_w] = theta_i[is_w] / s
    return out


@pytest.mark.parametrize("section", [(26, 21, 17), (26, 17, 21), (30, 20, 14)])
@pytest.mark.parametrize("method,ramp", [("mrope_plus_plus", "wavelength"), ("mrope_plus_plus_index", "pair_index")])
@pytest.mark.parametrize("s", [2, 8])
def test_asymmetric_interleaved_section_against_float64(section, method, ramp, s):
    text = apply_rope_extension(qwen3_text(section), s * 1024, method)
    expected = reference_mrope_pp(5e6, 128, section, float(s), ramp)
    for actual in (inverse_frequencies(text), Qwen3VLTextRotaryEmbedding(text).inv_freq):
        assert actual.dtype == torch.float32
        np.testing.assert_allclose(actual.double().numpy(), expected, rtol=1e-6, atol=0)
    swapped = reference_mrope_pp(5e6, 128, (section[0], section[2], section[1]), float(s), ramp)
    assert not np.allclose(expected, swapped, rtol=1e-3)  # control: h and w are told apart


# ------------------------------------------------------------------------------ families and errors


@pytest.mark.parametrize("config", [LlamaConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=1,
                                                intermediate_size=64, vocab_size=64), object()],
                         ids=["llama", "not-a-config"])
def test_a_family_without_mrope_is_refused_by_every_entry(config):
    for method in ROPE_METHODS:
        with pytest.raises(ConfigError, match="M-RoPE"):
            rope_parameters_for(config, 131072, method)
    for call in (lambda: validate_rope_parameters(config), lambda: pair_axes(config),
                 lambda: inverse_frequencies(config), lambda: apply_rope_extension(config, 131072)):
        with pytest.raises(ConfigError, match="M-RoPE"):
            call()


def test_head_dim_defaults_to_hidden_size_over_heads():
    text = Qwen2VLConfig().get_text_config(decoder=True)
    assert getattr(text, "head_dim", None) is None and text.hidden_size // text.num_attention_heads == 128
    assert pair_axes(text).shape == (64,)
    text.hidden_size, text.num_attention_heads = 1024, 16  # 64 per head: the default section no longer sums
    with pytest.raises(ConfigError, match="head_dim/2 = 32\n"):
        pair_axes(text)
    text.rope_parameters = {**text.rope_parameters, "mrope_section": [8, 12, 12]}
    assert pair_axes(text).tolist() == [0] * 8 + [1] * 12 + [2] * 12


def test_an_odd_head_dim_is_refused():
    text = qwen3_text((24, 20, 20))
    text.head_dim = 127
    with pytest.raises(ConfigError, match="odd"):
        validate_rope_parameters(text)


# ------------------------------------------------------------------------------ parameters at their edges


def qwen2_text(**rope) -> object:
    """Qwen2-VL's default text config (head_dim 128) with ``rope`` as its rope parameters."""
    text = Qwen2VLConfig().get_text_config(decoder=True)
    text.rope_parameters = rope
    return text


def test_parameters_without_a_type_or_theta_get_the_families_defaults():
    text = qwen2_text(mrope_section=[16, 24, 24])
    params = validate_rope_parameters(text)
    assert params["rope_type"] == "default" and params["rope_theta"] == text.default_theta == 1e6
    base = 1e6 ** (-np.arange(0, 128, 2) / 128)
    np.testing.assert_allclose(inverse_frequencies(text).double().numpy(), base, rtol=1e-6)
    assert rope_parameters_for(text, 10**6)["rope_theta"] == 1e6
    qwen3 = Qwen3VLConfig().get_text_config(decoder=True)
    qwen3.rope_parameters = {}
    assert validate_rope_parameters(qwen3)["rope_theta"] == qwen3.default_theta == 5e5
    assert validate_rope_parameters(qwen3)["mrope_section"] == [24, 20, 20]


def test_a_config_class_without_default_theta_falls_back_to_10000():
    text = SimpleNamespace(model_type="qwen2_vl_text", rope_parameters=None, head_dim=None, hidden_size=256,
                           num_attention_heads=2, max_position_embeddings=4096)
    assert validate_rope_parameters(text)["rope_theta"] == 10000.0
    params = rope_parameters_for(text, 8192)
    assert params["rope_theta"] == 10000.0 and params["factor"] == 2.0


@pytest.mark.parametrize("theta", [0, 1, -5.0, math.inf, math.nan, "1e6", True, None])
def test_a_bad_rope_theta_is_refused(theta):
    text = qwen2_text(rope_type="default", rope_theta=theta, mrope_section=[16, 24, 24])
    for call in (lambda: validate_rope_parameters(text), lambda: inverse_frequencies(text)):
        with pytest.raises(ConfigError, match="rope_theta"):
            call()
    text.rope_parameters["rope_theta"] = 1.5  # control: any base above 1 is one
    assert validate_rope_parameters(text)["rope_theta"] == 1.5


def test_an_unknown_or_legacy_rope_type_is_refused_by_name():
    with pytest.raises(ConfigError, match="unknown rope_type 'longrope'"):
        validate_rope_parameters(qwen2_text(rope_type="longrope", rope_theta=1e6, factor=4.0))
    with pytest.raises(ConfigError, match=r"keys \['type'\] that rope_type 'mrope_plus_plus' does not take"):
        validate_rope_parameters(qwen2_text(type=MROPE_PLUS_PLUS, rope_theta=1e6, factor=4.0))


#: every key each rope type takes, with a valid value
ALLOWED = {
    MROPE_PLUS_PLUS: {"factor": 4.0, "original_max_position_embeddings": 1024, "ramp": "pair_index",
                      "variant": "release"},
    NTK_AWARE: {"factor": 4.0, "original_max_position_embeddings": 1024},
    "linear": {"factor": 4.0},
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 1024, "attention_factor": 1.1, "beta_fast": 32,
             "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.0, "truncate": True},
    "default": {},
}
COMMON = {"rope_theta": 1e6, "mrope_section": [16, 24, 24], "mrope_interleaved": False, "partial_rotary_factor": 1.0}


@pytest.mark.parametrize("rope_type", sorted(ALLOWED))
def test_every_allowed_key_of_every_type_passes(rope_type):
    params = validate_rope_parameters(qwen2_text(rope_type=rope_type, **COMMON, **ALLOWED[rope_type]))
    assert params == {"rope_type": rope_type, **COMMON, **ALLOWED[rope_type]}
    others = {key for keys in ALLOWED.values() for key in keys} - set(ALLOWED[rope_type])
    for key in sorted(others):  # a key of another type is refused, by name
        value = next(keys[key] for keys in ALLOWED.values() if key in keys)
        with pytest.raises(ConfigError, match=f"\\['{key}'\\]"):
            validate_rope_parameters(qwen2_text(rope_type=rope_type, **COMMON, **ALLOWED[rope_type], **{key: value}))


@pytest.mark.parametrize("original,ok", [(1, True), (32768, True), (0, False), (-1, False), (True, False),
                                         (1.5, False), ("1024", False)])
def test_original_context_is_a_positive_integer(original, ok):
    text = qwen2_text(rope_type=MROPE_PLUS_PLUS, rope_theta=1e6, factor=2.0, original_max_position_embeddings=original)
    if ok:
        assert validate_rope_parameters(text)["original_max_position_embeddings"] == original
    else:
        with pytest.raises(ConfigError, match="original_max_position_embeddings must be a positive integer"):
            validate_rope_parameters(text)


@pytest.mark.parametrize("factor,max_positions,original", [
    (1.0, 32768, 32768), (4.0, 131072, 32768), (3.0, 100, 33), (4.0, 1, 1),  # never 0
    (0.5, 32768, 32768), (math.nan, 32768, 32768), (True, 32768, 32768), ("4", 32768, 32768),  # not a PI factor
])
def test_the_original_context_of_a_pi_extension(factor, max_positions, original):
    """PI stores no original context: it is max_position_embeddings / factor (a valid factor only)."""
    text = qwen2_text(rope_type="linear", rope_theta=1e6, factor=factor, mrope_section=[16, 24, 24])
    text.max_position_embeddings = max_positions
    assert rope_parameters_for(text, 10**6, "yarn")["original_max_position_embeddings"] == original


def test_the_shortest_context_is_one_token():
    text = qwen2_text(rope_type="default", rope_theta=1e6, mrope_section=[16, 24, 24])
    assert rope_parameters_for(text, 1)["factor"] == 1.0
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="context_length"):
            rope_parameters_for(text, bad)


@pytest.mark.parametrize("rope_type", ["linear", "yarn"])
def test_transformers_own_types_are_not_computed_here(rope_type):
    text = qwen2_text(rope_type=rope_type, rope_theta=1e6, factor=4.0, mrope_section=[16, 24, 24])
    with pytest.raises(ConfigError, match="computed by transformers"):
        inverse_frequencies(text)


# ------------------------------------------------------------------------------ few pairs per axis


def chunked_reference(theta: float, dim: int, section: tuple[int, int, int], s: float, ramp: str) -> np.ndarray:
    """M-RoPE++ on the chunked layout, float64: as :func:`reference_mrope_pp`, where one h pair has g = 1
    (its highest frequency is its lowest) and no h pair needs no ramp."""
    i = np.arange(dim // 2)
    theta_i = theta ** (-2.0 * i / dim)
    axes = np.array([0] * section[0] + [1] * section[1] + [2] * section[2])
    out = theta_i.copy()
    h = i[axes == 1]
    if len(h) <= 1:
        g = np.ones(len(h))
    elif ramp == "wavelength":
        g = (theta_i[h] - theta_i[h].min()) / (theta_i[h].max() - theta_i[h].min())
    else:
        g = (h.max() - h) / (h.max() - h.min())
    out[h] = (1.0 / s + (1.0 - 1.0 / s) * g) * theta_i[h]
    out[axes == 2] = theta_i[axes == 2] / s
    return out


@pytest.mark.parametrize("section", [(31, 1, 32), (32, 0, 32), (30, 2, 32), (63, 1, 0)])
@pytest.mark.parametrize("method,ramp", [("mrope_plus_plus", "wavelength"), ("mrope_plus_plus_index", "pair_index")])
def test_one_or_no_height_pair(section, method, ramp):
    text = qwen2_text(rope_type="default", rope_theta=1e6, mrope_section=list(section))
    text.max_position_embeddings = 1024
    apply_rope_extension(text, 4096, method)
    expected = chunked_reference(1e6, 128, section, 4.0, ramp)
    for actual in (inverse_frequencies(text), Qwen2VLRotaryEmbedding(text).inv_freq):
        assert bool(torch.isfinite(actual).all())
        np.testing.assert_allclose(actual.double().numpy(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("rope_type,section", [(NTK_AWARE, [1, 0, 0]), (MROPE_PLUS_PLUS, [0, 1, 0]),
                                               (MROPE_PLUS_PLUS, [0, 0, 1])])
def test_a_single_pair_head_is_interpolated(rope_type, section):
    """head_dim 2: NTK-aware scaling (base * s ** (dim / (dim - 2))) is undefined; the one pair is divided by s."""
    text = SimpleNamespace(model_type="qwen2_vl_text", head_dim=2, hidden_size=4, num_attention_heads=2,
                           max_position_embeddings=64,
                           rope_parameters={"rope_type": rope_type, "rope_theta": 1e4, "mrope_section": section,
                                            "factor": 4.0, "original_max_position_embeddings": 64,
                                            **({"variant": "release"} if rope_type == MROPE_PLUS_PLUS else {})})
    assert inverse_frequencies(text).tolist() == [0.25]


# ------------------------------------------------------------------------------ the warning filter


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("transformers.modeling_rope_utils", logging.WARNING, __file__, 1, message, None, None)


def test_only_our_types_missing_validator_warning_is_filtered():
    logger = logging.getLogger("transformers.modeling_rope_utils")
    saved = list(logger.filters)

    def ours() -> list:
        return [f for f in logger.filters if type(f).__name__ == "_OwnRopeTypesFilter"]

    for existing in ours():  # from a clean logger: registering adds exactly one filter, however often
        logger.removeFilter(existing)
    try:
        message = "Missing validation function mapping in `ROPE_VALIDATION_FUNCTIONS` for 'rope_type'='{}'"
        assert logger.filter(_record(message.format(MROPE_PLUS_PLUS)))  # control: unfiltered without it
        register_rope_types()
        register_rope_types()
        assert len(ours()) == 1
        for name in (MROPE_PLUS_PLUS, NTK_AWARE):
            assert not logger.filter(_record(message.format(name)))
            assert logger.filter(_record(f"rope_type '{name}' has a problem"))  # another warning about it passes
        assert logger.filter(_record(message.format("longrope")))
    finally:
        for added in ours():
            logger.removeFilter(added)
        for original in saved:
            logger.addFilter(original)
