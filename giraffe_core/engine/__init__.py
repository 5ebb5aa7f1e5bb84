"""The inference engine: loading (tiny preset, directories, hub ids) and generation."""

from giraffe_core.engine.engine import Engine, Generation
from giraffe_core.engine.load import choose_attention, load
from giraffe_core.engine.processor import ImageTextProcessor, load_processor
from giraffe_core.engine.tiny import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    TINY_CONTEXT_TOKENS,
    tiny_config,
    tiny_model,
    tiny_processor,
    tiny_tokenizer,
)

__all__ = [
    "CHAT_TEMPLATE",
    "Engine",
    "Generation",
    "ImageTextProcessor",
    "SPECIAL_TOKENS",
    "TINY_CONTEXT_TOKENS",
    "choose_attention",
    "load",
    "load_processor",
    "tiny_config",
    "tiny_model",
    "tiny_processor",
    "tiny_tokenizer",
]
