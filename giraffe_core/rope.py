"""M-RoPE++ and its baselines: rotary frequencies for extending Qwen-VL models to long contexts.

Qwen-VL models rotate each head's frequency pairs with one of three position indices (t, h, w).
A pair's *axis* is given by ``mrope_section`` and the model family's layout:

* chunked (Qwen2-VL, Qwen2.5-VL): pairs ``[0, s0)`` rotate with t (the highest frequencies),
  ``[s0, s0+s1)`` with h, the rest with w (the lowest);
* interleaved (Qwen3-VL): pair ``i`` rotates with h if ``i % 3 == 1 and i < 3*s1``, with w if
  ``i % 3 == 2 and i < 3*s2``, and with t otherwise.

With ``s = factor`` (extended context / original context) and ``theta_d`` the base frequency of
pair ``d``, M-RoPE++ (GIRAFFE, section 1 of ``shared/design/PAPER.md``) scales each frequency by
its axis:

* t: ``theta_d`` unchanged (extrapolation);
* h: ``(1/s + (1 - 1/s) * g_d) * theta_d`` with a ramp ``g_d`` from 1 (the h section's highest
  frequency) down to 0 (its lowest). ``ramp="wavelength"`` (default, YaRN-consistent) is linear in
  ``r_d = L / lambda_d``, i.e. in ``theta_d``; ``ramp="pair_index"`` is linear in the pair index;
* w: ``theta_d / s`` (full interpolation, as PI).

``variant="release"`` is the authors' released code: t unchanged, h and w NTK-aware
(``base * s**(dim/(dim-2))``). No attention temperature is applied by any of these.

The frequencies reach transformers through its own extension point, the rope-init registry
``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS``. Importing :mod:`giraffe_core` registers
two rope types:

* ``"mrope_plus_plus"``: keys ``factor``, ``original_max_position_embeddings``, ``mrope_section``,
  ``ramp`` (``"wavelength"`` | ``"pair_index"``), ``variant`` (``"paper"`` | ``"release"``);
* ``"giraffe_ntk"``: static NTK-aware scaling of every pair (key ``factor``).

Uniform PI and YaRN are transformers' own ``"linear"`` and ``"yarn"`` types. A saved config with
one of our types loads in any process that has imported :mod:`giraffe_core`.

Bad parameters raise :class:`~giraffe_core.errors.ConfigError` when the helpers here build or check
a config, and at the latest when the model (its rotary embedding) is constructed, never inside a
forward pass. transformers' own config classes cannot be given new validators without patching
them, so a config written by hand is checked at model construction.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, get_args

import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from giraffe_core.errors import ConfigError

__all__ = [
    "MROPE_PLUS_PLUS",
    "NTK_AWARE",
    "ROPE_METHODS",
    "RopeMethod",
    "apply_rope_extension",
    "inverse_frequencies",
    "pair_axes",
    "register_rope_types",
    "rope_parameters_for",
    "validate_rope_parameters",
]

MROPE_PLUS_PLUS = "mrope_plus_plus"
NTK_AWARE = "giraffe_ntk"

RopeMethod = Literal["none", "pi", "ntk", "yarn", "mrope_plus_plus", "mrope_plus_plus_index", "giraffe_release"]
#: every method :func:`rope_parameters_for` accepts, in the paper's table order plus ours.
ROPE_METHODS: tuple[str, ...] = get_args(RopeMethod)

Layout = Literal["chunked", "interleaved"]

#: text-config model_type -> (section layout, default mrope_section the modeling code assumes)
_FAMILIES: dict[str, tuple[Layout, tuple[int, int, int]]] = {
    "qwen2_vl_text": ("chunked", (16, 24, 24)),
    "qwen2_5_vl_text": ("chunked", (16, 24, 24)),
    "qwen3_vl_text": ("interleaved", (24, 20, 20)),
    "qwen3_vl_moe_text": ("interleaved", (24, 20, 20)),
}
_RAMPS = ("wavelength", "pair_index")
_VARIANTS = ("paper", "release")
_COMMON_KEYS = {"rope_type", "rope_theta", "mrope_section", "mrope_interleaved", "partial_rotary_factor"}
_KEYS = {
    MROPE_PLUS_PLUS: {"factor", "original_max_position_embeddings", "ramp", "variant"},
    NTK_AWARE: {"factor", "original_max_position_embeddings"},
    "linear": {"factor"},
    "yarn": {"factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
             "mscale", "mscale_all_dim", "truncate"},
    "default": set(),
}


# --------------------------------------------------------------------------------------------- config


def _text_config(config: Any) -> Any:
    """The text (decoder) config of a composite Qwen-VL config, or ``config`` itself."""
    get = getattr(config, "get_text_config", None)
    return get(decoder=True) if callable(get) else config


def _family(text_config: Any) -> tuple[Layout, tuple[int, int, int]]:
    model_type = getattr(text_config, "model_type", None)
    if model_type not in _FAMILIES:
        raise ConfigError(
            f"model type {model_type!r} has no multimodal RoPE (M-RoPE), so M-RoPE++ cannot be applied",
            hint=f"use a Qwen-VL family model; supported text model types: {sorted(_FAMILIES)}",
        )
    return _FAMILIES[model_type]


def _head_dim(text_config: Any) -> int:
    head_dim = getattr(text_config, "head_dim", None)
    return int(head_dim or text_config.hidden_size // text_config.num_attention_heads)


def _default_theta(text_config: Any) -> float:
    """The family's rope theta when the parameters name none (transformers' ``default_theta``)."""
    return float(getattr(text_config, "default_theta", 10000.0))


def _section(text_config: Any, params: dict[str, Any]) -> tuple[int, int, int]:
    _, default = _family(text_config)
    section = params.get("mrope_section") or default
    return tuple(int(x) for x in section)  # type: ignore[return-value]


def pair_axes(config: Any) -> torch.Tensor:
    """Axis of every rotary frequency pair: 0 = t, 1 = h, 2 = w.

    Args:
        config: a Qwen-VL config (composite or text).

    Returns:
        ``torch.long`` CPU tensor of shape ``(head_dim // 2,)``, mapped by the family's layout
        (chunked or interleaved), not by the pair index alone.
    """
    text = _text_config(config)
    layout, _ = _family(text)
    section = _section(text, dict(text.rope_parameters or {}))
    n_pairs = _head_dim(text) // 2
    _check_section(section, n_pairs, layout)
    # always on the CPU: transformers builds models under a "meta" default device (from_pretrained)
    index = torch.arange(n_pairs, device="cpu")
    if layout == "chunked":
        bounds = torch.tensor([section[0], section[0] + section[1]], device="cpu")
        return torch.bucketize(index, bounds, right=True)
    axes = torch.zeros(n_pairs, dtype=torch.long, device="cpu")
    axes[(index % 3 == 1) & (index < 3 * section[1])] = 1
    axes[(index % 3 == 2) & (index < 3 * section[2])] = 2
    return axes


def _check_section(section: tuple[int, ...], n_pairs: int, layout: Layout) -> None:
    if len(section) != 3 or any(s < 0 for s in section) or sum(section) != n_pairs:
        raise ConfigError(
            f"mrope_section {list(section)} must be three non-negative sizes summing to head_dim/2 = {n_pairs}",
            hint="set rope_parameters['mrope_section'] to [t, h, w] pair counts, e.g. [16, 24, 24] for head_dim 128",
        )
    if layout == "interleaved" and (3 * section[1] - 2 >= n_pairs or 3 * section[2] - 1 >= n_pairs):
        raise ConfigError(
            f"mrope_section {list(section)} does not fit the interleaved (Qwen3-VL) layout of {n_pairs} pairs",
            hint="with interleaving, h and w each need at most a third of the pairs, e.g. [24, 20, 20]",
        )


def validate_rope_parameters(config: Any) -> dict[str, Any]:
    """Check a config's rope parameters for a Giraffe rope type; return them normalised.

    Normalised means ``rope_type`` (``"default"``), ``rope_theta`` (the config class's
    ``default_theta``), ``ramp`` and ``variant`` filled with their defaults and ``mrope_section``
    made explicit. Raises :class:`ConfigError` with the reason and the fix.
    """
    text = _text_config(config)
    layout, _ = _family(text)  # first: anything that is not a Qwen-VL config is refused by name
    params = dict(text.rope_parameters or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    head_dim = _head_dim(text)
    if head_dim % 2:
        raise ConfigError(f"head_dim {head_dim} is odd; rotary embeddings need an even head dimension")
    section = _section(text, params)
    _check_section(section, head_dim // 2, layout)
    if rope_type not in _KEYS:
        raise ConfigError(
            f"unknown rope_type {rope_type!r} for a Giraffe-extended model",
            hint=f"use one of {sorted(_KEYS)} (or build it with rope_parameters_for(config, length, method))",
        )
    unknown = set(params) - _KEYS[rope_type] - _COMMON_KEYS
    if unknown:
        raise ConfigError(
            f"rope_parameters has keys {sorted(unknown)} that rope_type {rope_type!r} does not take",
            hint=f"allowed keys: {sorted(_KEYS[rope_type] | _COMMON_KEYS)}",
        )
    if rope_type != "default":
        factor = params.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor):
            raise ConfigError(f"rope factor must be a number >= 1, got {factor!r}")
        if factor < 1:
            raise ConfigError(
                f"rope factor must be >= 1 (extended context / original context), got {factor}",
                hint="a factor below 1 would shrink the usable context; use rope_type 'default' instead",
            )
    original = params.get("original_max_position_embeddings")
    if original is not None and (isinstance(original, bool) or not isinstance(original, int) or original < 1):
        raise ConfigError(f"original_max_position_embeddings must be a positive integer, got {original!r}")
    theta = params.setdefault("rope_theta", _default_theta(text))
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta <= 1:
        raise ConfigError(f"rope_theta must be a finite number above 1 (the rotary base), got {theta!r}")
    params.setdefault("rope_type", rope_type)
    if rope_type == MROPE_PLUS_PLUS:
        params.setdefault("ramp", "wavelength")
        params.setdefault("variant", "paper")
        if params["ramp"] not in _RAMPS:
            raise ConfigError(f"unknown M-RoPE++ ramp {params['ramp']!r}", hint=f"use one of {list(_RAMPS)}")
        if params["variant"] not in _VARIANTS:
            raise ConfigError(f"unknown M-RoPE++ variant {params['variant']!r}", hint=f"use one of {list(_VARIANTS)}")
    params["mrope_section"] = list(section)
    return params


# ------------------------------------------------------------------------------------------ frequencies


def _ntk_scale(d: torch.Tensor, dim: int, s: float) -> torch.Tensor:
    """NTK-aware: base -> base * s**(dim/(dim-2)), i.e. theta_d scaled by s**(-2d/(dim-2))."""
    if dim <= 2:
        return torch.full_like(d, 1.0 / s)
    return torch.pow(torch.tensor(s, dtype=torch.float64, device=d.device), -2.0 * d / (dim - 2))


def _height_ramp(d: torch.Tensor, base_freq: torch.Tensor, ramp: str) -> torch.Tensor:
    """g_d in [0, 1]: 1 at the height section's highest frequency, 0 at its lowest."""
    if d.numel() <= 1:
        return torch.ones_like(base_freq)
    if ramp == "wavelength":  # linear in r_d = L / lambda_d = L * theta_d / (2 pi): L and 2 pi cancel
        first, last = base_freq.max(), base_freq.min()
        g = (base_freq - last) / (first - last)
    else:  # linear in the pair index
        first, last = d.min(), d.max()
        g = (last - d) / (last - first)
    return g.clamp(0.0, 1.0)


def inverse_frequencies(config: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """Rotary inverse frequencies (radians per position) of every pair for a Giraffe rope type.

    The base frequencies are computed exactly as transformers computes them, and scaled by
    factors computed in float64, so factor 1 reproduces the unmodified model bit for bit.

    Returns:
        float32 tensor of shape ``(head_dim // 2,)``.
    """
    params = validate_rope_parameters(config)
    text = _text_config(config)
    dim = _head_dim(text)
    base = float(params["rope_theta"])
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim))
    s = float(params.get("factor", 1.0))
    # The scales are computed on the CPU whatever the default device: from_pretrained builds the model
    # under a "meta" default device, where the boolean-mask indexing below is not implemented
    # (transformers then recomputes the buffer on the real device in _init_weights).
    d = torch.arange(dim // 2, dtype=torch.float64, device="cpu")
    theta64 = base ** (-2.0 * d / dim)
    scale = torch.ones(dim // 2, dtype=torch.float64, device="cpu")
    rope_type = params["rope_type"]
    if rope_type == NTK_AWARE:
        scale = _ntk_scale(d, dim, s)
    elif rope_type == MROPE_PLUS_PLUS:
        axes = pair_axes(config)
        h, w = axes == 1, axes == 2
        if params["variant"] == "release":
            scale[h | w] = _ntk_scale(d[h | w], dim, s)
        else:
            g = _height_ramp(d[h], theta64[h], params["ramp"])
            scale[h] = 1.0 / s + (1.0 - 1.0 / s) * g
            scale[w] = 1.0 / s
    elif rope_type != "default":
        raise ConfigError(f"rope_type {rope_type!r} is computed by transformers, not by giraffe_core")
    return inv_freq * scale.to(device=inv_freq.device, dtype=torch.float32)


def _rope_init(config: Any, device: torch.device | None = None, seq_len: int | None = None,
               layer_type: str | None = None) -> tuple[torch.Tensor, float]:
    """Entry for transformers' ROPE_INIT_FUNCTIONS: (inverse frequencies, attention scaling)."""
    return inverse_frequencies(config, device=device), 1.0


class _OwnRopeTypesFilter(logging.Filter):
    """Drops transformers' "Missing validation function" warning for the rope types we validate."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("Missing validation function" in message
                    and any(f"'{name}'" in message for name in (MROPE_PLUS_PLUS, NTK_AWARE)))


_FILTER = _OwnRopeTypesFilter()


def register_rope_types() -> None:
    """Register ``mrope_plus_plus`` and ``giraffe_ntk`` in transformers' rope-init registry.

    Idempotent; called when :mod:`giraffe_core` is imported. transformers has no validator hook
    for new rope types and warns that one is missing; we validate these types ourselves
    (:func:`validate_rope_parameters`), so that one warning is filtered from its logger.
    """
    for name in (MROPE_PLUS_PLUS, NTK_AWARE):
        ROPE_INIT_FUNCTIONS[name] = _rope_init
    rope_logger = logging.getLogger("transformers.modeling_rope_utils")
    if _FILTER not in rope_logger.filters:
        rope_logger.addFilter(_FILTER)


# ------------------------------------------------------------------------------------------- helpers


def _original_context(text_config: Any) -> int:
    """The model's original (pre-extension) context in tokens.

    ``original_max_position_embeddings`` when the rope parameters carry it (every type we write
    except ``"linear"``); for ``"linear"`` (PI, whose transformers validator takes no such key)
    ``max_position_embeddings / factor``, since :func:`apply_rope_extension` raised
    ``max_position_embeddings`` to ``factor`` times the original; else ``max_position_embeddings``.
    """
    current = dict(text_config.rope_parameters or {})
    if current.get("original_max_position_embeddings"):
        return int(current["original_max_position_embeddings"])
    factor = current.get("factor")
    if (current.get("rope_type") == "linear" and isinstance(factor, (int, float))
            and not isinstance(factor, bool) and math.isfinite(factor) and factor >= 1):
        return max(1, round(text_config.max_position_embeddings / factor))
    return int(text_config.max_position_embeddings)


def rope_parameters_for(config: Any, context_length: int, method: RopeMethod | str = "mrope_plus_plus") -> dict:
    """Rope parameters that extend ``config``'s model to ``context_length`` tokens with ``method``.

    The scale is ``s = context_length / L`` where ``L`` is the model's original context: the
    ``original_max_position_embeddings`` already in its rope parameters if it was extended before
    (for a PI extension, which does not store it, ``max_position_embeddings / factor``), else its
    ``max_position_embeddings``. ``s`` is never below 1 (asking for less than the original
    context gives factor 1, which equals the unmodified model).

    Args:
        config: a Qwen2-VL, Qwen2.5-VL or Qwen3-VL config (composite or text).
        context_length: target context in tokens, e.g. 131072.
        method: one of :data:`ROPE_METHODS`.

    Returns:
        A new ``rope_parameters`` dict for the text config.
    """
    if method not in ROPE_METHODS:
        raise ConfigError(f"unknown rope method {method!r}", hint=f"use one of {list(ROPE_METHODS)}")
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ConfigError(f"context_length must be a positive number of tokens, got {context_length!r}")
    text = _text_config(config)
    _family(text)
    current = dict(text.rope_parameters or {})
    original = _original_context(text)
    factor = max(1.0, context_length / original)
    params: dict[str, Any] = {
        "rope_theta": float(current.get("rope_theta", _default_theta(text))),
        "mrope_section": list(_section(text, current)),
    }
    if method == "none":
        params["rope_type"] = "default"
    elif method == "pi":
        params.update(rope_type="linear", factor=factor)
    elif method == "yarn":
        params.update(rope_type="yarn", factor=factor, original_max_position_embeddings=original)
    elif method == "ntk":
        params.update(rope_type=NTK_AWARE, factor=factor, original_max_position_embeddings=original)
    else:
        params.update(
            rope_type=MROPE_PLUS_PLUS,
            factor=factor,
            original_max_position_embeddings=original,
            ramp="pair_index" if method == "mrope_plus_plus_index" else "wavelength",
            variant="release" if method == "giraffe_release" else "paper",
        )
    if "mrope_interleaved" in current:
        params["mrope_interleaved"] = current["mrope_interleaved"]
    return params


def apply_rope_extension(config: Any, context_length: int, method: RopeMethod | str = "mrope_plus_plus") -> Any:
    """Set ``config``'s text rope parameters for ``context_length`` tokens with ``method``, in place.

    Also raises ``max_position_embeddings`` to ``context_length`` when it is larger. Returns
    ``config`` so the call can be chained; raises :class:`ConfigError` on bad input, leaving
    ``config`` unchanged.
    """
    params = rope_parameters_for(config, context_length, method)
    text = _text_config(config)
    original = _original_context(text)  # before the new parameters replace the old ones
    previous = (text.rope_parameters, text.max_position_embeddings)
    text.rope_parameters = params
    text.max_position_embeddings = max(int(context_length), int(original))
    try:
        validate_rope_parameters(text)
    except ConfigError:  # leave the config as it was
        text.rope_parameters, text.max_position_embeddings = previous
        raise
    return config
