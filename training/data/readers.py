"""Readers: LLaVA / ShareGPT JSON, Hugging Face ``datasets``, long-text JSONL -> :class:`Example`.

Every record is checked as it is read. A bad one (missing or corrupt image, empty conversation,
no assistant turn, unknown field, unknown role, ``<image>`` tags that do not match the images) is
reported through the :class:`~training.data.examples.DataLog` with its file and line: skipped and
counted, or raised, as ``on_bad_sample`` says. Line numbers are exact for JSON arrays too (records
are decoded one at a time with their offsets).

Record forms accepted (field names as in LLaVA-Instruct, ShareGPT4V, Mantis, LongAlign, LongAlpaca):

* ``conversations: [{"from": "human"|"gpt"|"system", "value": "..."}]`` or
  ``messages: [{"role": "user"|"assistant"|"system", "content": "..." | [parts]}]``;
* ``image: "a.jpg"`` or ``images: ["a.jpg", "b.jpg"]`` (paths relative to ``image_root``; in
  ``datasets`` rows also decoded images); ``<image>`` in the text marks where each image goes
  (without any tag, all images open the first user turn); typed parts may carry their own image
  (``{"type": "image", "image": ...}``, ``image_url``; see :mod:`training.data.media`); a
  ``<video>`` tag is an error (LLaVA records hold images: videos are read by ``kind:
  llamafactory`` / ``swift``, :mod:`training.data.formats`);
* long text: ``messages``, or ``instruction`` (+ ``input``) and ``output``;
* also allowed: ``id``, ``source``, ``system``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from giraffe_core.extras import require
from training.data.chat import LLAVA, parse_chat, with_fields
from training.data.examples import DataLog, Example
from training.data.media import BadRecord

__all__ = ["BadRecord", "chat_from_record", "json_records", "read_hf", "read_llava", "read_long_text",
           "source_records"]

_COMMON = {"id", "source", "system"}
_CHAT_FIELDS = _COMMON | {"conversations", "messages", "image", "images"}
_LONG_FIELDS = _COMMON | {"messages", "instruction", "input", "output"}


def json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, record)`` for each record of a JSON array file or a JSONL file (``.jsonl``).

    A record that does not parse is yielded as a :class:`BadRecord` instead of a value; a JSON
    array whose syntax breaks stops there (the rest of the file cannot be framed).
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, BadRecord(f"not valid JSON: {exc.msg}")
        return
    decoder = json.JSONDecoder()
    pos, line, counted = 0, 1, 0

    def skip(at: int) -> int:
        while at < len(text) and text[at] in " \t\r\n":
            at += 1
        return at

    pos = skip(pos)
    if not text.startswith("[", pos):
        yield 1, BadRecord("a JSON dataset file must hold an array of records (or use .jsonl, one record a line)")
        return
    pos = skip(pos + 1)
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield exc.lineno, BadRecord(f"not valid JSON: {exc.msg}; the rest of the file is not read")
            return
        yield line, record
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)


def chat_from_record(record: Any, root: Path, allowed: set[str] = _CHAT_FIELDS) -> list[dict]:
    """Giraffe chat messages from a LLaVA / ShareGPT / ``messages`` record (raises :class:`BadRecord`).

    ``allowed``: the record fields accepted (LLaVA's by default).
    """
    dialect = LLAVA if allowed is _CHAT_FIELDS else with_fields(LLAVA, allowed)
    return parse_chat(record, root, dialect).messages


def _visual_category(messages: list[dict], category: str | None) -> str:
    if category is not None:
        return category
    images = sum(1 for m in messages if m["role"] == "user" for p in m["content"] if p["type"] == "image")
    return "interleaved" if images > 1 else "short_visual"


def source_records(path: Path, log: DataLog, label: str, kept: list,
                   max_samples: int | None) -> Iterator[tuple[int, Any]]:
    """The ``(line, record)`` pairs of a JSON / JSONL source, each counted as read in ``log``;
    none when the file is missing (reported as bad data); stops once ``kept`` (the caller's
    samples so far) holds ``max_samples``."""
    if not path.is_file():
        log.bad(label, path, None, f"no such file: {path}")
        return
    for line, record in json_records(path):
        if max_samples is not None and len(kept) >= max_samples:
            return
        log.read[label] += 1
        yield line, record


def read_llava(path: str | Path, log: DataLog, *, label: str, image_root: str | None = None,
               category: str | None = None, max_samples: int | None = None) -> list[Example]:
    """Read a LLaVA / ShareGPT JSON or JSONL file (see the module docstring)."""
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    out: list[Example] = []
    for line, record in source_records(path, log, label, out, max_samples):
        try:
            messages = chat_from_record(record, root)
        except BadRecord as exc:
            log.bad(label, path, line, str(exc))
            continue
        out.append(Example(messages, f"{path}:{line}", _visual_category(messages, category)))
    return out


def read_long_text(path: str | Path, log: DataLog, *, label: str, category: str | None = None,
                   max_samples: int | None = None) -> list[Example]:
    """Read long-text instruction JSONL: ``messages``, or ``instruction`` (+ ``input``) and ``output``."""
    path = Path(path)
    out: list[Example] = []
    for line, record in source_records(path, log, label, out, max_samples):
        try:
            if isinstance(record, dict) and "messages" not in record and "instruction" in record:
                unknown = set(record) - _LONG_FIELDS
                if unknown:
                    raise BadRecord(f"unknown field(s): {sorted(unknown)}")
                prompt = "\n\n".join(str(record[k]) for k in ("instruction", "input") if record.get(k))
                reply = record.get("output")
                if not prompt.strip() or not isinstance(reply, str) or not reply.strip():
                    raise BadRecord("empty conversation: instruction or output missing")
                messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
                if isinstance(record.get("system"), str) and record["system"]:
                    messages.insert(0, {"role": "system", "content": record["system"]})
            else:
                messages = chat_from_record(record, path.parent, _LONG_FIELDS)
        except BadRecord as exc:
            log.bad(label, path, line, str(exc))
            continue
        out.append(Example(messages, f"{path}:{line}", category or "long_text"))
    return out


def read_hf(path: str, log: DataLog, *, label: str, split: str = "train", image_root: str | None = None,
            category: str | None = None, max_samples: int | None = None) -> list[Example]:
    """Read a Hugging Face ``datasets`` dataset (``save_to_disk`` directory or ``load_dataset`` name).

    Raises:
        MissingExtraError: ``datasets`` is not installed (``pip install 'giraffe[train]'``).
    """
    datasets = require("datasets", extra="train", purpose="read Hugging Face datasets")
    local = Path(path)
    try:
        if local.is_dir() and ((local / "dataset_info.json").is_file() or (local / "state.json").is_file()
                               or (local / "dataset_dict.json").is_file()):
            data = datasets.load_from_disk(str(local))
            if isinstance(data, datasets.DatasetDict):
                data = data[split]
        else:
            data = datasets.load_dataset(path, split=split)
    except (OSError, ValueError, KeyError) as exc:
        log.bad(label, path, None, f"cannot load the dataset: {exc}")
        return []
    root = Path(image_root) if image_root else (local if local.is_dir() else Path.cwd())
    out: list[Example] = []
    for row_index, row in enumerate(data):
        if max_samples is not None and len(out) >= max_samples:
            break
        log.read[label] += 1
        record = {k: v for k, v in row.items() if v is not None}
        try:
            messages = chat_from_record(record, root)
        except BadRecord as exc:
            log.bad(label, path, row_index, str(exc))
            continue
        out.append(Example(messages, f"{path}:{row_index}", _visual_category(messages, category)))
    return out
