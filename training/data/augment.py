"""Copy augmentation of agent trajectories: new values for the strings a reply copies from its task.

An agent that types what its task quotes (``Enter the username "keli" ...`` -> ``{"action":
"type", "text": "keli", ...}``) must learn to COPY the value, not to remember it. With a few
hundred recorded runs a small model memorises the values it saw instead. :func:`copy_variants`
makes extra samples from one: every double-quoted string of the task text that some reply of the
sample (the target, or an earlier assistant turn of the context) also quotes is replaced, wherever
it stands quoted (double or single quotes: tool messages such as ``typed 'keli' at ...`` too), in
every text of the sample and consistently, by random text of the same kind (the same character classes:
lower, upper, digit, other, position by position; a length within 2 of the original's). A reply
may type the value in all lower or all upper case (``Type "KELI" in all lower case letters`` ->
``"keli"``): that form is replaced by the new value in the same case.

:func:`copy_drills` adds a denser signal: text-only variants of a sample (the task, the earlier
replies and what they did, the reply; no screenshots, no step headers), each with new values.
A short drill holds as many copied characters as a full sample in a fifth of the tokens.

The screenshots are left as they were, so they may still show the original value (in the task's
instruction bar, or typed into a field). Use it for models that take the value from the task TEXT;
a model that must read it from the pixels needs recorded data instead.

Deterministic: the variants of a sample depend only on its ``source`` (file and line) and the
variant number, so a training run's data plan stays a pure function of its config (resume).
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import replace
from typing import Any

from training.data.examples import Example

__all__ = ["copied_values", "copy_drills", "copy_variants", "text_only"]

_QUOTED = re.compile(r'"([^"\\\n]{1,64})"')
_STRING = re.compile(r'"([^"\\\n]*)"(\s*:)?')  # a string and, when it is a JSON key, its colon


def _task_text(messages: list[dict]) -> str:
    """The task: the first text of the first user turn (later texts of that turn are step headers)."""
    for message in messages:
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return next((part.get("text", "") for part in content if part.get("type") == "text"), "")
    return ""


def _replies(example: Example) -> list[str]:
    replies = [m["content"] for m in example.messages
               if m.get("role") == "assistant" and isinstance(m.get("content"), str)]
    return [*replies, example.completion or ""]


def copied_values(example: Example) -> list[str]:
    """The double-quoted strings of the task text that a reply of ``example`` quotes too, as they
    are or in all lower or all upper case (in the task's order)."""
    task = _QUOTED.findall(_task_text(example.messages))
    # what the replies quote as a value; a JSON key ("x": 12) is format, not a copy
    quoted_in_replies = {m.group(1) for reply in _replies(example) for m in _STRING.finditer(reply)
                         if not m.group(2) and 0 < len(m.group(1)) <= 64}
    seen: list[str] = []
    for value in task:
        if quoted_in_replies & {value, value.lower(), value.upper()} and value not in seen:
            seen.append(value)
    return seen


def _like(value: str, rng: random.Random) -> str:
    """Random text with ``value``'s character classes (a length within 2 of its own, at least 1)."""
    length = max(1, len(value) + rng.randint(-2, 2))
    out = []
    for i in range(length):
        model = value[min(i, len(value) - 1)]
        if model.islower():
            out.append(rng.choice(string.ascii_lowercase))
        elif model.isupper():
            out.append(rng.choice(string.ascii_uppercase))
        elif model.isdigit():
            out.append(rng.choice(string.digits))
        else:
            out.append(model)
    return "".join(out)


def _swap(text: str, mapping: dict[str, str]) -> str:
    """Replace every value of ``mapping`` where it stands quoted (double or single quotes)."""
    for value, new in mapping.items():
        text = text.replace(f'"{value}"', f'"{new}"').replace(f"'{value}'", f"'{new}'")
    return text


def _swap_content(content: Any, mapping: dict[str, str]) -> Any:
    if isinstance(content, str):
        return _swap(content, mapping)
    return [{**part, "text": _swap(part["text"], mapping)} if part.get("type") == "text" else part
            for part in content]


def copy_variants(example: Example, count: int) -> list[Example]:
    """Up to ``count`` variants of ``example`` with its copied values replaced (see the module
    docstring); none when no reply copies a quoted value of the task."""
    values = copied_values(example)
    if not values or count <= 0:
        return []
    variants = []
    for k in range(1, count + 1):
        rng = random.Random(f"{example.source}#copy{k}")
        mapping: dict[str, str] = {}
        for value in values:
            new = _like(value, rng)
            while new == value or new in mapping.values():
                new = _like(value, rng)
            mapping[value] = new
            for form, new_form in ((value.lower(), new.lower()), (value.upper(), new.upper())):
                mapping.setdefault(form, new_form)  # the value typed in another case
        messages = [{**m, "content": _swap_content(m["content"], mapping)} if "content" in m else m
                    for m in example.messages]
        completion = _swap(example.completion, mapping) if example.completion is not None else None
        variants.append(replace(example, messages=messages, completion=completion, num_tokens=None,
                                source=f"{example.source}#copy{k}"))
    return variants


def text_only(example: Example) -> Example:
    """``example`` without its screenshots and step headers: the system turn, the task (the first
    text of the first user turn), then per earlier step the reply and the first text of the next
    user turn when it reports what the action did (e.g. ``typed 'keli' at ...``), then the reply."""
    messages: list[dict] = []
    first_user = True
    for message in example.messages:
        role, content = message.get("role"), message.get("content")
        if role != "user":
            messages.append(message)
            continue
        texts = [content] if isinstance(content, str) else [p.get("text", "") for p in content
                                                                if p.get("type") == "text"]
        kept = texts[:1] if first_user else [t for t in texts[:1] if not t.startswith("[step ")]
        first_user = False
        if kept:
            messages.append({"role": "user", "content": "".join(kept)})
        elif messages and messages[-1].get("role") == "assistant":
            messages.append({"role": "user", "content": "ok\n"})
    return replace(example, messages=messages, num_tokens=None, source=f"{example.source}#text")


def copy_drills(example: Example, count: int) -> list[Example]:
    """Up to ``count`` text-only (:func:`text_only`) variants of ``example`` with new values for
    what its replies copy from the task (:func:`copy_variants`); none when nothing is copied."""
    if count <= 0 or not copied_values(example):
        return []
    return copy_variants(text_only(example), count)
