"""An OpenAI-compatible HTTP server over an :class:`~giraffe_core.engine.Engine` (``giraffe serve``).

Endpoints (FastAPI on uvicorn; install with ``pip install 'giraffe[serve]'``):

* ``GET /v1/models`` and ``GET /v1/models/{id}``: the one model this server runs.
* ``POST /v1/chat/completions``: OpenAI chat completions, non-streaming and streaming
  (server-sent events of ``chat.completion.chunk`` objects, then ``data: [DONE]``; with
  ``stream_options: {"include_usage": true}`` a last chunk carries the usage).
* ``GET /health``: ``{"status": "ok"}`` while the server is up.

Content: a message's ``content`` is a string or a list of parts. ``{"type": "text"}`` parts are
text; ``{"type": "image_url", "image_url": {"url": ..., "detail": ...}}`` parts are images, where
``url`` is a ``data:image/...;base64,`` URL (PNG, JPEG, WebP, GIF, BMP: whatever Pillow reads), a
local path or ``file://`` URL (unless :attr:`ServerConfig.allow_local_paths` is off), or an
``http(s)://`` URL (refused unless :attr:`ServerConfig.allow_remote_urls` is on; then fetched with
httpx under a timeout and a size cap). Other part types (``input_audio``, ``file``...) are refused.

Resolution tiers: ``detail: "low"`` gives the image a budget of
:attr:`ServerConfig.low_detail_tokens` visual tokens (default 80, the paper's low-resolution tier
m / s = 240 / 3; about 250 x 250 px at Qwen2-VL's 28 px per token); ``"high"``, ``"auto"`` or no
detail give :attr:`ServerConfig.high_detail_tokens` (default: the processor's own cap, 1280 tokens
for Qwen2-VL). Images are planned exactly as :meth:`Engine.prepare` plans ``max_tokens`` parts.

Sampling: ``temperature`` 0 is greedy decoding; otherwise sampling with ``temperature`` and
``top_p`` (defaults :attr:`ServerConfig.default_temperature` and 1). ``seed`` makes sampling
reproducible. ``stop`` (up to 4 strings) ends the reply before the first stop string.
``max_completion_tokens`` (or the older ``max_tokens``) bounds the reply; without either, the reply
gets :attr:`ServerConfig.default_max_tokens`, capped by the room left in the context. Usage counts
are exact: ``prompt_tokens`` is :meth:`Engine.count_tokens` of the converted chat.

Errors are OpenAI-shaped JSON, ``{"error": {"message", "type", "param", "code"}}``: 400 for a
malformed or invalid request (JSON, schema, base64, unreadable image, unsupported content, a
context over the model's ``context_length``, code ``context_length_exceeded``), 404 for an unknown
model (``model_not_found``) or route, 413 for a body over :attr:`ServerConfig.max_body_bytes`
(enforced while the body is read, whatever ``Content-Length`` says), 503 when more than
:attr:`ServerConfig.max_pending_requests` requests wait, 500 for a failure inside the model (logged
with its traceback). None of them stops the server.

Queuing: the model is not thread-safe, so every request that touches it (preparing inputs and
generating) runs on ONE worker thread, first come, first served; the event loop stays free, so
``/v1/models`` and request parsing answer while a generation runs. A streaming client that goes
away cancels its generation at the next token.

FastAPI, uvicorn and httpx are imported only when an app is created or served, so importing
:mod:`giraffe_core` never needs them.
"""

import asyncio
import base64
import binascii
import contextlib
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote, urlparse

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from giraffe_core.engine.engine import Engine, Generation, GenerationStream
from giraffe_core.errors import GiraffeError
from giraffe_core.extras import require

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ChatCompletionRequest", "RequestError", "ServerConfig", "create_app", "serve"]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
#: OpenAI's limit on the number of stop strings.
MAX_STOP_STRINGS = 4


class ServerConfig(BaseModel):
    """Settings of :func:`create_app` (limits, what image sources are allowed, defaults, queue)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(20 * MiB, ge=1, description="largest request body, bytes (413 above it)")
    allow_remote_urls: bool = Field(False, description="fetch http(s) image URLs (off: refused with a 400)")
    allow_local_paths: bool = Field(True, description="read images from local paths and file:// URLs")
    remote_timeout_s: float = Field(10.0, gt=0, description="timeout of one remote image fetch, seconds")
    max_image_bytes: int = Field(20 * MiB, ge=1, description="largest remote or local image file, bytes")
    default_max_tokens: int = Field(512, ge=1, description="reply budget without max_tokens, tokens")
    default_temperature: float = Field(1.0, ge=0, le=2, description="temperature without one (0: greedy)")
    low_detail_tokens: int = Field(80, ge=1, description='visual-token budget of detail "low" images')
    high_detail_tokens: int | None = Field(
        None, ge=1, description='visual-token budget of "high"/"auto" images (None: the processor cap)')
    max_pending_requests: int = Field(64, ge=1, description="requests queued or running before 503s")


class RequestError(GiraffeError, ValueError):
    """A request the server refuses, with its HTTP status and OpenAI error fields.

    Attributes:
        status: HTTP status code (400, 404, 413, 503...).
        type: OpenAI error type (``invalid_request_error``, ``server_error``...).
        param: the offending request field (``messages[0].content[1]``), or ``None``.
        error_code: OpenAI error code (``context_length_exceeded``, ``model_not_found``...), or ``None``.
    """

    code = "request-error"

    def __init__(self, message: str, *, status: int = 400, type: str = "invalid_request_error",
                 param: str | None = None, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.param = param
        self.error_code = error_code

    def body(self) -> dict[str, Any]:
        """The OpenAI error object, ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.error_code}}


# --------------------------------------------------------------------------------------------------
# request schema (the subset of OpenAI's chat completion request this server honours)
# --------------------------------------------------------------------------------------------------


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
    with a 400 naming them; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
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
        return stops or None

    @field_validator("n")
    @classmethod
    def _n(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError(f"this server returns one choice per request; n must be 1, got {value}")
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
            raise ValueError(f"only response_format type 'text' is supported, got {value.get('type')!r}")
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
            raise ValueError(f"this server replies with text only, got modalities {value}")
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
    errors = exc.errors(include_url=False)
    # content is a string or a list of parts: when the list branch got further, the string
    # branch's complaint ("Input should be a valid string") is noise.
    deeper = [e for e in errors if any(isinstance(x, str) and x.startswith("list[") for x in e["loc"])
              and len(e["loc"]) > 4]
    errors = deeper or errors
    first = errors[0]
    param = _param(tuple(first["loc"]))
    if first["type"] == "union_tag_invalid":
        tag = (first.get("ctx") or {}).get("tag")
        message = (f"{param}: unsupported content part type {tag!r}; this server accepts 'text' and "
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
# images: data URLs, local paths, remote URLs
# --------------------------------------------------------------------------------------------------


def _open_image(data: bytes, where: str) -> Image.Image:
    """Decode image bytes fully, as RGB; a 400 ``invalid_image`` when Pillow cannot."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise RequestError(f"{where}: cannot read the image ({type(exc).__name__}: {exc})", param=where,
                           error_code="invalid_image") from exc


def _decode_data_url(url: str, where: str) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URL."""
    header, comma, payload = url[len("data:"):].partition(",")
    fields = header.split(";")
    if not comma or not fields[0].startswith("image/") or "base64" not in fields[1:]:
        raise RequestError(f"{where}: a data URL must look like 'data:image/png;base64,<data>', got "
                           f"{url[:40]!r}", param=where, error_code="invalid_image_url")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)  # line breaks are tolerated
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where}: the data URL is not valid base64 ({exc})", param=where,
                           error_code="invalid_base64") from exc


def _read_local(url: str, config: ServerConfig, where: str) -> bytes:
    """The bytes of a local image given as a path or ``file://`` URL."""
    if not config.allow_local_paths:
        raise RequestError(f"{where}: local image paths are disabled on this server; send the image as a "
                           f"data: URL", param=where, error_code="local_paths_disabled")
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise RequestError(f"{where}: file:// URLs must name a local file, got host {parsed.netloc!r}",
                               param=where, error_code="invalid_image_url")
        path = Path(unquote(parsed.path))
    else:
        path = Path(url).expanduser()
    if not path.is_file():
        raise RequestError(f"{where}: no image file at {str(path)!r} on the server", param=where,
                           error_code="invalid_image_url")
    size = path.stat().st_size
    if size > config.max_image_bytes:
        raise RequestError(f"{where}: {path} has {size} bytes, over the limit of {config.max_image_bytes}",
                           param=where, error_code="image_too_large")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RequestError(f"{where}: cannot read {str(path)!r}: {exc}", param=where,
                           error_code="invalid_image_url") from exc


async def _fetch_remote(url: str, config: ServerConfig, where: str) -> bytes:
    """GET an http(s) image URL with a timeout, reading at most ``config.max_image_bytes``."""
    if not config.allow_remote_urls:
        raise RequestError(
            f"{where}: remote image URLs are disabled on this server; send the image as a data: URL "
            f"(or a local path), or start the server with --allow-remote-urls "
            f"(ServerConfig(allow_remote_urls=True))", param=where, error_code="remote_urls_disabled")
    httpx = require("httpx", extra="serve", purpose="fetch remote image URLs")
    try:
        async with httpx.AsyncClient(timeout=config.remote_timeout_s, follow_redirects=True) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise RequestError(f"{where}: fetching {url[:200]} returned HTTP {response.status_code}",
                                   param=where, error_code="image_fetch_failed")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > config.max_image_bytes:
                    raise RequestError(f"{where}: the image at {url[:200]} is over the limit of "
                                       f"{config.max_image_bytes} bytes", param=where, error_code="image_too_large")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise RequestError(f"{where}: cannot fetch {url[:200]}: {type(exc).__name__}: {exc}", param=where,
                           error_code="image_fetch_failed") from exc


async def _image_part(part: ImageURLPart, config: ServerConfig, where: str) -> dict[str, Any]:
    """An ``image_url`` part -> Giraffe's ``{"type": "image", "image": PIL, "max_tokens": budget}``."""
    url = part.image_url.url
    if url.startswith("data:"):
        data = _decode_data_url(url, where)
    elif url.startswith(("http://", "https://")):
        data = await _fetch_remote(url, config, where)
    elif url.startswith("file://") or "://" not in url:
        data = await asyncio.to_thread(_read_local, url, config, where)
    else:
        raise RequestError(f"{where}: unsupported image URL scheme {url.split('://')[0]!r}; use a data: URL, "
                           f"a local path or file:// URL, or http(s)", param=where, error_code="invalid_image_url")
    image = await asyncio.to_thread(_open_image, data, where)
    budget = config.low_detail_tokens if part.image_url.detail == "low" else config.high_detail_tokens
    return {"type": "image", "image": image, "max_tokens": budget}


async def _to_chat(request: ChatCompletionRequest, config: ServerConfig) -> list[dict[str, Any]]:
    """OpenAI messages -> the chat format of :mod:`giraffe_core.frames` (images decoded)."""
    chat: list[dict[str, Any]] = []
    for i, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        if isinstance(message.content, str):
            chat.append({"role": role, "content": message.content})
            continue
        content: list[dict[str, Any]] = []
        for j, part in enumerate(message.content):
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            else:
                content.append(await _image_part(part, config, f"messages[{i}].content[{j}]"))
        chat.append({"role": role, "content": content})
    return chat


# --------------------------------------------------------------------------------------------------
# the engine worker: one thread, first come first served
# --------------------------------------------------------------------------------------------------


class _Worker:
    """Runs every job that touches the model on one thread, in arrival order, with a bounded queue."""

    def __init__(self, max_pending: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="giraffe-engine")
        self._max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Any]) -> asyncio.Future:
        """Queue ``job``; the returned future resolves with its result. 503 when the queue is full."""
        with self._lock:
            if self._pending >= self._max_pending:
                raise RequestError(f"the server is busy: {self._pending} requests are queued or running; retry later",
                                   status=503, type="server_error", error_code="server_busy")
            self._pending += 1

        def run() -> Any:
            try:
                return job()
            finally:
                with self._lock:
                    self._pending -= 1

        return asyncio.get_running_loop().run_in_executor(self._executor, run)

    def shutdown(self) -> None:
        """Drop queued jobs and let the running one finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------------------


def _context_error(prompt: int, completion: int | None, context: int) -> RequestError:
    asked = f"{prompt} in the messages" + (f", {completion} in the completion" if completion else "")
    total = prompt + (completion or 0)
    return RequestError(
        f"This model's maximum context length is {context} tokens. However, you requested {total} tokens "
        f"({asked}). Please reduce the length of the messages or completion.",
        param="messages", error_code="context_length_exceeded")


def _usage(generation: Generation) -> dict[str, int]:
    return {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens}


async def _read_body(receive: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The request body, refused with a 413 as soon as it is known to be over ``limit`` bytes."""
    def too_large(size: int | str) -> RequestError:
        return RequestError(f"the request body has {size} bytes, over this server's limit of {limit} bytes "
                            f"(--max-body-mb); send smaller or fewer images", status=413,
                            error_code="request_too_large")

    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large(int(declared))
    chunks, size = [], 0
    async for chunk in receive:
        size += len(chunk)
        if size > limit:
            raise too_large(f"more than {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(engine: Engine, *, model_name: str | None = None, config: ServerConfig | None = None) -> "FastAPI":
    """A FastAPI app serving ``engine`` with the OpenAI chat completions API (see the module doc).

    Args:
        engine: the loaded model (:func:`giraffe_core.load`); only this app's worker thread uses it.
        model_name: the id clients pass as ``model`` (default: ``engine.name``).
        config: limits and defaults (default: :class:`ServerConfig()`).

    Raises:
        MissingExtraError: FastAPI is not installed (``pip install 'giraffe[serve]'``).
    """
    fastapi = require("fastapi", extra="serve", purpose="serve the OpenAI-compatible API")
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    config = config or ServerConfig()
    name = model_name or engine.name
    created = int(time.time())
    worker = _Worker(config.max_pending_requests)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        logger.info("serving %r (context %d tokens) with %s", name, engine.context_length, config)
        yield
        worker.shutdown()

    app = fastapi.FastAPI(title="Giraffe", description="OpenAI-compatible API over a Giraffe engine",
                          version="1", lifespan=lifespan)

    def error_response(exc: RequestError) -> Any:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: fastapi.Request, exc: HTTPException) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(RequestError(f"{request.method} {request.url.path}: {exc.detail}",
                                           status=exc.status_code, error_code=code))

    @app.exception_handler(Exception)  # a safety net; the chat endpoint answers its own failures
    async def internal_error(request: fastapi.Request, exc: Exception) -> Any:
        logger.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(RequestError(f"internal server error: {type(exc).__name__}: {exc}", status=500,
                                           type="server_error"))

    def model_card() -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "giraffe",
                "context_length": engine.context_length}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Any:
        if model_id != name:
            return error_response(_unknown_model(model_id, name))
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: fastapi.Request) -> Any:
        started = time.perf_counter()
        try:
            body = await _read_body(request.stream(), request.headers.get("content-length"), config.max_body_bytes)
            try:
                payload = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise RequestError(f"the request body is not valid JSON: {exc}", error_code="invalid_json") from exc
            if not isinstance(payload, dict):
                raise RequestError(f"the request body must be a JSON object, got {type(payload).__name__}",
                                   error_code="invalid_json")
            try:
                req = ChatCompletionRequest.model_validate(payload)
            except ValidationError as exc:
                raise _validation_error(exc) from exc
            if req.model != name:
                raise _unknown_model(req.model, name)
            chat = await _to_chat(req, config)
            rid = f"chatcmpl-{uuid.uuid4().hex}"
            if req.stream:
                return await _stream(req, chat, rid)
            generation = await worker.submit(lambda: _generate(req, chat))
        except RequestError as exc:
            logger.info("chat completion refused (%d %s): %s", exc.status, exc.error_code, exc.message)
            return error_response(exc)
        except GiraffeError as exc:  # InputError, ConfigError from preparing the chat
            logger.info("chat completion refused (400): %s", exc)
            return error_response(RequestError(str(exc), error_code=exc.code))
        except Exception as exc:  # a failure inside the model: answered here, so the connection survives
            logger.exception("chat completion failed")
            return error_response(RequestError(f"internal server error: {type(exc).__name__}: {exc}", status=500,
                                               type="server_error"))
        logger.info("%s: %d prompt + %d completion tokens, %s, %.2f s", rid, generation.prompt_tokens,
                    generation.completion_tokens, generation.finish_reason, time.perf_counter() - started)
        return {
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": name,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": generation.text},
                         "logprobs": None, "finish_reason": generation.finish_reason}],
            "usage": _usage(generation),
        }

    def _budget(req: ChatCompletionRequest, chat: list[dict[str, Any]]) -> tuple[Any, int]:
        """Prepared inputs and the reply budget; a 400 ``context_length_exceeded`` when it does not fit."""
        inputs = engine.prepare(chat)
        context, prompt, asked = engine.context_length, inputs.num_tokens, req.completion_limit
        if asked is not None:
            if prompt + asked > context:
                raise _context_error(prompt, asked, context)
            return inputs, asked
        if prompt >= context:
            raise _context_error(prompt, None, context)
        return inputs, min(config.default_max_tokens, context - prompt)

    def _sampling(req: ChatCompletionRequest) -> dict[str, Any]:
        temperature = config.default_temperature if req.temperature is None else req.temperature
        if temperature == 0:
            return {"do_sample": False, "seed": req.seed, "stop": req.stop}
        return {"do_sample": True, "temperature": temperature, "top_p": 1.0 if req.top_p is None else req.top_p,
                "seed": req.seed, "stop": req.stop}

    def _generate(req: ChatCompletionRequest, chat: list[dict[str, Any]]) -> Generation:
        inputs, budget = _budget(req, chat)
        return engine.generate(inputs, max_new_tokens=budget, **_sampling(req))

    async def _stream(req: ChatCompletionRequest, chat: list[dict[str, Any]], rid: str) -> Any:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        gone = threading.Event()

        def emit(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                gone.set()

        def job() -> None:
            try:
                inputs, budget = _budget(req, chat)
                stream: GenerationStream = engine.stream(inputs, max_new_tokens=budget, **_sampling(req))
            except Exception as exc:
                emit("error", exc)
                return
            emit("start", stream.prompt_tokens)
            try:
                for delta in stream:  # read to the end even when cancelled: the thread must finish
                    if gone.is_set():
                        stream.cancel()
                    else:
                        emit("delta", delta)
                result = stream.result
                if result is None:  # cannot happen once the stream is exhausted; guards the type
                    raise RuntimeError("the generation stream ended without a result")
                if gone.is_set():
                    logger.info("%s: the client went away; generation cancelled after %d tokens", rid,
                                result.completion_tokens)
                else:
                    emit("end", result)
            except Exception as exc:
                logger.exception("generation failed in %s", rid)
                emit("error", exc)

        worker.submit(job)
        try:
            kind, value = await events.get()
        except BaseException:
            gone.set()
            raise
        if kind == "error":
            if isinstance(value, RequestError):
                raise value
            if isinstance(value, GiraffeError):
                raise RequestError(str(value), error_code=value.code) from value
            raise value
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        created_at = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data: dict[str, Any] = {
                "id": rid, "object": "chat.completion.chunk", "created": created_at, "model": name,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data)}\n\n"

        async def sse() -> AsyncIterator[str]:
            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:
                    kind, value = await events.get()
                    if kind == "delta":
                        yield chunk({"content": value})
                    elif kind == "end":
                        yield chunk({}, value.finish_reason)
                        if include_usage:
                            usage = {"id": rid, "object": "chat.completion.chunk", "created": created_at,
                                     "model": name, "system_fingerprint": None, "choices": [],
                                     "usage": _usage(value)}
                            yield f"data: {json.dumps(usage)}\n\n"
                        logger.info("%s (stream): %d prompt + %d completion tokens, %s", rid,
                                    value.prompt_tokens, value.completion_tokens, value.finish_reason)
                        break
                    else:  # the model failed after the response started: report it in the stream
                        error = RequestError(f"generation failed: {type(value).__name__}: {value}", status=500,
                                             type="server_error")
                        yield f"data: {json.dumps(error.body())}\n\n"
                        break
                yield "data: [DONE]\n\n"
            finally:
                gone.set()  # a client that went away (or a finished stream) stops the decoding

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


def _unknown_model(asked: str, name: str) -> RequestError:
    return RequestError(f"The model {asked!r} does not exist; this server serves {name!r} (see GET /v1/models)",
                        status=404, param="model", error_code="model_not_found")


def serve(engine: Engine, *, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
          config: ServerConfig | None = None, log_level: str = "info") -> None:
    """Run :func:`create_app` with uvicorn until interrupted (what ``giraffe serve`` does).

    Args:
        engine: the loaded model.
        host: interface to bind; the default, loopback, is reachable only from this machine.
        port: TCP port.
        model_name: the id clients pass as ``model`` (default: ``engine.name``).
        config: limits and defaults.
        log_level: uvicorn's log level ("debug", "info", "warning"...).

    Raises:
        MissingExtraError: FastAPI or uvicorn is not installed (``pip install 'giraffe[serve]'``).
    """
    uvicorn = require("uvicorn", extra="serve", purpose="run the OpenAI-compatible server")
    app = create_app(engine, model_name=model_name, config=config)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
