"""Readers of the fine-tuning formats of LLaMA-Factory and ms-swift (``kind: llamafactory``,
``kind: swift``) -> :class:`~training.data.examples.Example`.

LLaMA-Factory (``data/mllm_demo.json``, ``mllm_video_demo.json``, ``glaive_toolcall_*``, Alpaca
and the v1 typed-part form)::

    {"messages": [{"role": "user", "content": "<image>Who are they?"},
                  {"role": "assistant", "content": "..."}], "images": ["1.jpg"]}
    {"conversations": [{"from": "human", "value": "<video>Why is it funny?"}, {"from": "gpt", ...}],
     "videos": ["1.mp4"]}
    {"conversations": [{"from": "human", ...}, {"from": "function_call", "value": "{\\"name\\": ...}"},
                       {"from": "observation", "value": "..."}, {"from": "gpt", ...}],
     "tools": "[{\\"name\\": ..., \\"parameters\\": {...}}]"}
    {"instruction": "<image>What is this?", "input": "", "output": "...", "images": ["a.jpg"]}
    {"messages": [{"role": "user", "content": [{"type": "image_url", "value": "a.jpg"},
                                               {"type": "text", "value": "..."}]}, ...]}

ms-swift (its custom-dataset documentation: multimodal, agent and grounding records)::

    {"messages": [{"role": "user", "content": "<image><video>What differs?"}, {"role": "assistant", ...}],
     "images": ["a.jpg"], "videos": ["b.mp4"]}
    {"tools": [...], "messages": [{"role": "user", ...}, {"role": "tool_call", "content": "{...}"},
                                  {"role": "tool_response", "content": "..."}, {"role": "assistant", ...}]}
    {"messages": [{"role": "user", "content": "<image>Find <ref-object>"},
                  {"role": "assistant", "content": "<bbox>"}],
     "images": ["a.jpg"], "objects": {"ref": ["sheep"], "bbox": [[90.9, 160.8, 135, 212.8]]}}

What each field means and how media, tools and boxes are placed: :mod:`training.data.chat`,
:mod:`training.data.tools`, :mod:`training.data.grounding`. Videos are decoded into frames as
``kind: video_qa`` decodes them (:func:`training.data.video.expand_videos`). Category: ``video``
when the record has a video, else ``interleaved`` for more than one image, ``short_visual`` for
one, ``long_text`` for none (unless the source sets ``category``). Paths are relative to
``media_root`` (default: the data file's folder).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from training.data.chat import LLAMAFACTORY, SWIFT, Dialect, parse_chat
from training.data.examples import DataLog, Example
from training.data.grounding import BoxConvention, render_objects
from training.data.media import BadRecord
from training.data.readers import source_records
from training.data.video import VideoSettings, expand_videos

__all__ = ["chat_category", "read_chat_records", "read_llamafactory", "read_swift"]


def chat_category(messages: list[dict], text_category: str) -> str:
    """``video``, ``interleaved``, ``short_visual`` or ``text_category`` by the chat's media parts."""
    kinds = [p["type"] for m in messages if not isinstance(m["content"], str) for p in m["content"]]
    if "video" in kinds:
        return "video"
    images = kinds.count("image")
    return "interleaved" if images > 1 else "short_visual" if images else text_category


def read_chat_records(path: str | Path, log: DataLog, *, label: str, dialect: Dialect,
                      media_root: str | None = None, video: VideoSettings | None = None,
                      boxes: BoxConvention | None = None, ignore_fields: Iterable[str] = (),
                      category: str | None = None, max_samples: int | None = None) -> list[Example]:
    """Read a JSON / JSONL file of ``dialect`` records; one sample per record.

    Args:
        video: how videos become frames (a record with a video is bad data without it).
        boxes: how ``objects`` boxes are written (default: Qwen2-VL's 0..1000).
        ignore_fields: record fields dropped before checking (metadata columns).
    """
    path = Path(path)
    root = Path(media_root) if media_root else path.parent
    ignore = frozenset(ignore_fields)
    out: list[Example] = []
    for line, record in source_records(path, log, label, out, max_samples):
        try:
            parsed = parse_chat(record, root, dialect, ignore=ignore)
            messages = parsed.messages
            if dialect is SWIFT:
                messages = render_objects(messages, parsed.objects, boxes or BoxConvention())
            kind = category or chat_category(messages, dialect.text_category)
            messages = expand_videos(messages, video)
        except BadRecord as exc:
            log.bad(label, path, line, str(exc))
            continue
        out.append(Example(messages, f"{path}:{line}", kind, tools=parsed.tools))
    return out


def read_llamafactory(path: str | Path, log: DataLog, *, label: str, **options: Any) -> list[Example]:
    """Read LLaMA-Factory data (ShareGPT, OpenAI-style ``messages``, Alpaca, v1 typed parts);
    options as :func:`read_chat_records` takes them."""
    return read_chat_records(path, log, label=label, dialect=LLAMAFACTORY, **options)


def read_swift(path: str | Path, log: DataLog, *, label: str, **options: Any) -> list[Example]:
    """Read ms-swift data (``messages`` with images, videos, tools and ``objects`` grounding, or
    ``query`` / ``response`` / ``history``); options as :func:`read_chat_records` takes them."""
    return read_chat_records(path, log, label=label, dialect=SWIFT, **options)
