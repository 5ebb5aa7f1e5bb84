"""giraffe_core: the model package of Giraffe.

* :mod:`~giraffe_core.rope`: M-RoPE++ and its baselines, as transformers rope types;
* :mod:`~giraffe_core.positions`: 3-D (t, h, w) position ids under one explicit rule;
* :mod:`~giraffe_core.resolution`: hybrid-resolution plans and exact visual-token accounting;
* :mod:`~giraffe_core.frames`: chats with frames of mixed sizes -> model inputs;
* :mod:`~giraffe_core.memory`: the timeline memory: frames and turns in resolution tiers within a
  token budget, changing in cache-aligned blocks;
* :mod:`~giraffe_core.engine`: ``load`` ("tiny", directories, hub ids), generation and streaming,
  ``Session`` (a KV cache reused across steps), and ``create_app`` / ``serve``, an
  OpenAI-compatible server (the ``serve`` extra).

Importing this package registers Giraffe's rope types with transformers, so saved M-RoPE++
checkpoints load with plain ``from_pretrained`` in any process that imported it.
"""

from giraffe_core.engine import (
    Engine,
    Generation,
    GenerationStream,
    ServerConfig,
    Session,
    create_app,
    load,
    serve,
)
from giraffe_core.errors import ConfigError, GiraffeError, InputError, MissingExtraError, ModelLoadError
from giraffe_core.frames import (
    MAX_IMAGE_PIXELS,
    ChatLayout,
    ModelInputs,
    build_inputs,
    encode_images,
    image_parts,
    layout_chat,
    load_image,
)
from giraffe_core.memory import MemoryConfig, TimelineMemory
from giraffe_core.positions import PositionIds, VisionTokenIds, rope_index
from giraffe_core.resolution import (
    WRAPPER_TOKENS,
    FramePlan,
    GroupScheme,
    ResolutionPlan,
    VisionGeometry,
    frame_plan,
    plan_groups,
    plan_tiers,
)
from giraffe_core.rope import (
    MROPE_PLUS_PLUS,
    NTK_AWARE,
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
    "ChatLayout",
    "ConfigError",
    "Engine",
    "FramePlan",
    "Generation",
    "GenerationStream",
    "GiraffeError",
    "GroupScheme",
    "InputError",
    "MAX_IMAGE_PIXELS",
    "MROPE_PLUS_PLUS",
    "MemoryConfig",
    "MissingExtraError",
    "ModelInputs",
    "ModelLoadError",
    "NTK_AWARE",
    "PositionIds",
    "ROPE_METHODS",
    "ResolutionPlan",
    "RopeMethod",
    "ServerConfig",
    "Session",
    "TimelineMemory",
    "VisionGeometry",
    "VisionTokenIds",
    "WRAPPER_TOKENS",
    "__version__",
    "apply_rope_extension",
    "build_inputs",
    "create_app",
    "encode_images",
    "frame_plan",
    "image_parts",
    "inverse_frequencies",
    "layout_chat",
    "load",
    "load_image",
    "pair_axes",
    "plan_groups",
    "plan_tiers",
    "register_rope_types",
    "rope_index",
    "rope_parameters_for",
    "serve",
    "validate_rope_parameters",
]
