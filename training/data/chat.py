"""Chat records of the LLaVA, LLaMA-Factory and ms-swift families -> a Giraffe chat, media in order.

One parser, three dialects (:data:`LLAVA`, :data:`LLAMAFACTORY`, :data:`SWIFT`); a dialect says
which record fields, turn roles and media it accepts, so a typo is still refused. A record that
belongs to another family is refused with that family's ``kind`` named (detected from its
fields and roles).

Turns: ``conversations: [{"from", "value"}]`` or ``messages: [{"role", "content"}]``; the
LLaMA-Factory dialect also reads Alpaca records (``instruction``, ``input``, ``output``,
``history: [[query, response], ...]``), the ms-swift dialect ``query``, ``response`` and
``history``. A top-level ``system`` opens the chat. Turns may carry ``loss_weight`` (0 or 1) or
``loss`` (true / false): an assistant turn with 0 / false is context, not a target.

Content: a string, or a list of typed parts (:func:`~training.data.media.typed_part`). In text,
``<image>`` and ``<video>`` mark where the record's ``images`` / ``videos`` go, each tag taking
the next entry; a part without its own payload does the same; a part with its own payload takes
none. So a record with images and videos keeps their order. A kind without any tag or part opens
the first user turn (images, then videos). A tag without an entry left (a stray ``<video>`` in an
image record included) is an error, as is an entry no tag took. ``<audio>`` and ``audios`` are
refused (not supported).

Media belong in user turns and tool responses. Function calling (:mod:`training.data.tools`):
call turns become assistant text (joined to an assistant turn right before them), responses
become user turns, the definitions are kept for the encoder to render.

The result's parts are ``{"type": "text"}``, ``{"type": "image", "image": payload}`` and
``{"type": "video", "video": Path}``; videos are expanded into frames by the reader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from training.data.grounding import Objects, parse_objects
from training.data.media import BadRecord, image_payload, typed_part, video_path
from training.data.tools import parse_tool_calls, parse_tools, render_tool_calls, tool_response

__all__ = ["Dialect", "LLAMAFACTORY", "LLAVA", "ParsedChat", "SWIFT", "family_hint", "parse_chat", "with_fields"]

_BASE_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
               "system": "system"}
#: fields no dialect trains on, with the reason given
_REFUSED = {"audios": "audio is not supported: Giraffe trains on text, images and video",
            **{f: f"preference data ({f}) is for RLHF; giraffe train does supervised fine-tuning: keep only the "
                  "conversation to learn from" for f in ("chosen", "rejected", "rejected_response",
                                                          "rejected_messages", "kto_tag", "label")}}
#: which family a field or role belongs to, for the hint of a refused record
_FAMILY_OF = {"objects": "swift", "query": "swift", "response": "swift", "tool_call": "swift",
              "tool_response": "swift", "function_call": "llamafactory", "observation": "llamafactory",
              "instruction": "llamafactory", "output": "llamafactory", "videos": "llamafactory or swift",
              "tools": "llamafactory or swift", "history": "llamafactory or swift"}
_FAMILY_NAMES = {"swift": "ms-swift", "llamafactory": "LLaMA-Factory",
                 "llamafactory or swift": "LLaMA-Factory / ms-swift"}
_FAMILY_KINDS = {"swift": "kind: swift", "llamafactory": "kind: llamafactory",
                 "llamafactory or swift": "kind: llamafactory or kind: swift"}


@dataclass(frozen=True)
class Dialect:
    """What one family's records may hold.

    Attributes:
        kind: the source ``kind`` that reads it (named in errors).
        fields: top-level record fields accepted.
        roles: turn role -> ``user``, ``assistant``, ``system``, ``call`` or ``response``.
        videos: whether ``videos`` and ``<video>`` are read.
        text_category: the category of a record without images or videos.
    """

    kind: str
    fields: frozenset[str]
    roles: Mapping[str, str]
    videos: bool = False
    turn_fields: frozenset[str] = frozenset()
    text_category: str = "short_visual"
    tags: tuple[str, ...] = ("<image>", "<video>")


LLAVA = Dialect("llava", frozenset({"id", "source", "system", "conversations", "messages", "image", "images"}),
                _BASE_ROLES)
LLAMAFACTORY = Dialect(
    "llamafactory", frozenset({"id", "source", "system", "conversations", "messages", "tools", "images", "videos",
                               "instruction", "input", "output", "history"}),
    {**_BASE_ROLES, "function_call": "call", "observation": "response", "tool": "response"}, videos=True,
    turn_fields=frozenset({"loss_weight", "loss"}), text_category="long_text",
    tags=("<image>", "<video>", "<audio>"))
SWIFT = Dialect(
    "swift", frozenset({"id", "source", "system", "messages", "tools", "images", "videos", "objects", "query",
                        "response", "history"}),
    {**_BASE_ROLES, "tool_call": "call", "tool_response": "response", "tool": "response"}, videos=True,
    turn_fields=frozenset({"loss_weight", "loss"}), text_category="long_text",
    tags=("<image>", "<video>", "<audio>"))


@dataclass
class ParsedChat:
    """A parsed record: the chat (parts as in the module docstring), tool definitions and grounding."""

    messages: list[dict]
    tools: list[dict] | None = None
    objects: Objects | None = None


def family_hint(names: set[str], dialect: Dialect) -> str:
    """`` (ms-swift data: use kind: swift)`` when ``names`` (fields, roles) belong to another family."""
    families = {_FAMILY_OF[n] for n in names if n in _FAMILY_OF and dialect.kind not in _FAMILY_OF[n]}
    if not families:
        return ""
    family = min(families, key=len)  # one family rather than "llamafactory or swift"
    return f" ({_FAMILY_NAMES[family]} data: use {_FAMILY_KINDS[family]})"


@dataclass
class _Media:
    """The record's media lists and how many entries the chat has taken."""

    images: list[Any]
    videos: list[Path]
    dialect: Dialect
    used: dict[str, int] = field(default_factory=lambda: {"image": 0, "video": 0})

    def take(self, kind: str, how: str) -> dict:
        pool = self.images if kind == "image" else self.videos
        if kind == "video" and not self.dialect.videos:
            raise BadRecord(f"a <video> {how} in a record without videos (a {self.dialect.kind} record holds images; "
                            "for videos use kind: llamafactory or kind: swift)")
        if self.used[kind] >= len(pool):
            what = f"<{kind}> tags" if how == "tag" else f"{kind} parts"
            raise BadRecord(f"more {what} than {kind}s ({len(pool)})")
        value = pool[self.used[kind]]
        self.used[kind] += 1
        return {"type": kind, kind: value}


def _split_tags(text: str, media: _Media) -> list[dict]:
    """Parts of a text whose media tags take the record's next entries."""
    pattern = "(" + "|".join(re.escape(t) for t in media.dialect.tags) + ")"
    parts: list[dict] = []
    after_tag = False
    for piece in re.split(pattern, text):
        if piece in media.dialect.tags:
            if piece == "<audio>":
                raise BadRecord("audio is not supported: Giraffe trains on text, images and video")
            parts.append(media.take(piece[1:-1], "tag"))
            after_tag = True
            continue
        kept = piece.removeprefix("\n") if after_tag else piece
        after_tag = False
        if kept:
            parts.append({"type": "text", "text": kept})
    return parts


def _parts(content: Any, media: _Media, root: Path) -> list[dict]:
    """Content parts of a turn (string or typed parts)."""
    if isinstance(content, str):
        return _split_tags(content, media)
    if not isinstance(content, list):
        raise BadRecord(f"turn content must be text or a list of parts, got {type(content).__name__}")
    parts: list[dict] = []
    for part in content:
        kind, value = typed_part(part)
        if kind == "text":
            parts += _split_tags(value, media)
        elif value is None:
            parts.append(media.take(kind, "part"))
        elif kind == "image":
            parts.append({"type": "image", "image": image_payload(value, root)})
        elif not media.dialect.videos:
            raise BadRecord(f"a video part in a {media.dialect.kind} record (for videos use kind: llamafactory or "
                            "kind: swift)")
        else:
            parts.append({"type": "video", "video": video_path(value, root)})
    return parts


def _a(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def _text(parts: list[dict], role: str) -> str:
    if any(p["type"] != "text" for p in parts):
        kind = next(p["type"] for p in parts if p["type"] != "text")
        raise BadRecord(f"{_a(kind)} {kind} in {_a(role)} {role} turn; {kind}s belong in user turns and tool "
                        "responses")
    return "".join(p["text"] for p in parts)


def _loss(turn: dict) -> bool:
    weight = turn.get("loss_weight", turn.get("loss", 1))
    if weight is None or weight is True or weight == 1:
        return True
    if weight is False or weight == 0:
        return False
    raise BadRecord(f"a turn's loss_weight must be 0 or 1 (weighted losses are not supported), got {weight!r}")


def _chat_turns(raw: Any, dialect: Dialect) -> list[tuple[str, str, Any, bool]]:
    """``(role, raw role, content, is target)`` of ``conversations`` / ``messages`` turns."""
    if not isinstance(raw, list) or not raw:
        raise BadRecord("empty conversation")
    turns = []
    for turn in raw:
        if not isinstance(turn, dict):
            raise BadRecord(f"a turn must be an object, got {type(turn).__name__}")
        keys = ("from", "value") if "from" in turn else ("role", "content")
        unknown = set(turn) - set(keys) - dialect.turn_fields
        if unknown:
            raise BadRecord(f"unknown field(s) in a turn: {sorted(unknown)}")
        role, content = turn.get(keys[0]), turn.get(keys[1])
        if role not in dialect.roles:
            hint = family_hint({role}, dialect) if isinstance(role, str) else ""
            raise BadRecord(f"unknown role {role!r} (use {sorted(dialect.roles)}){hint}")
        turns.append((dialect.roles[role], role, content, _loss(turn)))
    return turns


def _history_turns(record: dict, prompt: Any, reply: Any) -> list[tuple[str, str, Any, bool]]:
    """Turns of an Alpaca / query-response record: its history, then the prompt and the reply."""
    history = record.get("history") or []
    if not isinstance(history, list) or not all(isinstance(h, list) and len(h) == 2 for h in history):
        raise BadRecord("history must be a list of [query, response] pairs")
    if not isinstance(prompt, str) or not prompt.strip() or not isinstance(reply, str) or not reply.strip():
        raise BadRecord("empty conversation: the prompt or the reply is missing")
    turns = []
    for query, answer in [*history, [prompt, reply]]:
        turns += [("user", "user", query, True), ("assistant", "assistant", answer, True)]
    return turns


def _turns(record: dict, dialect: Dialect) -> list[tuple[str, str, Any, bool]]:
    forms = [f for f in ("conversations", "messages", "instruction", "query") if f in record]
    if len(forms) > 1:
        raise BadRecord(f"a record has both {forms[0]} and {forms[1]}")
    if forms and forms[0] == "instruction":
        prompt = "\n".join(str(record[k]) for k in ("instruction", "input") if record.get(k))
        return _history_turns(record, prompt, record.get("output"))
    if forms and forms[0] == "query":
        return _history_turns(record, record.get("query"), record.get("response"))
    return _chat_turns(record.get(forms[0]) if forms else None, dialect)


def _media_lists(record: dict, dialect: Dialect, root: Path) -> _Media:
    raw = record.get("images", record.get("image"))
    raw = [] if raw is None else raw if isinstance(raw, list) else [raw]
    videos = record.get("videos") or []
    videos = videos if isinstance(videos, list) else [videos]
    return _Media([image_payload(v, root) for v in raw], [video_path(v, root) for v in videos], dialect)


def _add_assistant(messages: list[dict], kinds: list[str], role: str, text: str, target: bool) -> None:
    """Append an assistant turn, or join a call to the assistant turn right before it."""
    if role == "call" and kinds and kinds[-1] in ("assistant", "call"):
        previous = messages[-1]
        if previous.get("loss", True) != target:
            raise BadRecord("a tool call and the assistant turn before it differ in loss_weight")
        previous["content"] = f"{previous['content']}\n{text}" if previous["content"] else text
    else:
        messages.append({"role": "assistant", "content": text, **({} if target else {"loss": False})})
    kinds.append(role)


def _add_turn(messages: list[dict], kinds: list[str], turn: tuple[str, str, Any, bool], media: _Media,
              root: Path) -> None:
    role, raw_role, content, target = turn
    if role == "call":
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            content = "".join(typed_part(p)[1] for p in content)
        _add_assistant(messages, kinds, role, render_tool_calls(parse_tool_calls(content)), target)
        return
    parts = _parts(content, media, root)
    if role == "assistant":
        _add_assistant(messages, kinds, role, _text(parts, raw_role), target)
    elif role == "system":
        messages.append({"role": "system", "content": _text(parts, raw_role)})
        kinds.append(role)
    elif role == "response" and kinds and kinds[-1] == "response":
        messages[-1]["content"] += [{"type": "text", "text": "\n"}, *tool_response(parts)]
    else:
        messages.append({"role": "user", "content": tool_response(parts) if role == "response" else parts})
        kinds.append(role)


def _place_untagged(messages: list[dict], media: _Media) -> None:
    """Entries of a kind no tag or part took open the first user turn; a partly tagged kind is an error."""
    opening: list[dict] = []
    for kind, pool in (("image", media.images), ("video", media.videos)):
        if media.used[kind] == 0:
            opening += [{"type": kind, kind: value} for value in pool]
        elif media.used[kind] != len(pool):
            raise BadRecord(f"{media.used[kind]} <{kind}> tags for {len(pool)} {kind}s")
    if opening:
        first = next((m for m in messages if m["role"] == "user"), None)
        if first is None:
            raise BadRecord("images but no user turn to hold them")
        first["content"][:0] = opening


def _check_fields(record: Any, dialect: Dialect, ignore: frozenset[str]) -> dict:
    if isinstance(record, BadRecord):
        raise record
    if not isinstance(record, dict):
        raise BadRecord(f"a record must be an object, got {type(record).__name__}")
    record = {k: v for k, v in record.items() if k not in ignore}
    refused = sorted(set(record) & set(_REFUSED))
    if refused:
        raise BadRecord(_REFUSED[refused[0]])
    unknown = set(record) - dialect.fields
    if unknown:
        raise BadRecord(f"unknown field(s): {sorted(unknown)}{family_hint(unknown, dialect)}")
    return record


def parse_chat(record: Any, root: Path, dialect: Dialect, *, ignore: frozenset[str] = frozenset()) -> ParsedChat:
    """The chat of one record (see the module docstring); paths are relative to ``root``.

    Args:
        ignore: record fields dropped before checking (e.g. metadata columns).

    Raises:
        BadRecord: the record cannot become a sample (the message says why).
    """
    record = _check_fields(record, dialect, ignore)
    media = _media_lists(record, dialect, root)
    turns = _turns(record, dialect)
    messages: list[dict] = []
    kinds: list[str] = []
    if isinstance(record.get("system"), str) and record["system"]:
        messages.append({"role": "system", "content": record["system"]})
        kinds.append("system")
    for turn in turns:
        _add_turn(messages, kinds, turn, media, root)
    _place_untagged(messages, media)
    if not any(m["role"] == "assistant" and m["content"] and m.get("loss", True) for m in messages):
        raise BadRecord("no assistant turn to learn from")
    return ParsedChat(messages, parse_tools(record.get("tools")), parse_objects(record.get("objects")))


def with_fields(dialect: Dialect, fields: set[str] | frozenset[str]) -> Dialect:
    """``dialect`` accepting exactly ``fields`` at the top level."""
    return replace(dialect, fields=frozenset(fields))
