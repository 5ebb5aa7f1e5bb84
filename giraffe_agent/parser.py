"""Tolerant parsing of what vision-language models emit into one typed :data:`~giraffe_agent.actions.Action`.

:func:`parse_action` reads one model reply and returns a :class:`ParsedAction`, or raises a
:class:`ParseError` whose ``feedback`` is a short message for the model: what was wrong, and the
canonical form it should have used. It raises nothing else for any ``str`` input.

Forms recognised (``ParsedAction.style``), each with one example:

* ``"json"``, our canonical form, possibly in ```json fences, after a ``Thought:`` line, or as a
  one-item list; single quotes, trailing commas and Python's ``True``/``False``/``None`` are
  tolerated: ``{"action": "click", "x": 500, "y": 300}``;
* ``"tool_call"``, a function call naming the action, optionally in ``<tool_call>`` tags, its
  arguments an object or a JSON string (OpenAI style):
  ``{"name": "click", "arguments": {"x": 500, "y": 300}}``,
  ``{"function": {"name": "click", "arguments": "{\\"x\\": 500, \\"y\\": 300}"}}``;
* ``"qwen25vl"``, Qwen2.5-VL's ``computer_use`` / ``mobile_use`` tool:
  ``<tool_call>{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [640, 360]}}</tool_call>``;
* ``"uitars"``, UI-TARS / UI-TARS-1.5 actions with points or boxes (a box is taken at its centre):
  ``Thought: ...\\nAction: click(start_box='<|box_start|>(412,305)<|box_end|>')``;
* ``"function"``, plain calls: ``click(500, 300)``, ``type("hello", submit=true)``, ``press("Enter")``.

Reasoning before the action (a ``Thought:`` line, prose, ``<think>`` blocks, a ``"thought"``
field) becomes ``ParsedAction.thought``.

Coordinate spaces (units of ``x``, ``y``, ``to_x``, ``to_y`` and ``box``):

* ``"qwen25vl"``: always ``"image_px"``, pixels of the resized image the model saw (that is what
  Qwen2.5-VL's tool is defined in);
* ``"uitars"``: UI-TARS emits 0-1000 and UI-TARS-1.5 emits pixels of the resized image, with the
  same syntax. A value above 1000 can only be pixels, so any number written above 1000 (a
  point's, or any corner of a box, even when the box's centre is below 1000) makes the action
  ``"image_px"``; otherwise (ambiguous) ``default_space`` decides;
* ``"json"``, ``"tool_call"``, ``"function"``: the ``space`` field when the reply gives one,
  else ``default_space``. These are the forms our own prompt teaches, so nothing is guessed: a
  value above 1000 in ``"norm1000"`` is an error fed back to the model.

Every position must be a finite number >= 0, at most 1000 in ``"norm1000"`` and at most
:data:`MAX_IMAGE_PX` in ``"image_px"``; no NaN or infinity reaches an action, whatever the form
(``NaN``, ``Infinity``, ``1e999``, ``"nan"``). A zoom box needs ``x0 < x1`` and ``y0 < y1``.
Whole-number fields (``amount``, ``step``) refuse fractions: ``2.5`` is an error fed back to the
model, never rounded or truncated to 2 (``2.0`` and ``"2"`` are 2). In call forms, signed
literals keep their sign (``click(-5, 3)`` is a negative position, refused as such; ``+5`` is 5),
a keyword given twice is an error, and only a plain name is a call: ``element.click(1, 2)`` or
``pyautogui.click(1, 2)`` (a method call, as prose may mention one) is not an action. Key names
are mapped to Playwright's notation (``"ctrl c"`` -> ``"Control+c"``, ``cmd`` -> ``Meta``,
``enter`` -> ``Enter``).

Conversions from foreign forms: Qwen's ``scroll`` ``pixels`` (> 0 up, < 0 down) become wheel
notches of 100 px (rounded up, 1-50); UI-TARS's ``wait()`` is 5 s, a ``type`` content ending in a
newline means submit, ``finished`` is Done and ``call_user`` is Fail; Qwen's ``answer`` then
``terminate`` in one reply is one Done with the answer. Actions a browser cannot do (``mouse_move``,
``long_press``, ``press_home``...) are errors that say so. A reply holding the same action twice
counts once; different actions are an error that lists them.
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from giraffe_agent.actions import ACTION_ADAPTER, Action, CoordinateSpace, action_to_json
from giraffe_core.errors import GiraffeError, InputError

__all__ = ["MAX_IMAGE_PX", "MAX_REPLY_CHARS", "ParseError", "ParseStyle", "ParsedAction", "parse_action"]

#: which form a reply was written in
ParseStyle = Literal["json", "tool_call", "qwen25vl", "uitars", "function"]

#: longest reply read, characters (a reply is one thought and one action; longer ones are refused)
MAX_REPLY_CHARS = 100_000
#: largest coordinate accepted in "image_px", pixels (no resized screenshot is that large)
MAX_IMAGE_PX = 100_000
#: most JSON candidates or calls looked at in one reply, and most bracket or quote characters
#: scanned to match them, and deepest JSON nesting decoded (bound the work on degenerate text)
_MAX_CANDIDATES = 24
_MAX_SCANNED = 50_000
_MAX_DEPTH = 32

_SPACES: tuple[CoordinateSpace, ...] = ("norm1000", "image_px")
_MODELS: dict[str, type[BaseModel]] = {m.model_fields["action"].default: m for m in get_args(get_args(Action)[0])}

#: the canonical example of every action, shown in feedback
_EXAMPLES: dict[str, str] = {
    "click": '{"action": "click", "x": 500, "y": 300}',
    "double_click": '{"action": "double_click", "x": 500, "y": 300}',
    "right_click": '{"action": "right_click", "x": 500, "y": 300}',
    "type": '{"action": "type", "text": "hello", "x": 500, "y": 300, "submit": true}',
    "key": '{"action": "key", "keys": "Control+a"}',
    "scroll": '{"action": "scroll", "direction": "down", "amount": 3}',
    "drag": '{"action": "drag", "x": 200, "y": 300, "to_x": 700, "to_y": 300}',
    "goto": '{"action": "goto", "url": "https://example.com"}',
    "back": '{"action": "back"}',
    "wait": '{"action": "wait", "seconds": 2}',
    "select": '{"action": "select", "x": 500, "y": 300, "value": "Blue"}',
    "zoom": '{"action": "zoom", "step": 3, "box": [0, 0, 500, 500]}',
    "done": '{"action": "done", "text": "the answer"}',
    "fail": '{"action": "fail", "reason": "why it cannot be done"}',
}


class ParseError(GiraffeError, ValueError):
    """A model reply holds no readable action, or more than one.

    Attributes:
        feedback: a short message for the model: what was wrong and the expected canonical form.
    """

    code = "parse-error"

    def __init__(self, message: str, *, feedback: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.feedback = feedback if feedback is not None else _feedback(message, None)


class ParsedAction(BaseModel):
    """One action read from a reply.

    Attributes:
        action: the typed action; positions in ``action.space`` units.
        style: the form the reply was written in.
        thought: the reasoning written before the action, or None.
    """

    model_config = ConfigDict(frozen=True)

    action: Action
    style: ParseStyle
    thought: str | None = None


def parse_action(text: str, *, default_space: CoordinateSpace = "norm1000") -> ParsedAction:
    """Read the one action in a model reply.

    Args:
        text: the reply, as generated.
        default_space: the coordinate space of positions whose form does not say (see the module
            docstring for the rule of each form).

    Raises:
        ParseError: no action, several different actions, or an invalid one (its ``feedback`` is
            meant for the model). Nothing else is raised for any ``text``.
        InputError: ``default_space`` is not a coordinate space (a programming error).
    """
    if default_space not in _SPACES:
        raise InputError(f"default_space must be one of {list(_SPACES)}, got {default_space!r}")
    if not isinstance(text, str):
        raise _error(f"the reply is {type(text).__name__}, not text")
    if len(text) > MAX_REPLY_CHARS:
        raise _error(f"the reply is {len(text)} characters long; write one short thought and one action")
    text = _valid_unicode(text)
    if not text.strip():
        raise _error("the reply is empty")
    thinking, body = _split_think_blocks(text)
    budget = _Budget()
    found, problems = _json_actions(body, default_space, budget)
    if not found:
        found = _call_actions(body, default_space, budget)
    if not found:
        raise problems[0] if problems else _error("no action found in the reply")
    action, style, start, note = _single(found)
    pre = _clean_thought(body[:start])
    thought = "\n".join(p for p in (thinking, pre, note) if p) or None
    return ParsedAction(action=action, style=style, thought=thought)


# ------------------------------------------------------------------------------- errors

def _feedback(problem: str, tag: str | None) -> str:
    example = _EXAMPLES.get(tag or "click", _EXAMPLES["click"])
    return f"Could not use your reply: {problem}. Reply with exactly one action as JSON, e.g. {example}"


def _error(problem: str, tag: str | None = None) -> ParseError:
    return ParseError(problem, feedback=_feedback(problem, tag))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: object, limit: int = 40) -> str:
    """A value as the reply wrote it, shortened for feedback."""
    return _clip(repr(value), limit)


def _valid_unicode(text: str) -> str:
    """``text`` with lone surrogates (which cannot be encoded) replaced by '?'."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")
    return text


# ------------------------------------------------------------------------ thought and choice

_THINK_TAGS = (("<think>", "</think>"), ("<thinking>", "</thinking>"))
_NOISE_LINE = re.compile(r"```\w*|</?tool_call>|</?answer>")
_LEADING_LABEL = re.compile(r"^[\s*#>_]*(?:thoughts?|reasoning)[ \t*_]*:[\s*_]*", re.IGNORECASE)
_TRAILING_LABEL = re.compile(r"(?:^|\n)[ \t*#>_]*actions?[ \t*_]*:[\s*_`]*$", re.IGNORECASE)


def _split_think_blocks(text: str) -> tuple[str | None, str]:
    """(the contents of <think> blocks, the text without them). A closing tag alone ends a block
    that the chat template opened, so everything before it is thought."""
    thoughts: list[str] = []
    for opening, closing in _THINK_TAGS:
        kept: list[str] = []
        position = 0
        while (start := text.find(opening, position)) >= 0 and (end := text.find(closing, start)) >= 0:
            thoughts.append(text[start + len(opening):end].strip())
            kept += [text[position:start], "\n"]
            position = end + len(closing)
        text = "".join(kept) + text[position:]
        end = text.find(closing)
        if end >= 0:
            thoughts.append(text[:end].strip())
            text = text[end + len(closing):]
    return "\n".join(t for t in thoughts if t) or None, text


def _clean_thought(text: str) -> str | None:
    """The prose before an action: without fences, tool-call tags and Thought:/Action: labels."""
    lines = [line for line in text.splitlines() if not _NOISE_LINE.fullmatch(line.strip())]
    cleaned = _TRAILING_LABEL.sub("", "\n".join(lines).strip())
    cleaned = _LEADING_LABEL.sub("", cleaned.replace("<tool_call>", "")).strip().strip("`").strip()
    return cleaned or None


_Found = tuple[Action, ParseStyle, int, str | None]  # action, style, where it starts, a note (thought)


def _single(found: list[_Found]) -> _Found:
    """The one action of a reply; repeats of the same action count once."""
    distinct: list[_Found] = []
    for item in found:
        if all(item[0] != other[0] for other in distinct):
            distinct.append(item)
    if len(distinct) > 1 and all(item[0].action == "done" for item in distinct):
        answers = [item for item in distinct if item[0].text]  # type: ignore[union-attr]
        if len(answers) <= 1:  # Qwen's "answer" then "terminate": one Done with the answer
            distinct = answers or distinct[:1]
    if len(distinct) > 1:
        listed = "; ".join(_clip(action_to_json(item[0]), 70) for item in distinct[:4])
        raise _error(f"the reply holds {len(distinct)} different actions ({listed}); send only one per reply")
    return distinct[0]


# ------------------------------------------------------------------------------ JSON forms

#: where a JSON action may start: an object with a key, or a list of objects
_OPENERS = re.compile(r"\{\s*[\"']|\[\s*\{")
_BRACKET_EVENTS = re.compile(r"[\[\]{}()\"'\\]")
_CLOSERS = {"[": "]", "{": "}", "(": ")"}


@dataclass
class _Budget:
    """Bracket and quote characters that may still be scanned while parsing one reply."""

    left: int = _MAX_SCANNED


def _matching(text: str, start: int, budget: _Budget) -> tuple[int | None, int]:
    """(index just past the bracket closing the one at ``start``, or None; deepest nesting seen).

    Brackets inside quotes ('...' or "...", with backslash escapes) do not count.
    """
    stack: list[str] = []
    deepest = 0
    quote: str | None = None
    skip = -1  # index of a character escaped by a backslash inside a string
    for match in _BRACKET_EVENTS.finditer(text, start):
        budget.left -= 1
        if budget.left < 0:
            return None, deepest
        char, index = match.group(), match.start()
        if index == skip:
            continue
        if quote is not None:
            if char == "\\":
                skip = index + 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in _CLOSERS:
            stack.append(_CLOSERS[char])
            deepest = max(deepest, len(stack))
        elif char in ")]}":
            if not stack or stack[-1] != char:
                return None, deepest
            stack.pop()
            if not stack:
                return index + 1, deepest
    return None, deepest


def _json_actions(body: str, space: CoordinateSpace, budget: _Budget) -> tuple[list[_Found], list[ParseError]]:
    """Actions in the JSON objects of ``body``; and problems found (reported when nothing else is)."""
    found: list[_Found] = []
    problems: list[ParseError] = []
    position, attempts = 0, 0
    while attempts < _MAX_CANDIDATES:
        match = _OPENERS.search(body, position)
        if match is None:
            break
        attempts += 1
        start = match.start()
        end, depth = _matching(body, start, budget)
        if end is None:
            if match.group().startswith("{") and not problems:
                problems.append(_error("a JSON object is not closed (a '}' or a quote is missing)"))
            position = start + 1
            continue
        if depth > _MAX_DEPTH:  # no action is nested this deep: skip the whole span
            position = end
            continue
        try:
            value = _loads(body[start:end])
        except ParseError as exc:
            if match.group().startswith("{"):
                problems.append(exc)
            position = start + 1
            continue
        actions = _actions_in_json(value, space, depth=0)
        found.extend((action, style, start, note) for action, style, note in actions)
        position = end
    return found, problems


def _loads(text: str) -> Any:
    """JSON, or JSON with single quotes, trailing commas and Python constants repaired."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        first = exc
    try:
        return json.loads(_repair_json(text))
    except (ValueError, RecursionError):
        pass
    detail = first.msg if isinstance(first, json.JSONDecodeError) else type(first).__name__
    raise _error(f"the JSON is malformed ({detail})")


_PY_CONSTANTS = {"True": "true", "False": "false", "None": "null"}
_JSON_TOKEN = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|,(?=\s*[}\]])|\b(?:True|False|None)\b", re.DOTALL)


def _repair_json(text: str) -> str:
    """Single-quoted strings -> double-quoted, trailing commas dropped, True/False/None -> JSON.

    Only text outside double-quoted strings changes, so the repair never alters a string's content.
    """

    def fix(match: re.Match[str]) -> str:
        token = match.group()
        if token.startswith('"'):
            return token
        if token.startswith("'"):
            inner = token[1:-1].replace("\\'", "'").replace('"', '\\"')
            return f'"{inner}"'
        if token == ",":
            return ""
        return _PY_CONSTANTS[token]

    return _JSON_TOKEN.sub(fix, text)


_QWEN_TOOLS = {"computer_use", "mobile_use", "computer", "browser_use"}
_CALL_KEYS = ("arguments", "parameters", "args", "params", "input")


def _actions_in_json(value: Any, space: CoordinateSpace, depth: int) -> list[tuple[Action, ParseStyle, str | None]]:
    """Every action a decoded JSON value holds (lists and ``tool_calls`` are searched)."""
    if depth > 3:
        return []
    if isinstance(value, list):
        out = []
        for item in value[:_MAX_CANDIDATES]:
            out.extend(_actions_in_json(item, space, depth + 1))
        return out
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("tool_calls"), list):
        return _actions_in_json(value["tool_calls"], space, depth + 1)
    if isinstance(value.get("function"), dict):
        value = value["function"]
    if "name" in value and any(key in value for key in _CALL_KEYS):
        arguments = next(value[key] for key in _CALL_KEYS if key in value)
        return [_tool_call(value["name"], arguments, space)]
    if "action" in value:
        action, note = _json_object(value, space)
        return [(action, "json", note)]
    return []


def _tool_call(name: Any, arguments: Any, space: CoordinateSpace) -> tuple[Action, ParseStyle, str | None]:
    """``{"name": ..., "arguments": {...} or "<json>"}``: Qwen's computer_use, or an action by name."""
    if not isinstance(name, str):
        raise _error(f'the tool call\'s "name" must be an action name, got {_show(name)}')
    if isinstance(arguments, str):
        arguments = _loads(arguments) if arguments.strip() else {}
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise _error(f'the "arguments" of {_show(name)} must be an object, got {_show(arguments)}')
    if name.strip().lower() in _QWEN_TOOLS:
        return _qwen_action(arguments), "qwen25vl", None
    tag = _tag(name)
    fields = {k: v for k, v in arguments.items() if k != "action"}
    action, note = _canonical_action(tag, fields, space)
    return action, "tool_call", note


def _json_object(value: dict[str, Any], space: CoordinateSpace) -> tuple[Action, str | None]:
    """Our canonical ``{"action": "click", "x": 500, "y": 300}`` (fields may also be nested in "arguments")."""
    fields = dict(value)
    name = fields.pop("action")
    if isinstance(name, dict) and "action" in name:  # {"thought": ..., "action": {"action": ...}}
        action, inner_note = _json_object(name, space)
        outer_note = _pop_notes(fields, "")
        return action, "\n".join(n for n in (outer_note, inner_note) if n) or None
    for key in _CALL_KEYS:
        if isinstance(fields.get(key), dict):
            nested = fields.pop(key)
            fields.update({k: v for k, v in nested.items() if k != "action"})
    return _canonical_action(_tag(name), fields, space)


# ------------------------------------------------------------------------------ call forms

_CALL_START = re.compile(r"(?<![\w.])([A-Za-z_]\w{0,30})\(")
_ACTION_MARKER = re.compile(r"^[ \t>*#]*action[ \t*]*:", re.IGNORECASE | re.MULTILINE)
_UITARS_ONLY = {"left_single", "left_double", "right_single", "hotkey", "finished", "call_user", "press_back",
                "press_home", "long_press", "open_app", "keydown", "keyup", "mouse_down", "mouse_up", "move_to"}
_UITARS_KEYWORDS = {"start_box", "end_box", "point", "start_point", "end_point", "content", "key"}
_UITARS_UNSUPPORTED = {"press_home", "long_press", "open_app", "keydown", "keyup", "mouse_down", "mouse_up", "move_to",
                       "hover", "mouse_move"}


def _call_actions(body: str, space: CoordinateSpace, budget: _Budget) -> list[_Found]:
    """Actions written as calls (UI-TARS or plain); after the last ``Action:`` label when there is one."""
    marker = None
    for marker in _ACTION_MARKER.finditer(body):  # noqa: B007 - the last one is wanted
        pass
    region = marker.end() if marker is not None else 0
    found: list[_Found] = []
    taken = region
    for match in _CALL_START.finditer(body, region):
        if match.start() < taken or not _is_call_name(match.group(1)):
            continue
        if len(found) >= _MAX_CANDIDATES:
            raise _error("the reply holds too many calls; send only one action")
        end = _call_end(body, match.end() - 1, budget)
        name, args, kwargs = _parse_call(body[match.start():end])
        style: ParseStyle = "function"
        if (name.lower() in _UITARS_ONLY or _UITARS_KEYWORDS & kwargs.keys()
                or (marker is not None and not args and not kwargs and name.lower() == "wait")):
            style = "uitars"
            action = _uitars_action(name, args, kwargs, space)
        else:
            action = _function_action(name, args, kwargs, space)
        start = marker.start() if marker is not None else match.start()
        found.append((action, style, start, None))
        taken = end
    return found


def _is_call_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in _MODELS or lowered in _NAME_ALIASES or lowered in _UITARS_ONLY or lowered in _UITARS_UNSUPPORTED


def _call_end(body: str, open_paren: int, budget: _Budget) -> int:
    """End of the call whose '(' is at ``open_paren``: its matching ')', else the last ')' of the paragraph."""
    end, _ = _matching(body, open_paren, budget)
    if end is not None:
        return end
    paragraph_end = body.find("\n\n", open_paren)
    paragraph_end = len(body) if paragraph_end < 0 else paragraph_end
    last = body.rfind(")", open_paren, paragraph_end)
    return paragraph_end if last < 0 else last + 1


_LENIENT_CALL = re.compile(r"\s*(\w+)\s*\((.*)\)\s*", re.DOTALL)
_LENIENT_STRING_ARG = re.compile(r"\s*(?:(\w+)\s*=\s*)?(['\"])(.*)\2\s*,?\s*", re.DOTALL)
_NAMED_CONSTANTS = {"true": True, "false": False, "null": None, "none": None}


def _parse_call(source: str) -> tuple[str, list[Any], dict[str, Any]]:
    """``name(args...)`` -> (name, positional values, keyword values); Python literal syntax."""
    try:
        with warnings.catch_warnings():  # invalid escapes such as "\o" warn; they read as written
            warnings.simplefilter("ignore")
            tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return _parse_call_leniently(source)
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        return _parse_call_leniently(source)
    name = call.func.id
    args = [_literal(node, name) for node in call.args]
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise _error(f"{name}(...) uses **; write each argument out")
        if keyword.arg in kwargs:  # Python's parser allows it (its compiler does not): never pick one silently
            raise _error(f"{name}() got {keyword.arg} twice", _tag_or_none(name))
        kwargs[keyword.arg] = _literal(keyword.value, name)
    return name, args, kwargs


def _parse_call_leniently(source: str) -> tuple[str, list[Any], dict[str, Any]]:
    """A call with one string argument that Python cannot read (an unescaped quote or a raw newline)."""
    call = _LENIENT_CALL.fullmatch(source)
    argument = _LENIENT_STRING_ARG.fullmatch(call.group(2)) if call else None
    if call is None or argument is None:
        head = source.split("(", 1)[0].strip()
        raise _error(f"could not read the arguments of {_show(source, 60)}", _tag_or_none(head))
    value = _unescape(argument.group(3))
    if argument.group(1):
        return call.group(1), [], {argument.group(1): value}
    return call.group(1), [value], {}


def _unescape(text: str) -> str:
    """Python-style escapes of a string we had to read by hand (\\n, \\t, \\', \\", \\\\)."""
    replacements = {"n": "\n", "t": "\t", "'": "'", '"': '"', "\\": "\\"}
    return re.sub(r"\\(.)", lambda m: replacements.get(m.group(1), m.group()), text, flags=re.DOTALL)


def _literal(node: ast.expr, name: str) -> Any:
    """The value of a literal argument: numbers, strings, true/false/null, lists, tuples, dicts."""
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float))):
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float))
            and not isinstance(node.operand.value, bool)):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.Name) and node.id.lower() in _NAMED_CONSTANTS:
        return _NAMED_CONSTANTS[node.id.lower()]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(element, name) for element in node.elts]
    if isinstance(node, ast.Dict):
        keys = [_literal(key, name) if key is not None else None for key in node.keys]
        if not all(isinstance(key, str) for key in keys):
            raise _error(f"{name}(...) has a dict argument whose keys are not strings", _tag_or_none(name))
        return {key: _literal(value, name) for key, value in zip(keys, node.values)}
    raise _error(f"the arguments of {name}(...) must be numbers or quoted strings", _tag_or_none(name))


#: positional parameters of the plain function form, per action
_POSITIONAL: dict[str, tuple[str, ...]] = {
    "click": ("x", "y"), "double_click": ("x", "y"), "right_click": ("x", "y"), "type": ("text", "x", "y"),
    "key": ("keys",), "scroll": ("direction", "amount", "x", "y"), "drag": ("x", "y", "to_x", "to_y"),
    "goto": ("url",), "back": (), "wait": ("seconds",), "select": ("x", "y", "value"), "zoom": ("step", "box"),
    "done": ("text",), "fail": ("reason",),
}


def _function_action(name: str, args: list[Any], kwargs: dict[str, Any], space: CoordinateSpace) -> Action:
    """``click(500, 300)``, ``type("hi", submit=true)``, ``press("Enter")``, ``scroll("down", 3)``..."""
    tag = _tag(name)
    params = _POSITIONAL.get(tag, ())
    if "x" in params:  # click((500, 300)) / drag([1, 2], [3, 4]): points written as pairs
        args = [v for arg in args for v in (arg if isinstance(arg, list) and len(arg) == 2 else [arg])]
    if tag == "key" and len(args) > 1:  # press("ctrl", "c")
        args = [args]
    if len(args) > len(params):
        raise _error(f"{name}() takes at most {len(params)} positional arguments ({', '.join(params)}), "
                     f"got {len(args)}", tag)
    fields = dict(kwargs)
    for param, value in zip(params, args):
        if param in fields:
            raise _error(f"{name}() got {param} twice", tag)
        fields[param] = value
    action, _ = _canonical_action(tag, fields, space)
    return action


def _first(kwargs: dict[str, Any], *keys: str) -> Any:
    return next((kwargs[key] for key in keys if kwargs.get(key) is not None), None)


def _uitars_action(name: str, args: list[Any], kwargs: dict[str, Any], space: CoordinateSpace) -> Action:
    """UI-TARS calls; boxes are strings like ``'<|box_start|>(x1,y1,x2,y2)<|box_end|>'`` or ``'<point>x y</point>'``."""
    verb = name.lower()
    if verb in _UITARS_UNSUPPORTED:
        raise _error(f"{name}() is not available in this browser", "click")
    positional = args[0] if args else None
    start = _first(kwargs, "start_box", "point", "start_point")
    if verb in ("click", "left_single", "left_double", "double_click", "right_single", "right_click"):
        tag = _tag(verb)
        where = start if start is not None else positional
        x, y = _point(where, "start_box", tag)
        return _build(tag, {"x": x, "y": y}, _uitars_space([where], space))
    if verb in ("drag", "select"):
        end = _first(kwargs, "end_box", "end_point")
        where = start if start is not None else positional
        end = end if end is not None else (args[1] if len(args) > 1 else None)
        x, y = _point(where, "start_box", "drag")
        to_x, to_y = _point(end, "end_box", "drag")
        fields = {"x": x, "y": y, "to_x": to_x, "to_y": to_y}
        return _build("drag", fields, _uitars_space([where, end], space))
    if verb in ("hotkey", "press", "key"):
        keys = _first(kwargs, "key", "keys", "hotkey")
        return _build("key", {"keys": keys if keys is not None else (args if len(args) > 1 else positional)}, None)
    if verb == "type":
        text = _first(kwargs, "content", "text")
        text = _text(text if text is not None else positional, "content", "type")
        for ending in ("\n", "\\n"):  # UI-TARS: a newline at the end means "and submit"
            if text.endswith(ending):
                return _build("type", {"text": text[:-len(ending)], "submit": True}, None)
        return _build("type", {"text": text}, None)
    if verb == "scroll":
        fields = {"direction": _first(kwargs, "direction") or (args[-1] if args else None)}
        if start is not None:
            fields["x"], fields["y"] = _point(start, "start_box", "scroll")
        return _build("scroll", fields, _uitars_space([start], space))
    if verb == "wait":
        return _build("wait", {"seconds": 5.0}, None)  # UI-TARS: "sleep for 5s"
    if verb == "finished":
        answer = _first(kwargs, "content", "answer") or positional
        return _build("done", {"text": answer or None}, None)
    if verb == "call_user":
        return _build("fail", {"reason": "the model asked the user for help (call_user)"}, None)
    if verb == "press_back":
        return _build("back", {}, None)
    return _function_action(name, args, kwargs, space)


def _uitars_space(written: list[Any], default_space: CoordinateSpace) -> CoordinateSpace:
    """UI-TARS (0-1000) or UI-TARS-1.5 (pixels)? Above 1000 it can only be pixels; else the default.

    Every number written counts, the corners of a box included: a box reaching x = 1200 is in pixels
    even when its centre is below 1000. ``written`` are the points or boxes as the reply gave them
    (already read once by :func:`_point`, so they are valid), ``None`` for one not given.
    """
    numbers = [n for value in written if value is not None for n in _numbers(value, "start_box", None)]
    return "image_px" if any(n > 1000 for n in numbers) else default_space


# ------------------------------------------------------------------------------ Qwen2.5-VL

def _qwen_action(arguments: dict[str, Any]) -> Action:
    """Qwen2.5-VL's computer_use / mobile_use arguments; coordinates are pixels of the resized image."""
    verb = arguments.get("action")
    if not isinstance(verb, str):
        raise _error(f'computer_use needs "action" (e.g. "left_click"), got {_show(verb)}')
    verb = verb.strip().lower()
    space: CoordinateSpace = "image_px"

    def point(*keys: str, tag: str) -> tuple[float, float]:
        return _point(_first(arguments, *keys), keys[0], tag)

    if verb in ("left_click", "click", "tap", "double_click", "right_click"):
        tag = _tag(verb)
        x, y = point("coordinate", "point", tag=tag)
        return _build(tag, {"x": x, "y": y}, space)
    if verb == "type":
        fields: dict[str, Any] = {"text": arguments.get("text"), "submit": arguments.get("press_enter")}
        if _first(arguments, "coordinate") is not None:
            fields["x"], fields["y"] = point("coordinate", tag="type")
        return _build("type", fields, space)
    if verb == "key":
        return _build("key", {"keys": _first(arguments, "keys", "key", "text")}, None)
    if verb in ("scroll", "hscroll"):
        return _qwen_scroll(verb, arguments)
    if verb in ("left_click_drag", "drag", "swipe") and _first(arguments, "coordinate2", "end_coordinate",
                                                                  "start_coordinate") is not None:
        if _first(arguments, "start_coordinate") is not None:
            x, y = point("start_coordinate", tag="drag")
            to_x, to_y = point("end_coordinate", "coordinate", tag="drag")
        else:
            x, y = point("coordinate", tag="drag")
            to_x, to_y = point("coordinate2", "end_coordinate", tag="drag")
        return _build("drag", {"x": x, "y": y, "to_x": to_x, "to_y": to_y}, space)
    if verb in ("left_click_drag", "drag", "swipe"):
        raise _error(f'{verb} needs a start and an end ("start_coordinate" and "coordinate")', "drag")
    if verb == "wait":
        return _build("wait", {"seconds": _first(arguments, "time", "seconds")}, None)
    if verb == "terminate":
        return _qwen_terminate(arguments.get("status"))
    if verb == "answer":
        return _build("done", {"text": arguments.get("text")}, None)
    if verb in ("visit_url", "goto", "open_url"):
        return _build("goto", {"url": _first(arguments, "url", "text")}, None)
    if verb in ("history_back", "back"):
        return _build("back", {}, None)
    if verb == "system_button":
        button = str(arguments.get("button", "")).strip().lower()
        if button == "back":
            return _build("back", {}, None)
        if button == "enter":
            return _build("key", {"keys": "Enter"}, None)
        raise _error(f"system_button {_show(button)} is not available in this browser", "key")
    raise _error(f"computer_use action {_show(verb)} is not available here", "click")


def _qwen_scroll(verb: str, arguments: dict[str, Any]) -> Action:
    """Qwen scrolls by ``pixels`` (> 0 up or right, < 0 down or left): 100 px per wheel notch, 1-50 notches."""
    fields: dict[str, Any] = {}
    if _first(arguments, "coordinate") is not None:
        fields["x"], fields["y"] = _point(arguments["coordinate"], "coordinate", "scroll")
    pixels = arguments.get("pixels")
    if pixels is not None:
        amount = _number(pixels, "pixels", "scroll")
        if amount == 0:
            raise _error('"pixels" of scroll must not be 0', "scroll")
        if verb == "hscroll":
            fields["direction"] = "right" if amount > 0 else "left"
        else:
            fields["direction"] = "up" if amount > 0 else "down"
        fields["amount"] = min(50, max(1, math.ceil(abs(amount) / 100)))
    elif arguments.get("direction") is not None:
        fields["direction"] = arguments["direction"]
        if arguments.get("amount") is not None:
            fields["amount"] = arguments["amount"]
    else:
        raise _error('scroll needs "pixels" (negative scrolls down) or "direction"', "scroll")
    return _build("scroll", fields, "image_px")


def _qwen_terminate(status: Any) -> Action:
    """``terminate`` with ``status`` "success" -> Done, "failure" -> Fail."""
    state = status.strip().lower() if isinstance(status, str) else None
    if state in ("success", "succeeded", "done", "completed"):
        return _build("done", {}, None)
    if state in ("failure", "fail", "failed", "infeasible"):
        return _build("fail", {"reason": f"terminated with status {status!r}"}, None)
    raise _error(f'terminate needs "status": "success" or "failure", got {_show(status)}', "done")


# -------------------------------------------------------------------- names, fields, values

_NAME_ALIASES: dict[str, str] = {
    "left_click": "click", "tap": "click", "left_single": "click",
    "doubleclick": "double_click", "dblclick": "double_click", "left_double": "double_click",
    "rightclick": "right_click", "right_single": "right_click", "context_click": "right_click",
    "type_text": "type", "input_text": "type", "input": "type", "write": "type",
    "press": "key", "key_press": "key", "keypress": "key", "press_key": "key", "hotkey": "key", "keys": "key",
    "left_click_drag": "drag", "drag_and_drop": "drag",
    "go_to": "goto", "navigate": "goto", "open_url": "goto", "visit_url": "goto",
    "go_back": "back", "navigate_back": "back", "history_back": "back", "press_back": "back",
    "sleep": "wait", "select_option": "select", "zoom_back": "zoom", "zoomback": "zoom",
    "answer": "done", "finish": "done", "finished": "done", "complete": "done", "task_complete": "done",
    "failed": "fail", "give_up": "fail", "infeasible": "fail", "call_user": "fail",
}

#: per action: alternative field names -> ours
_FIELD_ALIASES: dict[str, dict[str, str]] = {
    "type": {"content": "text", "press_enter": "submit", "enter": "submit"},
    "key": {"key": "keys", "combo": "keys", "hotkey": "keys", "text": "keys"},
    "select": {"option": "value", "label": "value", "text": "value"},
    "wait": {"time": "seconds", "duration": "seconds", "secs": "seconds"},
    "done": {"answer": "text", "content": "text", "result": "text"},
    "fail": {"text": "reason", "message": "reason", "content": "reason", "error": "reason"},
    "goto": {"href": "url", "link": "url"},
}
#: fields naming a point [x, y] (or a box, taken at its centre) -> the fields it fills
_POINT_FIELDS: dict[str, tuple[str, str]] = {
    "coordinate": ("x", "y"), "point": ("x", "y"), "position": ("x", "y"), "start": ("x", "y"),
    "start_coordinate": ("x", "y"), "start_point": ("x", "y"), "from": ("x", "y"),
    "end": ("to_x", "to_y"), "to": ("to_x", "to_y"), "end_coordinate": ("to_x", "to_y"),
    "end_point": ("to_x", "to_y"), "coordinate2": ("to_x", "to_y"),
}
#: commentary fields a model adds to its JSON: they become the thought
_NOTE_FIELDS = ("thought", "thoughts", "reasoning", "reason", "explanation", "description", "note", "comment",
                "rationale")


def _tag_or_none(name: Any) -> str | None:
    if not isinstance(name, str):
        return None
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return key if key in _MODELS else _NAME_ALIASES.get(key)


def _tag(name: Any) -> str:
    """Our action tag for an action name (ours or a known alias)."""
    tag = _tag_or_none(name)
    if tag is None:
        if not isinstance(name, str):
            raise _error(f'"action" must be an action name, got {_show(name)}')
        raise _error(f"unknown action {_show(name)}; the actions are {', '.join(_MODELS)}")
    return tag


def _pop_notes(fields: dict[str, Any], tag: str) -> str | None:
    notes = [fields.pop(key) for key in _NOTE_FIELDS if key in fields and not (tag == "fail" and key == "reason")]
    return "\n".join(n.strip() for n in notes if isinstance(n, str) and n.strip()) or None


def _canonical_action(tag: str, fields: dict[str, Any], default_space: CoordinateSpace) -> tuple[Action, str | None]:
    """Build ``tag`` from fields in our vocabulary (plus aliases); positions in ``space`` or ``default_space``."""
    fields = {key: value for key, value in fields.items() if value is not None}
    note = _pop_notes(fields, tag)
    for alias, field in _FIELD_ALIASES.get(tag, {}).items():
        if alias in fields and field not in fields:
            fields[field] = fields.pop(alias)
    for alias, (fx, fy) in _POINT_FIELDS.items():
        if alias in fields:
            if fx in fields or fy in fields:
                raise _error(f'{tag} gives both "{alias}" and "{fx}"/"{fy}"', tag)
            fields[fx], fields[fy] = _point(fields.pop(alias), alias, tag)
    if "space" in fields and fields["space"] not in _SPACES:
        raise _error(f'"space" must be "norm1000" or "image_px", got {_show(fields["space"])}', tag)
    return _build(tag, fields, default_space), note  # a "space" the reply gives wins over the default


_POSITION_FIELDS = ("x", "y", "to_x", "to_y", "box")


def _build(tag: str, fields: dict[str, Any], space: CoordinateSpace | None) -> Action:
    """Validate an action from fields in our vocabulary. ``space`` applies when the action has positions
    and ``fields`` names none."""
    data = _coerce(tag, {key: value for key, value in fields.items() if value is not None})
    if space is not None and "space" not in data and any(key in data for key in _POSITION_FIELDS):
        data["space"] = space
    try:
        action: Action = ACTION_ADAPTER.validate_python({"action": tag, **data})
    except ValidationError as exc:
        raise _validation_problem(tag, exc) from None
    _check_range(action)
    return action


def _validation_problem(tag: str, exc: ValidationError) -> ParseError:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"][1:]) or "action"
    if error["type"] == "extra_forbidden":
        return _error(f'{tag} has no field "{field}"', tag)
    if error["type"] == "missing":
        return _error(f'{tag} needs "{field}"', tag)
    return _error(f'"{field}" of {tag}: {error["msg"]} (got {_show(error.get("input"))})', tag)


def _coerce(tag: str, data: dict[str, Any]) -> dict[str, Any]:
    """Field values as the action models want them (numbers from numeric strings, keys in Playwright notation)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("x", "y", "to_x", "to_y"):
            out[key] = _coordinate(value, key, tag)
        elif key == "box":
            out[key] = _box(value, tag)
        elif key == "seconds":
            out[key] = _number(value, key, tag)
        elif key in ("amount", "step"):
            out[key] = _integer(value, key, tag)
        elif key == "submit":
            out[key] = _boolean(value, key, tag)
        elif key == "keys":
            out[key] = _keys(value, tag)
        elif key in ("text", "url", "value", "reason"):
            out[key] = _text(value, key, tag)
        elif key == "direction":
            out[key] = _text(value, key, tag).strip().lower()
        else:
            out[key] = value  # unknown fields are rejected by the model, by name
    return out


def _number(value: Any, name: str, tag: str | None) -> float:
    """A finite float from a number or a numeric string."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _error(f'"{name}" must be a number, got {_show(value)}', tag)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        raise _error(f'"{name}" must be a finite number, got {_show(value)}', tag) from None
    if not math.isfinite(number):
        raise _error(f'"{name}" must be a finite number, got {_show(value)}', tag)
    return number


def _integer(value: Any, name: str, tag: str) -> int:
    number = _number(value, name, tag)
    if not number.is_integer():
        raise _error(f'"{name}" must be a whole number, got {_show(value)}', tag)
    return int(number)


def _coordinate(value: Any, name: str, tag: str | None) -> float:
    number = _number(value, name, tag)
    if number < 0:
        raise _error(f'"{name}" = {_show(value)} is negative; positions start at 0 at the top-left corner', tag)
    return number


def _boolean(value: Any, name: str, tag: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    raise _error(f'"{name}" must be true or false, got {_show(value)}', tag)


def _text(value: Any, name: str, tag: str) -> str:
    if isinstance(value, str):
        return _valid_unicode(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _error(f'"{name}" of {tag} must be a string, got {_show(value)}', tag)


_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _numbers(value: Any, name: str, tag: str | None) -> list[float]:
    """The numbers of a point or box: a list, an {"x", "y"} object, or a string like '(1,2)' or '<point>1 2</point>'."""
    if isinstance(value, str):
        items: list[Any] = _NUMBER_IN_TEXT.findall(value[:1000])
    elif isinstance(value, list | tuple):
        items = list(value[0]) if len(value) == 1 and isinstance(value[0], list | tuple) else list(value)
    elif isinstance(value, dict) and "x" in value and "y" in value:
        items = [value["x"], value["y"]]
    else:
        raise _error(f'"{name}" must be a point [x, y], got {_show(value)}', tag)
    if len(items) > 8:
        raise _error(f'"{name}" holds too many numbers: {_show(value)}', tag)
    return [_coordinate(item, name, tag) for item in items]


def _point(value: Any, name: str, tag: str | None) -> tuple[float, float]:
    """(x, y) from a point, or the centre of a box (x1, y1, x2, y2)."""
    if value is None:
        raise _error(f'{tag or "the action"} needs a position ("{name}")', tag)
    numbers = _numbers(value, name, tag)
    if len(numbers) == 2:
        return numbers[0], numbers[1]
    if len(numbers) == 4:
        return (numbers[0] + numbers[2]) / 2, (numbers[1] + numbers[3]) / 2
    raise _error(f'"{name}" must be a point [x, y] or a box [x1, y1, x2, y2], got {_show(value)}', tag)


def _box(value: Any, tag: str) -> tuple[float, float, float, float]:
    numbers = _numbers(value, "box", tag)
    if len(numbers) != 4 or not (numbers[0] < numbers[2] and numbers[1] < numbers[3]):
        raise _error(f'"box" must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {_show(value)}', tag)
    return numbers[0], numbers[1], numbers[2], numbers[3]


def _check_range(action: Action) -> None:
    """Positions within the space: 0-1000 in norm1000, at most MAX_IMAGE_PX in image_px."""
    space = getattr(action, "space", None)
    if space is None:
        return
    limit = 1000.0 if space == "norm1000" else float(MAX_IMAGE_PX)
    values = {name: getattr(action, name, None) for name in ("x", "y", "to_x", "to_y")}
    box = getattr(action, "box", None)
    if box is not None:
        values.update(zip(("box x0", "box y0", "box x1", "box y1"), box))
    for name, value in values.items():
        if value is not None and value > limit:
            if space == "norm1000":
                raise _error(f"{name} = {value:g} is outside 0-1000: positions are thousandths of the "
                             "screenshot's width and height, from its top-left corner", action.action)
            raise _error(f"{name} = {value:g} pixels is beyond any screenshot", action.action)


_KEY_NAMES: dict[str, str] = {
    "ctrl": "Control", "control": "Control", "ctl": "Control", "cmd": "Meta", "command": "Meta", "meta": "Meta",
    "win": "Meta", "windows": "Meta", "super": "Meta", "alt": "Alt", "option": "Alt", "opt": "Alt",
    "shift": "Shift", "enter": "Enter", "return": "Enter", "esc": "Escape", "escape": "Escape", "tab": "Tab",
    "backspace": "Backspace", "back_space": "Backspace", "del": "Delete", "delete": "Delete", "insert": "Insert",
    "ins": "Insert", "home": "Home", "end": "End", "pageup": "PageUp", "page_up": "PageUp", "pgup": "PageUp",
    "pagedown": "PageDown", "page_down": "PageDown", "pgdn": "PageDown", "up": "ArrowUp", "arrowup": "ArrowUp",
    "down": "ArrowDown", "arrowdown": "ArrowDown", "left": "ArrowLeft", "arrowleft": "ArrowLeft",
    "right": "ArrowRight", "arrowright": "ArrowRight", "space": "Space", "spacebar": "Space",
    "capslock": "CapsLock", "caps_lock": "CapsLock",
}
_FUNCTION_KEY = re.compile(r"[fF]([1-9]|1[0-9]|2[0-4])")
_PLAYWRIGHT_NAME = re.compile(r"[A-Z][A-Za-z0-9]+")


def _keys(value: Any, tag: str = "key") -> str:
    """A key or combination in Playwright notation (``"ctrl c"`` or ``["ctrl", "c"]`` -> ``"Control+c"``)."""
    if isinstance(value, list | tuple):
        parts = [part for item in value for part in _key_parts(_text(item, "keys", tag))]
    else:
        parts = _key_parts(_text(value, "keys", tag))
    if not parts:
        raise _error('"keys" is empty; name a key such as "Enter" or "Control+a"', "key")
    return "+".join(_key_name(part) for part in parts)


def _key_parts(text: str) -> list[str]:
    if len(text) == 1:
        return [text]
    parts: list[str] = []
    for chunk in re.split(r"\s*\+\s*|\s+", text.strip()):
        if "-" in chunk and len(chunk) > 1 and all(chunk.split("-")):  # ctrl-c
            parts.extend(chunk.split("-"))
        elif chunk:
            parts.append(chunk)
    if text.strip().endswith("++"):  # ctrl++
        parts.append("+")
    return parts


def _key_name(part: str) -> str:
    lowered = part.lower()
    if lowered in _KEY_NAMES:
        return _KEY_NAMES[lowered]
    if len(part) == 1:
        return part
    if _FUNCTION_KEY.fullmatch(part):
        return part.upper()
    if _PLAYWRIGHT_NAME.fullmatch(part):
        return part  # already a Playwright key name (NumpadEnter, ControlOrMeta...)
    raise _error(f"unknown key {_show(part)}; use names like Enter, Tab, Escape, ArrowDown, Control+a", "key")
