"""Function calling in training records: tool definitions, calls and responses, rendered as the
Qwen-VL model family renders them.

Records carry (LLaMA-Factory, ms-swift):

* ``tools``: a JSON string or a list of function definitions, bare (``{"name", "description",
  "parameters"}``) or wrapped (``{"type": "function", "function": {...}}``); kept in the wrapped
  form, the JSON-schema form chat templates take;
* call turns (``function_call`` / ``tool_call``): JSON ``{"name": ..., "arguments": {...}}`` or a
  list of them (parallel calls); ``arguments`` may itself be a JSON string;
* response turns (``observation`` / ``tool_response`` / ``tool``): the tool's output, text that
  may hold images.

Rendering (what the model sees; :class:`~training.data.examples.Encoder` applies it):

* a call is the assistant's text ``<tool_call>\\n{"name": N, "arguments": A}\\n</tool_call>``
  (``A`` as JSON, non-ASCII kept), several calls joined by a newline, after the turn's own text
  and a newline when it has some;
* a response is a user turn ``<tool_response>\\n...\\n</tool_response>``, consecutive responses
  joined by a newline into one turn;
* the definitions: when the model's chat template takes ``tools`` (it names the variable), the
  template renders them; otherwise (Qwen2-VL's and Qwen2.5-VL's processor templates, the tiny
  preset's) they are appended to the system turn as Qwen's own tool-aware template appends them
  (``# Tools`` ... ``<tools>`` one JSON definition a line ``</tools>`` ...), the system turn
  being the record's or the template's default (``You are a helpful assistant.``).

These are the forms Qwen2.5's chat template produces (its "hermes" tool format), which
LLaMA-Factory's ``qwen2_vl`` template and ms-swift's default agent template also write.
"""

from __future__ import annotations

import json
from typing import Any

import jinja2
from jinja2 import meta

from training.data.media import BadRecord

__all__ = ["DEFAULT_SYSTEM", "ToolsProcessor", "parse_tool_calls", "parse_tools", "render_tool_calls",
           "template_renders_tools", "tool_response", "with_tool_system"]

#: the system turn the Qwen2-VL template adds when a chat has none
DEFAULT_SYSTEM = "You are a helpful assistant."
_TOOLS_HEAD = ("\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
               "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
_TOOLS_TAIL = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments "
               "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
               "\"arguments\": <args-json-object>}\n</tool_call>")


def _json(value: Any, what: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise BadRecord(f"{what} is not valid JSON: {exc.msg}") from exc


def parse_tools(value: Any) -> list[dict] | None:
    """The record's ``tools`` as ``[{"type": "function", "function": {...}}, ...]`` (``None`` when empty)."""
    if value is None or value == "" or value == []:
        return None
    tools = _json(value, "tools")
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        raise BadRecord(f"tools must be a list of function definitions, got {type(tools).__name__}")
    out = []
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise BadRecord(f"a tool must be a function definition with a name, got {tool!r:.80}")
        out.append({"type": "function", "function": function})
    return out or None


def parse_tool_calls(value: Any) -> list[dict]:
    """The calls of a call turn as ``[{"name": str, "arguments": dict}]``."""
    calls = _json(value, "a tool call")
    calls = calls if isinstance(calls, list) else [calls]
    out = []
    for item in calls:
        call = item["function"] if isinstance(item, dict) and isinstance(item.get("function"), dict) else item
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
            raise BadRecord(f'a tool call must be JSON {{"name": ..., "arguments": {{...}}}}, got {call!r:.80}')
        arguments = _json(call.get("arguments", {}), f"the arguments of tool call {call['name']!r}")
        if not isinstance(arguments, dict):
            raise BadRecord(f"the arguments of tool call {call['name']!r} must be an object")
        out.append({"name": call["name"], "arguments": arguments})
    if not out:
        raise BadRecord("an empty tool call turn")
    return out


def render_tool_calls(calls: list[dict]) -> str:
    """The assistant text of ``calls`` (see the module docstring)."""
    return "\n".join('<tool_call>\n{"name": "' + call["name"] + '", "arguments": '
                     + json.dumps(call["arguments"], ensure_ascii=False) + "}\n</tool_call>" for call in calls)


def tool_response(parts: list[dict]) -> list[dict]:
    """A response's content parts wrapped in ``<tool_response>`` tags."""
    return [{"type": "text", "text": "<tool_response>\n"}, *parts, {"type": "text", "text": "\n</tool_response>"}]


def template_renders_tools(processor: Any) -> bool:
    """Whether the processor's chat template uses a ``tools`` variable (renders definitions itself)."""
    template = getattr(processor, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    if not isinstance(template, str):
        return False
    try:
        return "tools" in meta.find_undeclared_variables(jinja2.Environment().parse(template))
    except jinja2.TemplateSyntaxError:
        return False


def with_tool_system(messages: list[dict], tools: list[dict]) -> list[dict]:
    """``messages`` with the definitions appended to the system turn (added when missing)."""
    block = _TOOLS_HEAD + "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools) + _TOOLS_TAIL
    if messages and messages[0]["role"] == "system":
        system = messages[0]["content"]
        if not isinstance(system, str):
            system = "".join(p.get("text", "") for p in system)
        return [{**messages[0], "content": system + block}, *messages[1:]]
    return [{"role": "system", "content": DEFAULT_SYSTEM + block}, *messages]


class ToolsProcessor:
    """A view of a processor whose ``apply_chat_template`` passes ``tools`` (for templates that
    render them); every other attribute is the processor's own."""

    def __init__(self, processor: Any, tools: list[dict]) -> None:
        self._processor = processor
        self._tools = tools

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
        """The processor's rendering of ``conversation`` with this view's tools."""
        return self._processor.apply_chat_template(conversation, tools=self._tools, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)
