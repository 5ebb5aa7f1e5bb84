"""The inference engine: loading (tiny preset, directories, hub ids), generation, streaming, serving."""

from giraffe_core.engine.engine import Engine, Generation, GenerationStream
from giraffe_core.engine.load import choose_attention, load
from giraffe_core.engine.processor import ImageTextProcessor, load_processor
from giraffe_core.engine.server import ChatCompletionRequest, RequestError, ServerConfig, create_app, serve
from giraffe_core.engine.session import Session, SessionGeneration, StepStats, layout_grid
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
    "ChatCompletionRequest",
    "Engine",
    "Generation",
    "GenerationStream",
    "ImageTextProcessor",
    "RequestError",
    "SPECIAL_TOKENS",
    "ServerConfig",
    "Session",
    "SessionGeneration",
    "StepStats",
    "TINY_CONTEXT_TOKENS",
    "choose_attention",
    "create_app",
    "layout_grid",
    "load",
    "load_processor",
    "serve",
    "tiny_config",
    "tiny_model",
    "tiny_processor",
    "tiny_tokenizer",
]
