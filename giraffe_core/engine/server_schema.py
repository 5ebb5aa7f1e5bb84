"""What ``POST /v1/chat/completions`` accepts: the request schema, its parsing and its size limits.

:func:`parse_request` turns the body into a :class:`ChatCompletionRequest` or a 400 naming the
field: malformed JSON, ``NaN``/``Infinity`` (JSON has no such numbers), nesting deeper than
Python's recursion limit, integers of more than 4,300 digits, wrong types, numbers out of range.
Numbers are bounded where the model would otherwise fail later: ``seed`` is a 64-bit integer
(what ``torch.manual_seed`` takes), ``max_tokens``/``max_completion_tokens`` are 1 to 2**31 - 1,
``temperature`` 0 to 2, ``top_p`` over 0 to 1, ``n`` 1, no float is ``NaN`` or infinite; a stop
string has at most :data:`MAX_STOP_CHARS` characters.

:func:`check_request_size` then refuses, before any image is read or any text tokenized, a
request whose ``max_tokens`` alone fills the context (400 ``context_length_exceeded``), whose text
is over :meth:`ServerConfig.prompt_char_limit` characters (413 ``prompt_too_large``) or that holds
more than :attr:`ServerConfig.max_images_per_request` images (413 ``too_many_images``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from giraffe_core.engine.server_config import ServerConfig
from giraffe_core.engine.server_errors import RequestError

__all__ = ["ChatCompletionRequest", "ImageURLPart", "TextPart", "check_request_size", "parse_request"]

#: OpenAI's limit on the number of stop strings.
MAX_STOP_STRINGS = 4
#: the longest stop string, characters (transformers' stop-string matcher grows with its length)
MAX_STOP_CHARS = 1000
#: the range of ``seed``: a signed or unsigned 64-bit integer, what ``torch.manual_seed`` accepts
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
#: the largest ``max_tokens`` the schema accepts (the context length bounds it further)
MAX_COMPLETION_TOKENS = 2**31 - 1


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: errors never echo a huge input back."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Part):
    """``{"type": "text", "text": ...}``."""

    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    """``image_url`` of an image part: a data URL, a local path or file:// URL, or an http(s) URL."""

    model_config = ConfigDict(extra="ignore")

    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] = "auto"


class ImageURLPart(_Part):
    """``{"type": "image_url", "image_url": {"url": ..., "detail": "auto" | "low" | "high"}}``."""

    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImageURLPart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    """One chat message; ``developer`` is treated as ``system``."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a final chunk with the usage."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``. Fields of OpenAI's API this server cannot honour
    (tools, n > 1, logprobs, non-text response formats, penalties, logit bias, audio) are refused
    with a 400 naming them; unknown fields are ignored. Numbers out of range (module doc) are 400s."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_COMPLETION_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_COMPLETION_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    modalities: list[str] | None = None
    audio: Any = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        stops = [value] if isinstance(value, str) else value
        if stops is not None:
            if len(stops) > MAX_STOP_STRINGS:
                raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
            if any(not s for s in stops):
                raise ValueError("stop strings must not be empty")
            if any(len(s) > MAX_STOP_CHARS for s in stops):
                raise ValueError(f"a stop string has at most {MAX_STOP_CHARS} characters")
        return stops or None

    @field_validator("n")
    @classmethod
    def _n(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError(f"this server returns one choice per request; n must be 1, got {_short(value, 24)}")
        return value

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value:
            raise ValueError("logprobs are not supported by this server")
        return value

    @field_validator("tools", "tool_choice", "functions", "function_call")
    @classmethod
    def _no_tools(cls, value: Any) -> Any:
        if value not in (None, [], "none"):
            raise ValueError("tool and function calling are not supported by this server")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError(f"only response_format type 'text' is supported, got {_short(value.get('type'))}")
        return value

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        if value:
            raise ValueError("frequency and presence penalties are not supported by this server (use 0)")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("logit_bias is not supported by this server")
        return value

    @field_validator("modalities")
    @classmethod
    def _text_out(cls, value: list[str] | None) -> list[str] | None:
        if value and set(value) - {"text"}:
            raise ValueError(f"this server replies with text only, got modalities {_short(value)}")
        return value

    @field_validator("audio")
    @classmethod
    def _no_audio(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("audio output is not supported by this server")
        return value

    @property
    def completion_limit(self) -> int | None:
        """``max_completion_tokens`` or, failing that, ``max_tokens``; ``None`` when neither is set."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def image_parts(self) -> list[tuple[str, ImageURLPart]]:
        """Every image part with its location (``messages[0].content[1]``), in order."""
        return [(f"messages[{i}].content[{j}]", part) for i, message in enumerate(self.messages)
                if not isinstance(message.content, str)
                for j, part in enumerate(message.content) if isinstance(part, ImageURLPart)]

    def text_chars(self) -> int:
        """Characters of text in all messages (string contents and text parts)."""
        return sum(len(m.content) if isinstance(m.content, str)
                   else sum(len(p.text) for p in m.content if isinstance(p, TextPart)) for m in self.messages)


# --------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; a 400 ``invalid_json`` for anything else."""
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except RecursionError as exc:
        raise RequestError("the request body is not valid JSON: it is nested too deeply",
                           error_code="invalid_json") from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, NaN/Infinity, integers over 4,300 digits
        raise RequestError(f"the request body is not valid JSON: {str(exc)[:200]}",
                           error_code="invalid_json") from exc
    if not isinstance(payload, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(payload).__name__}",
                           error_code="invalid_json")
    return payload


def parse_request(body: bytes) -> ChatCompletionRequest:
    """The request body as a :class:`ChatCompletionRequest`; a 400 naming the first bad field."""
    payload = _json(body)
    try:
        return ChatCompletionRequest.model_validate(payload)
    except ValidationError as exc:
        raise _validation_error(exc) from exc
    except RecursionError as exc:
        raise RequestError("the request is nested too deeply", error_code="invalid_value") from exc


def _param(loc: tuple[int | str, ...]) -> str | None:
    """pydantic's error location as ``messages[0].content[1].image_url.url``.

    The names pydantic gives union branches (``str``, ``list[tagged-union[...]]``) and the tag of
    a tagged-union member (the ``image_url`` right after ``content[1]``) are left out.
    """
    out, tag_next = "", False
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
            continue
        if item == "str" or item.startswith("list["):
            tag_next = item.startswith("list[tagged-union")
            continue
        if tag_next and out.endswith("]"):
            tag_next = False
            continue
        out += f".{item}" if out else item
    return out or None


def _validation_error(exc: ValidationError) -> RequestError:
    """The first schema error of a request, as a 400 naming the field and what is wrong with it."""
    errors = exc.errors(include_url=False, include_input=False)
    # content is a string or a list of parts: when the list branch got further, the string
    # branch's complaint ("Input should be a valid string") is noise.
    deeper = [e for e in errors if any(isinstance(x, str) and x.startswith("list[") for x in e["loc"])
              and len(e["loc"]) > 4]
    errors = deeper or errors
    first = errors[0]
    param = _param(tuple(first["loc"]))
    if first["type"] == "union_tag_invalid":
        tag = (first.get("ctx") or {}).get("tag")
        message = (f"{param}: unsupported content part type {_short(tag)}; this server accepts 'text' and "
                   f"'image_url' parts")
        return RequestError(message, param=param, error_code="unsupported_content_type")
    if first["type"] == "union_tag_not_found":
        return RequestError(f"{param}: a content part needs a 'type' ('text' or 'image_url')", param=param,
                            error_code="invalid_value")
    if first["type"] == "string_type" and first["loc"][-1] == "str":  # neither a string nor a list
        return RequestError(f"{param}: must be a string or a list of content parts", param=param,
                            error_code="invalid_value")
    msg = first["msg"].removeprefix("Value error, ")
    more = "" if len(errors) == 1 else f" ({len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return RequestError(f"{param or 'body'}: {msg}{more}", param=param, error_code="invalid_value")


# --------------------------------------------------------------------------------------------------
# size limits checked before any work
# --------------------------------------------------------------------------------------------------


def check_request_size(request: ChatCompletionRequest, context_length: int, config: ServerConfig) -> None:
    """Refuse at once what cannot fit: ``max_tokens`` >= the context, too much text, too many images.

    Raises:
        RequestError: 400 ``context_length_exceeded``; 413 ``prompt_too_large`` or ``too_many_images``.
    """
    asked = request.completion_limit
    if asked is not None and asked >= context_length:
        field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        raise RequestError(f"{field} is {asked}, but this model's maximum context length is {context_length} "
                           f"tokens, prompt included; ask for fewer tokens", param=field,
                           error_code="context_length_exceeded")
    chars, limit = request.text_chars(), config.prompt_char_limit(context_length)
    if chars > limit:
        raise RequestError(f"the messages hold {chars} characters of text, over this server's limit of {limit} "
                           f"characters (--max-prompt-chars; the model's context is {context_length} tokens)",
                           status=413, param="messages", error_code="prompt_too_large")
    images = len(request.image_parts())
    if images > config.max_images_per_request:
        raise RequestError(f"the messages hold {images} images, over this server's limit of "
                           f"{config.max_images_per_request} per request (--max-images)", status=413,
                           param="messages", error_code="too_many_images")
