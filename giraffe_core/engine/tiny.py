"""The tiny offline preset: a Qwen2-VL-architecture model of a few million parameters.

Everything is built locally, nothing is downloaded:

* a byte-level BPE tokenizer (``tiny_tokenizer/``, rebuilt by ``scripts/build_tiny_tokenizer.py``)
  with Qwen2-VL's special tokens in Qwen's order and a ChatML chat template;
* a processor: transformers' Qwen2-VL image processor (PIL backend, the real patch size 14, merge
  size 2 and pixel bounds) with that tokenizer;
* a :class:`~transformers.Qwen2VLForConditionalGeneration` with random weights drawn from a fixed
  seed. Its original context is 4096 tokens, so M-RoPE++ extension is meaningful at tiny scale.

Tests, examples and the CLI use it as ``load("tiny")``.
"""

from __future__ import annotations

import json
from importlib import resources

import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from giraffe_core.engine.processor import ImageTextProcessor

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "TINY_CONTEXT_TOKENS",
    "tiny_config",
    "tiny_model",
    "tiny_processor",
    "tiny_tokenizer",
]

#: Qwen2-VL's special tokens, in the order (and so the relative ids) of the real vocabulary.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: The tiny model's original (pre-extension) context, in tokens.
TINY_CONTEXT_TOKENS = 4096

#: ChatML as Qwen2-VL renders it: a default system turn, images and videos as
#: <|vision_start|><|image_pad|><|vision_end|>, and "<|im_start|>assistant\n" as generation prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer() -> Qwen2Tokenizer:
    """The offline tokenizer: byte-level BPE plus Qwen2-VL's special tokens and chat template."""
    files = resources.files("giraffe_core.engine") / "tiny_tokenizer"
    vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8"))
    merges = [
        tuple(line.split(" "))
        for line in (files / "merges.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    for token in SPECIAL_TOKENS:
        vocab.setdefault(token, len(vocab))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=CHAT_TEMPLATE,
        model_max_length=TINY_CONTEXT_TOKENS,
        padding_side="left",
    )
    return tokenizer


def tiny_processor() -> ImageTextProcessor:
    """Processor of the tiny preset: Qwen2-VL's image processor (PIL backend) and the tiny tokenizer."""
    return ImageTextProcessor(Qwen2VLImageProcessorPil(), tiny_tokenizer(), chat_template=CHAT_TEMPLATE)


def tiny_config(vocab_size: int | None = None) -> Qwen2VLConfig:
    """Qwen2-VL architecture, about 2.3M parameters: 4 text layers (hidden 128, head_dim 32) and a
    4-block vision tower with the real patch (14 px), temporal patch (2) and merge (2) sizes."""
    tokenizer = tiny_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    padded_vocab = -(-(vocab_size or len(tokenizer)) // 64) * 64  # rounded up to a multiple of 64
    return Qwen2VLConfig(
        text_config={
            "vocab_size": padded_vocab,
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": TINY_CONTEXT_TOKENS,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]},
            "bos_token_id": None,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 4,
            "embed_dim": 128,
            "num_heads": 4,
            "mlp_ratio": 2,
            "hidden_size": 128,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def tiny_model(config: Qwen2VLConfig | None = None, seed: int = 0) -> Qwen2VLForConditionalGeneration:
    """A randomly initialised tiny model; the same ``seed`` always gives the same weights.

    The global RNG state is left as it was.
    """
    config = config or tiny_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model.eval()
