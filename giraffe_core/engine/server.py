"""An OpenAI-compatible HTTP server over an :class:`~giraffe_core.engine.Engine` (``giraffe serve``).

Endpoints (FastAPI on uvicorn; install with ``pip install 'giraffe[serve]'``):

* ``GET /v1/models`` and ``GET /v1/models/{id}``: the one model this server runs.
* ``POST /v1/chat/completions``: OpenAI chat completions, non-streaming and streaming
  (server-sent events of ``chat.completion.chunk`` objects, then ``data: [DONE]``; with
  ``stream_options: {"include_usage": true}`` a last chunk carries the usage).
* ``GET /health``: ``{"status": "ok"}`` while the server is up (open without the API key).

Content: a message's ``content`` is a string or a list of parts. ``{"type": "text"}`` parts are
text; ``{"type": "image_url", "image_url": {"url": ..., "detail": ...}}`` parts are images, where
``url`` is a ``data:image/...;base64,`` URL (PNG, JPEG, WebP, GIF, BMP; not animated), a path or
``file://`` URL inside the one folder :attr:`ServerConfig.local_image_dir` (refused when it is not
set, the default), or an ``http(s)://`` URL (refused unless :attr:`ServerConfig.allow_remote_urls`;
then fetched with every redirect checked against private addresses). Other part types
(``input_audio``, ``file``...) are refused. Details: :mod:`~giraffe_core.engine.server_sources`.

Resolution tiers: ``detail: "low"`` gives the image a budget of
:attr:`ServerConfig.low_detail_tokens` visual tokens (default 80, the paper's low-resolution tier
m / s = 240 / 3); ``"high"``, ``"auto"`` or no detail give :attr:`ServerConfig.high_detail_tokens`
(default: the processor's own cap, 1280 tokens for Qwen2-VL), planned as :meth:`Engine.prepare`
plans ``max_tokens`` parts.

Sampling: ``temperature`` 0 is greedy decoding; otherwise sampling with ``temperature`` (default
:attr:`ServerConfig.default_temperature`, 1) and ``top_p`` (default 1). ``seed`` makes sampling
reproducible. ``stop`` (up to 4 strings of up to 1,000 characters) ends the reply before the first
stop string. ``max_completion_tokens`` (or ``max_tokens``) bounds the reply; without either it
gets :attr:`ServerConfig.default_max_tokens` (512), capped by the room left in the context. Usage
counts are exact: ``prompt_tokens`` is :meth:`Engine.count_tokens` of the converted chat.

Who may talk to it (defaults safe for a server and its client on one machine; each
:class:`ServerConfig` field is also a flag of ``giraffe serve``; details in
:mod:`~giraffe_core.engine.server_security`):

* ``Host`` header: ``localhost``, ``127.0.0.1``, ``[::1]`` or the address the connection came in
  on, with the port it came in on; :attr:`~ServerConfig.allowed_hosts` (``--allowed-host``) adds
  names. Else 421 ``invalid_host`` (defeats DNS rebinding).
* API key: :attr:`~ServerConfig.api_key` (``--api-key`` or ``$GIRAFFE_API_KEY``), default none
  (then any ``Authorization`` header is accepted, e.g. the openai client's ``Bearer unused``).
  With a key, every route but ``/health`` needs ``Authorization: Bearer KEY``, else 401
  ``invalid_api_key``.
* POST bodies must be ``Content-Type: application/json``, else 415 ``unsupported_media_type``
  (defeats cross-site ``text/plain`` and form posts).
* CORS: no CORS header is ever sent unless :attr:`~ServerConfig.cors_allowed_origins`
  (``--cors-origin``) lists origins.
* Binding: :func:`serve` refuses a non-loopback ``host`` without an API key (``ConfigError``)
  unless :attr:`~ServerConfig.allow_unauthenticated_remote` (``--allow-unauthenticated-remote``).
* Local image paths: off unless :attr:`~ServerConfig.local_image_dir` (``--image-dir``) names the
  one folder they may come from; every refusal is the same 400 ``local_image_refused``.
* Remote image URLs: off unless :attr:`~ServerConfig.allow_remote_urls`; then no hop may reach a
  loopback, private, link-local, multicast, reserved or unspecified address (400
  ``remote_address_refused``) except networks in :attr:`~ServerConfig.remote_allowed_networks`;
  :attr:`~ServerConfig.allow_private_addresses` lifts this check and is UNSAFE (tests only).
* The OpenAPI pages (``/docs``, ``/redoc``, ``/openapi.json``) are not served.

Limits, each checked before the work it protects (:class:`ServerConfig` field, default, answer):

* headers: 64 KiB in all (:data:`~giraffe_core.engine.server_security.MAX_HEADER_BYTES`), 431
  ``headers_too_large``;
* :attr:`~ServerConfig.max_pending_requests`: 16 requests being read, queued or run (``--max-pending``),
  503 ``server_busy``, answered before the body is read;
* :attr:`~ServerConfig.max_body_bytes`: 20 MiB, counted while reading whatever ``Content-Length``
  says (``--max-body-mb``), 413 ``request_too_large``;
* :attr:`~ServerConfig.body_timeout_s`: 30 s to receive the body, 408 ``request_timeout``;
* numbers: ``seed`` a 64-bit integer, ``max_tokens``/``max_completion_tokens`` 1 to 2**31 - 1 and
  below the context length, ``temperature`` 0 to 2, ``top_p`` over 0 to 1, ``n`` 1, no NaN or
  infinity, no integer of over 4,300 digits: 400 ``invalid_value``, ``invalid_json`` or
  ``context_length_exceeded``;
* :attr:`~ServerConfig.max_prompt_chars`: 8 characters of text per context token (32,768 for a
  4,096-token model; ``--max-prompt-chars``), 413 ``prompt_too_large``, before tokenizing;
* :attr:`~ServerConfig.max_images_per_request`: 1,024 (``--max-images``), 413 ``too_many_images``;
* :attr:`~ServerConfig.max_image_bytes`: 20 MiB per image file (data URL, local or remote), 413
  ``image_too_large``;
* :attr:`~ServerConfig.max_image_pixels`: 16,777,216 pixels (4096 x 4096) per image, read from the
  header before decoding, and never more than Pillow's ``Image.MAX_IMAGE_PIXELS``
  (``--max-image-pixels``), 413 ``image_too_large``;
* :attr:`~ServerConfig.max_request_pixels`: 67,108,864 pixels for all images of a request
  (``--max-request-pixels``), 413 ``request_too_large``;
* :attr:`~ServerConfig.remote_timeout_s`: 10 s per remote image, redirects included, and
  :attr:`~ServerConfig.remote_max_redirects`: 3, both 400 ``image_fetch_failed``;
* the model's ``context_length`` for the prompt plus the reply, 400 ``context_length_exceeded``.

Memory: a request holds its body while it is read and parsed, then only its image bytes and text
while it waits (so at most about ``max_pending_requests`` x ``max_body_bytes`` for the queue);
images are decoded only on the worker, one request at a time, at about 5 bytes per pixel while
converting (at most ~320 MiB at the default ``max_request_pixels``). A small file of many pixels
(a decompression bomb) is refused from its header in milliseconds.

Errors are OpenAI-shaped JSON, ``{"error": {"message", "type", "param", "code"}}``: the 4xx above,
400 for malformed JSON, schemas, base64 or images and unsupported content, 404 for an unknown
model (``model_not_found``) or route, 405 for a wrong method, 500 for a failure inside the model
(logged with its traceback). None of them stops the server. Two answers are not this server's
JSON: a request that does not parse as HTTP (e.g. a header section of about a megabyte) is cut
off by uvicorn itself, and a CORS preflight from an origin that is not listed gets starlette's
plain-text 400.

Queuing: the model is not thread-safe, so every request that touches it (decoding images,
preparing inputs and generating) runs on ONE worker thread, first come, first served; the event
loop stays free, so ``/v1/models`` and request admission answer while a generation runs. A
streaming client that goes away cancels its generation at the next token.

FastAPI, uvicorn and httpx are imported only when an app is created or served, so importing
:mod:`giraffe_core` never needs them.
"""

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from giraffe_core.engine.engine import Engine
from giraffe_core.engine.server_chat import ChatService, unknown_model
from giraffe_core.engine.server_config import ServerConfig
from giraffe_core.engine.server_errors import RequestError
from giraffe_core.engine.server_schema import ChatCompletionRequest
from giraffe_core.engine.server_security import AccessGuard, HostGuard, check_bind
from giraffe_core.errors import GiraffeError
from giraffe_core.extras import require

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ChatCompletionRequest", "RequestError", "ServerConfig", "create_app", "serve"]

logger = logging.getLogger(__name__)


def _add_middleware(app: Any, config: ServerConfig) -> None:
    """The security layers, outermost last: Host check, then CORS (only if asked), then key and JSON."""
    app.add_middleware(AccessGuard, api_key=config.api_key)  # still a SecretStr: no repr shows it
    if config.cors_allowed_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_allowed_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
                           max_age=600)
    app.add_middleware(HostGuard, allowed_hosts=config.allowed_hosts)


def _add_error_handlers(app: Any) -> None:
    """Every error FastAPI or a route raises, as an OpenAI-shaped JSON error."""
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request: Any, exc: HTTPException) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        error = RequestError(f"{request.method} {request.url.path[:200]}: {exc.detail}", status=exc.status_code,
                             error_code=code)
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(Exception)  # a safety net; the chat endpoint answers its own failures
    async def internal_error(request: Any, exc: Exception) -> Any:
        logger.exception("unhandled error in %s %s", request.method, request.url.path[:200])
        error = RequestError(f"internal server error: {type(exc).__name__}", status=500, type="server_error")
        return JSONResponse(error.body(), status_code=500)


def create_app(engine: Engine, *, model_name: str | None = None, config: ServerConfig | None = None) -> "FastAPI":
    """A FastAPI app serving ``engine`` with the OpenAI chat completions API (see the module doc).

    Args:
        engine: the loaded model (:func:`giraffe_core.load`); only this app's worker thread uses it.
        model_name: the id clients pass as ``model`` (default: ``engine.name``).
        config: limits, image sources, security and defaults (default: :class:`ServerConfig()`).

    Raises:
        MissingExtraError: FastAPI is not installed (``pip install 'giraffe[serve]'``).
    """
    fastapi = require("fastapi", extra="serve", purpose="serve the OpenAI-compatible API")
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.requests import ClientDisconnect

    config = config or ServerConfig()
    service = ChatService(engine, model_name or engine.name, config)
    name, created = service.name, int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        logger.info("serving %r (context %d tokens) with %s", name, engine.context_length, config)
        service.start()
        yield
        service.shutdown()

    app = fastapi.FastAPI(title="Giraffe", description="OpenAI-compatible API over a Giraffe engine",
                          version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    _add_middleware(app, config)
    _add_error_handlers(app)

    def error_response(exc: RequestError) -> Any:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)

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
        return model_card() if model_id == name else error_response(unknown_model(model_id, name))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: fastapi.Request) -> Any:
        try:
            slot = service.worker.take()
        except RequestError as exc:
            return error_response(exc)
        try:
            job = await service.admit(request.stream(), request.headers.get("content-length"))
            rid = f"chatcmpl-{uuid.uuid4().hex}"
            if job.stream:
                events = await service.stream(job, slot, rid)
                return StreamingResponse(events, media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            return await service.complete(job, slot, rid)
        except RequestError as exc:
            logger.info("chat completion refused (%d %s): %s", exc.status, exc.error_code, exc.message[:300])
            return error_response(exc)
        except ClientDisconnect:  # the client went away while sending its body: nobody to answer
            logger.info("chat completion abandoned: the client disconnected while sending its request")
            return error_response(RequestError("the client disconnected", error_code="client_disconnected"))
        except GiraffeError as exc:  # InputError, ConfigError from preparing the chat
            logger.info("chat completion refused (400): %s", str(exc)[:300])
            return error_response(RequestError(str(exc), error_code=exc.code))
        except Exception as exc:  # a failure inside the model: answered here, so the connection survives
            logger.exception("chat completion failed")
            return error_response(RequestError(f"internal server error: {type(exc).__name__}: {exc}", status=500,
                                               type="server_error"))
        finally:
            if not slot.handed_off:  # refused before reaching the worker: the slot is free again
                slot.release()

    return app


def serve(engine: Engine, *, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
          config: ServerConfig | None = None, log_level: str = "info") -> None:
    """Run :func:`create_app` with uvicorn until interrupted (what ``giraffe serve`` does).

    Args:
        engine: the loaded model.
        host: interface to bind; the default, loopback, is reachable only from this machine. Any
            other address needs ``config.api_key`` or ``config.allow_unauthenticated_remote``.
        port: TCP port.
        model_name: the id clients pass as ``model`` (default: ``engine.name``).
        config: limits, image sources, security and defaults.
        log_level: uvicorn's log level ("debug", "info", "warning"...).

    Raises:
        ConfigError: a non-loopback ``host`` without an API key (:func:`check_bind`).
        MissingExtraError: FastAPI or uvicorn is not installed (``pip install 'giraffe[serve]'``).
    """
    config = config or ServerConfig()
    check_bind(host, config)
    uvicorn = require("uvicorn", extra="serve", purpose="run the OpenAI-compatible server")
    app = create_app(engine, model_name=model_name, config=config)
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
