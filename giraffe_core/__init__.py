"""giraffe_core: the model package of Giraffe.

M-RoPE++ and its baselines (:mod:`giraffe_core.rope`), 3-D position ids
(:mod:`giraffe_core.positions`), errors and optional extras. Importing this package registers
Giraffe's rope types with transformers, so saved M-RoPE++ checkpoints load.
"""

from giraffe_core.errors import ConfigError, GiraffeError, InputError, MissingExtraError, ModelLoadError
from giraffe_core.positions import PositionIds, VisionTokenIds, rope_index
from giraffe_core.rope import (
    ROPE_METHODS,
    RopeMethod,
    apply_rope_extension,
    inverse_frequencies,
    pair_axes,
    register_rope_types,
    rope_parameters_for,
    validate_rope_parameters,
)

register_rope_types()

__version__ = "0.1.0"

__all__ = [
    "ROPE_METHODS",
    "ConfigError",
    "GiraffeError",
    "InputError",
    "MissingExtraError",
    "ModelLoadError",
    "PositionIds",
    "RopeMethod",
    "VisionTokenIds",
    "__version__",
    "apply_rope_extension",
    "inverse_frequencies",
    "pair_axes",
    "register_rope_types",
    "rope_index",
    "rope_parameters_for",
    "validate_rope_parameters",
]
