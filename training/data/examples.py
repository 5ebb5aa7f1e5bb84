"""Training samples: what readers produce (:class:`Example`), how they become tokens and labels
(:class:`Encoder`), and how bad data is reported (:class:`DataLog`).

An :class:`Example` is a chat in Giraffe's form (``{"role", "content"}`` messages whose image parts
may carry ``max_tokens``), tagged with where it came from (``file:line``) and its category. Two
kinds of targets:

* ``completion is None``: every assistant turn of the chat is a target (ShareGPT / LLaVA SFT);
* ``completion`` set: the chat is laid out exactly as an agent's context (ending with the
  assistant prompt when ``add_generation_prompt``) and only ``completion`` followed by
  ``<|im_end|>`` is a target. The context's tokens are exactly those
  :func:`giraffe_core.frames.layout_chat` gives, so a trajectory sample starts with the very
  tokens the agent sent.

Labels follow the chat template's text: a token is a target when its characters overlap an
assistant turn's content or the ``<|im_end|>`` closing it (tokenizer offsets), unless the turn
says ``"loss": False`` (context only). System, user and
image tokens (``<|image_pad|>`` and the vision wrappers) are ``-100``. The templates are ChatML
(Qwen-VL's), whose turns are split by special tokens, so tokens never straddle two turns.

Shapes: ``input_ids``, ``labels``: ``(L,)``; ``position_ids``: ``(3, L)`` (t, h, w) from
:func:`giraffe_core.positions.rope_index`; ``pixel_values``: ``(patches, C * T * P * P)``;
``image_grid_thw``: ``(images, 3)``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from giraffe_core.errors import ConfigError, GiraffeError, InputError
from giraffe_core.frames import ChatLayout, encode_images, layout_chat
from giraffe_core.positions import VisionTokenIds, rope_index
from training.data.media import check_image
from training.data.tools import ToolsProcessor, template_renders_tools, with_tool_system
from training.errors import DataError

__all__ = ["DataLog", "EncodedSample", "Encoder", "Example", "IGNORE_INDEX", "Problem", "check_image", "reason_key"]

logger = logging.getLogger(__name__)

#: label of tokens that are not targets (PyTorch's cross-entropy ``ignore_index``)
IGNORE_INDEX = -100
_ASSISTANT_HEADER = "<|im_start|>assistant\n"
_END = "<|im_end|>"


@dataclass
class Example:
    """One training sample before tokenization.

    Attributes:
        messages: the chat; image parts hold a path, PIL image or bytes, and optionally ``max_tokens``.
        source: where it came from, ``"file:line"``.
        category: its mixture category (``long_text``, ``short_visual``, ``interleaved``, ``video``,
            ``trajectory``).
        completion: when set, the only target: the reply after the chat (see the module docstring).
        add_generation_prompt: with ``completion``: whether the chat ends with the assistant prompt.
        num_tokens: prompt plus target tokens, once measured (:meth:`Encoder.measure`).
        prefix_tokens: tokens of the leading system turn (dropped when joined after another sample).
        tools: function definitions the chat may call (``[{"type": "function", "function": {...}}]``),
            rendered as the model's chat template renders them (:mod:`training.data.tools`).
    """

    messages: list[dict]
    source: str
    category: str
    completion: str | None = None
    add_generation_prompt: bool = True
    num_tokens: int | None = None
    prefix_tokens: int = 0
    tools: list[dict] | None = None

    @property
    def num_images(self) -> int:
        """Image parts in the chat."""
        return sum(1 for m in self.messages if not isinstance(m["content"], str)
                   for p in m["content"] if p.get("type") == "image" or "image" in p)


@dataclass
class EncodedSample:
    """A tokenized sample, ready for a collator (shapes in the module docstring)."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    source: str = ""

    @property
    def num_tokens(self) -> int:
        """Sequence length, tokens."""
        return int(self.input_ids.shape[0])

    @property
    def num_label_tokens(self) -> int:
        """Tokens that are targets (next-token predictions that count in the loss)."""
        return int((self.labels[1:] != IGNORE_INDEX).sum())


@dataclass(frozen=True)
class Problem:
    """A bad sample or source: the file, the line (``None`` for a whole file) and why."""

    file: str
    line: int | None
    reason: str
    source: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line is not None else f"{self.file}: {self.reason}"


def reason_key(reason: str) -> str:
    """The kind of a problem, for counting: its reason up to the first ``:``, `` (`` or ``, got``
    (``missing image: a.png`` and ``missing image: b.png`` count together)."""
    return re.split(r":| \(|, got ", reason, maxsplit=1)[0]


@dataclass
class DataLog:
    """Counts and problems of reading data, under the ``skip`` or ``fail`` policy.

    With ``fail`` the first problem raises :class:`~training.errors.DataError`; with ``skip`` it is
    recorded (``problems``), logged, and counted per source and reason, so nothing is dropped
    silently.
    """

    policy: Literal["skip", "fail"] = "skip"
    read: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    augmented: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    def bad(self, source: str, file: str | Path, line: int | None, reason: str) -> None:
        """Report a bad sample of ``source`` at ``file:line``."""
        problem = Problem(str(file), line, reason, source)
        if self.policy == "fail":
            raise DataError(f"bad training sample: {problem}",
                            hint="fix or remove it, or set data.on_bad_sample: skip to skip and count bad samples")
        self.problems.append(problem)
        self.skipped[(source, reason_key(reason))] += 1
        logger.warning("skipped %s", problem)

    def filter(self, source: str, reason: str, count: int = 1) -> None:
        """Count samples of ``source`` left out on purpose by a filter (not bad data)."""
        self.filtered[(source, reason)] += count

    def why_empty(self, source: str) -> str:
        """Why ``source`` gave no sample: the file's own problem, or its records skipped as bad
        data (count, the most common reason, the first such problem) and those filtered out."""
        mine = [p for p in self.problems if p.source == source]
        whole = next((p for p in mine if p.line is None), None)
        if whole is not None and not self.read[source]:
            return f"no sample from {source}: {whole}"
        skipped = {r: n for (s, r), n in self.skipped.items() if s == source}
        filtered = {r: n for (s, r), n in self.filtered.items() if s == source}
        parts = []
        if skipped:
            reason, count = max(skipped.items(), key=lambda item: item[1])
            first = next((p for p in mine if reason_key(p.reason) == reason), None)
            parts.append(f"{sum(skipped.values())} skipped as bad data, most often {reason!r} ({count} of them)"
                         + (f"; first: {first}" if first else ""))
        parts += [f"{n} left out: {r}" for r, n in sorted(filtered.items())]
        read = self.read[source]
        return f"no sample from {source} ({read} record{'s' if read != 1 else ''} read): " + \
            "; ".join(parts or ["the file holds no record"])

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts: read, kept, skipped (bad) and filtered per source and reason, and
        the samples made by augmentation per source (``augmented``; counted in ``kept`` too)."""
        return {
            "read": dict(self.read), "kept": dict(self.kept), "augmented": dict(self.augmented),
            "skipped": [{"source": s, "reason": r, "count": n} for (s, r), n in sorted(self.skipped.items())],
            "filtered": [{"source": s, "reason": r, "count": n} for (s, r), n in sorted(self.filtered.items())],
            "problems": [str(p) for p in self.problems[:50]],
        }


def _assistant_text(message: dict, where: str) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    if any(p.get("type") == "image" or "image" in p for p in content):
        raise InputError(f"{where}: an assistant turn holds an image; targets must be text")
    return "".join(p.get("text", "") for p in content)


class Encoder:
    """Turns :class:`Example` objects into tokens, labels, positions and pixels for one model.

    Args:
        processor: the model's processor (tokenizer with a ChatML template, image processor).
        tokens: the model's placeholder ids (``VisionTokenIds.from_config(model.config)``).
        default_max_tokens: visual-token budget of images without ``max_tokens`` (default: the
            processor's cap).
    """

    def __init__(self, processor: Any, tokens: VisionTokenIds, *, default_max_tokens: int | None = None) -> None:
        self.processor = processor
        self.tokens = tokens
        self.default_max_tokens = default_max_tokens
        self.tokenizer = processor.tokenizer
        self.template_renders_tools = template_renders_tools(processor)
        self.end_id = self.tokenizer.convert_tokens_to_ids(_END)
        self.start_id = self.tokenizer.convert_tokens_to_ids("<|im_start|>")
        if not isinstance(self.end_id, int) or self.end_id == self.tokenizer.unk_token_id:
            raise ConfigError("the tokenizer has no <|im_end|> token; training needs a ChatML (Qwen-VL) template")

    def _layout(self, example: Example) -> ChatLayout:
        generation = example.add_generation_prompt if example.completion is not None else False
        processor, messages = self.processor, example.messages
        if example.tools and self.template_renders_tools:
            processor = ToolsProcessor(processor, example.tools)
        elif example.tools:
            messages = with_tool_system(messages, example.tools)
        return layout_chat(processor, messages, self.tokens, default_max_tokens=self.default_max_tokens,
                           add_generation_prompt=generation)

    def _chat_labels(self, example: Example, layout: ChatLayout) -> torch.Tensor:
        """Labels of a chat whose assistant turns are the targets (see the module docstring)."""
        pad = getattr(self.processor, "image_token", "<|image_pad|>")
        pieces = layout.text.split(pad)
        frames = layout.plan.frames if layout.plan is not None else ()
        expanded = pieces[0] + "".join(pad * f.tokens + piece for f, piece in zip(frames, pieces[1:]))
        spans, cursor = [], 0
        for message in example.messages:
            if message["role"] != "assistant":
                continue
            text = _assistant_text(message, example.source)
            at = expanded.find(_ASSISTANT_HEADER, cursor)
            begin = at + len(_ASSISTANT_HEADER)
            if at < 0 or not expanded.startswith(text + _END, begin):
                raise ConfigError(f"{example.source}: cannot find an assistant turn in the chat template's text",
                                  hint="training needs a ChatML chat template (Qwen-VL's)")
            cursor = begin + len(text) + len(_END)
            if message.get("loss", True):
                spans.append((begin, cursor))
        encoded = self.tokenizer(expanded, return_offsets_mapping=True)
        ids = torch.tensor(encoded["input_ids"], dtype=torch.long)
        if not torch.equal(ids, layout.input_ids[0]):
            raise InputError(f"{example.source}: re-tokenizing the chat gave different tokens than its layout")
        target = torch.zeros(len(ids), dtype=torch.bool)
        offsets = torch.tensor(encoded["offset_mapping"], dtype=torch.long).reshape(-1, 2)
        for begin, end in spans:
            target |= (offsets[:, 0] < end) & (offsets[:, 1] > begin)
        return torch.where(target, ids, IGNORE_INDEX)

    def _tokens(self, example: Example) -> tuple[ChatLayout, torch.Tensor, torch.Tensor]:
        """(layout, input_ids (L,), labels (L,)) of an example."""
        layout = self._layout(example)
        context = layout.input_ids[0]
        if example.completion is None:
            return layout, context, self._chat_labels(example, layout)
        reply = self.tokenizer(example.completion, add_special_tokens=False)["input_ids"]
        target = torch.tensor([*reply, self.end_id], dtype=torch.long)
        ignored = torch.full_like(context, IGNORE_INDEX)
        return layout, torch.cat([context, target]), torch.cat([ignored, target])

    def _prefix_tokens(self, layout: ChatLayout, ids: torch.Tensor) -> int:
        """Tokens of the leading system turn: everything before the second ``<|im_start|>``."""
        if not layout.text.startswith("<|im_start|>system"):
            return 0
        starts = (ids == self.start_id).nonzero().flatten().tolist()
        return int(starts[1]) if len(starts) >= 2 else 0

    def measure(self, example: Example) -> Example:
        """Fill ``num_tokens`` and ``prefix_tokens`` (no pixel is decoded); returns ``example``.

        Raises:
            InputError: the chat is malformed or has no target token.
        """
        layout, ids, labels = self._tokens(example)
        if not bool((labels[1:] != IGNORE_INDEX).any()):
            raise InputError("no target tokens: the sample has no assistant reply to learn from")
        example.num_tokens = int(ids.shape[0])
        example.prefix_tokens = self._prefix_tokens(layout, ids)
        return example

    def encode(self, example: Example, *, pixels: bool = True) -> EncodedSample:
        """Tokens, labels, 3-D positions and (``pixels``) the images' pixel values of ``example``."""
        layout, ids, labels = self._tokens(example)
        grid = None
        if layout.plan is not None:
            grid = torch.tensor([f.grid_thw for f in layout.plan.frames], dtype=torch.long)
        positions = rope_index(ids[None], grid, tokens=self.tokens).position_ids[:, 0]
        pixel_values = None
        if pixels and layout.plan is not None:
            try:
                pixel_values, grid = encode_images(self.processor, layout)
            except GiraffeError as exc:
                raise DataError(f"{example.source}: {exc.message}") from exc
        return EncodedSample(ids, labels, positions, pixel_values, grid, example.source)

    def encode_many(self, examples: Sequence[Example], *, pixels: bool = True) -> list[EncodedSample]:
        """:meth:`encode` each example."""
        return [self.encode(e, pixels=pixels) for e in examples]
