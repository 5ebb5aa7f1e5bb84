"""Loading a processor for a Qwen-VL checkpoint, with or without torchvision.

transformers 5.24 builds every Qwen-VL processor with a video processor, and video processors
require torchvision (huggingface/transformers#48558). Giraffe feeds video and recording frames to
the model as images (each frame its own resolution, see :mod:`giraffe_core.frames`), so it only
needs the image processor and the tokenizer. :class:`ImageTextProcessor` is the Qwen2-VL processor
without the video processor, and :func:`load_processor` falls back to it when torchvision is
missing (or the directory was saved from it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, Qwen2VLProcessor
from transformers.utils import is_torchvision_available

__all__ = ["ImageTextProcessor", "load_processor"]

logger = logging.getLogger(__name__)


class ImageTextProcessor(Qwen2VLProcessor):
    """Qwen2-VL-family processor for text and images only; needs no torchvision.

    Args:
        image_processor: a Qwen2-VL image processor (the PIL backend works).
        tokenizer: the model's tokenizer, carrying ``<|image_pad|>`` and friends.
        chat_template: the Jinja chat template (the tokenizer's when omitted).
    """

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        if chat_template is None and tokenizer is not None:
            chat_template = getattr(tokenizer, "chat_template", None)
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def _saved_processor_class(path: str) -> str | None:
    config = Path(path) / "processor_config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("processor_class")
    except (OSError, ValueError):
        return None


def load_processor(path_or_id: str, **kwargs: Any) -> Any:
    """Load the processor of a checkpoint directory or hub id.

    Uses ``AutoProcessor`` when torchvision is installed and the checkpoint names a transformers
    processor; otherwise builds an :class:`ImageTextProcessor` from the checkpoint's image
    processor, tokenizer and chat template. ``kwargs`` go to every ``from_pretrained`` call.
    """
    saved = _saved_processor_class(path_or_id)
    if is_torchvision_available() and saved != ImageTextProcessor.__name__:
        return AutoProcessor.from_pretrained(path_or_id, **kwargs)
    if saved != ImageTextProcessor.__name__:
        logger.info("torchvision is not installed: loading %s for images and text only", path_or_id)
    tokenizer = AutoTokenizer.from_pretrained(path_or_id, **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(path_or_id, **kwargs)
    return ImageTextProcessor(image_processor, tokenizer)
