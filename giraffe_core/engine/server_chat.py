"""The chat completion pipeline of ``giraffe serve``: admit, queue, decode, generate, stream.

A request goes through named steps, each refusing what it must before the next costs anything:

1. :meth:`Worker.take`: a slot among :attr:`ServerConfig.max_pending_requests` (503
   ``server_busy`` when none is free), taken BEFORE the body is read, so at most that many bodies
   are read, queued or run at once; the slot is held until the generation ends.
2. :meth:`ChatService.admit`: the body (413 over ``max_body_bytes``, counted while reading; 408
   after ``body_timeout_s``), the schema and number ranges (400), the model name (404), the text
   and image counts (413), then each image's bytes and header (pixels before decoding: 413).
3. The worker thread (one, first come first served: the model is not thread-safe) decodes the
   admitted images, prepares the inputs, checks the context (400 ``context_length_exceeded``) and
   generates; a streaming client that goes away cancels its generation at the next token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from giraffe_core.engine.engine import Engine, Generation, GenerationStream
from giraffe_core.engine.server_config import ServerConfig
from giraffe_core.engine.server_errors import RequestError
from giraffe_core.engine.server_images import AdmittedImage, admit_images, decode
from giraffe_core.engine.server_schema import ChatCompletionRequest, TextPart, check_request_size, parse_request
from giraffe_core.errors import GiraffeError

__all__ = ["ChatJob", "ChatService", "Slot", "Worker", "unknown_model"]

logger = logging.getLogger("giraffe_core.engine.server")


#: threads that run the blocking steps of admission (base64, header parsing, files, DNS)
ADMISSION_THREADS = 4


def start_threads(pool: ThreadPoolExecutor, count: int) -> None:
    """Make ``pool`` start ``count`` threads now (a thread pool otherwise starts them on demand)."""
    barrier = threading.Barrier(count + 1)
    for _ in range(count):
        pool.submit(barrier.wait)
    barrier.wait()


# --------------------------------------------------------------------------------------------------
# the engine worker: one thread, first come first served, a bounded number of slots
# --------------------------------------------------------------------------------------------------


class Slot:
    """One of the worker's pending places, released exactly once (by the job, or by the request if
    it never got as far as a job)."""

    def __init__(self, free: Callable[[], None]) -> None:
        self._free = free
        self._released = False
        self.handed_off = False

    def release(self) -> None:
        """Give the place back (idempotent)."""
        if not self._released:
            self._released = True
            self._free()


class Worker:
    """Runs every job that touches the model on one thread, in arrival order, with bounded slots."""

    def __init__(self, max_pending: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="giraffe-engine")
        self._max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker thread now (not lazily at the first request), so it lives as long as the app."""
        start_threads(self._executor, 1)

    def take(self) -> Slot:
        """A slot for one request; 503 ``server_busy`` when all are taken."""
        with self._lock:
            if self._pending >= self._max_pending:
                raise RequestError(f"the server is busy: {self._pending} requests are queued or running; retry later",
                                   status=503, type="server_error", error_code="server_busy")
            self._pending += 1
        return Slot(self._free)

    def _free(self) -> None:
        with self._lock:
            self._pending -= 1

    def submit(self, job: Callable[[], Any], slot: Slot) -> asyncio.Future:
        """Queue ``job``, which then owns ``slot`` and releases it when it ends; resolves with its result."""
        slot.handed_off = True

        def run() -> Any:
            try:
                return job()
            finally:
                slot.release()

        return asyncio.get_running_loop().run_in_executor(self._executor, run)

    def shutdown(self) -> None:
        """Drop queued jobs and let the running one finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------------------------------
# admission
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatJob:
    """What the worker needs of an admitted request (no body, no data URLs: those are dropped).

    Attributes:
        chat: Giraffe's chat format, images as :class:`AdmittedImage` (decoded by the worker).
        limit: ``max_completion_tokens``/``max_tokens``, or ``None``.
        sampling: keyword arguments of :meth:`Engine.generate` (``do_sample``, ``temperature``...).
        stream: whether to answer with server-sent events.
        include_usage: ``stream_options.include_usage``.
    """

    chat: list[dict[str, Any]]
    limit: int | None
    sampling: dict[str, Any]
    stream: bool
    include_usage: bool


def unknown_model(asked: str, name: str) -> RequestError:
    """The 404 ``model_not_found`` of a request for another model."""
    return RequestError(f"The model {asked[:100]!r} does not exist; this server serves {name!r} (see GET /v1/models)",
                        status=404, param="model", error_code="model_not_found")


async def read_body(chunks: AsyncIterator[bytes], declared: str | None, config: ServerConfig) -> bytes:
    """The request body: 413 as soon as it is known to be over the limit, 408 after ``body_timeout_s``."""
    limit = config.max_body_bytes

    def too_large(size: int | str) -> RequestError:
        return RequestError(f"the request body has {size} bytes, over this server's limit of {limit} bytes "
                            f"(--max-body-mb); send smaller or fewer images", status=413,
                            error_code="request_too_large")

    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large(int(declared))

    async def read() -> bytes:
        parts, size = [], 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise too_large(f"more than {limit}")
            parts.append(chunk)
        return b"".join(parts)

    try:
        return await asyncio.wait_for(read(), timeout=config.body_timeout_s)
    except asyncio.TimeoutError as exc:
        raise RequestError(f"the request body did not arrive within {config.body_timeout_s} s", status=408,
                           error_code="request_timeout") from exc


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


class ChatService:
    """The chat completions of one engine: admission on the event loop, generation on the worker."""

    def __init__(self, engine: Engine, name: str, config: ServerConfig) -> None:
        self.engine = engine
        self.name = name
        self.config = config
        self.worker = Worker(config.max_pending_requests)
        self.pool = ThreadPoolExecutor(ADMISSION_THREADS, thread_name_prefix="giraffe-admit")

    def start(self) -> None:
        """Start the worker and admission threads (the app's startup)."""
        self.worker.start()
        start_threads(self.pool, ADMISSION_THREADS)

    def shutdown(self) -> None:
        """Drop queued work; running work finishes and the threads end (the app's shutdown)."""
        self.worker.shutdown()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def admit(self, chunks: AsyncIterator[bytes], declared_length: str | None) -> ChatJob:
        """Read, parse and check a request, and admit its images (module doc, step 2)."""
        request = parse_request(await read_body(chunks, declared_length, self.config))
        if request.model != self.name:
            raise unknown_model(request.model, self.name)
        check_request_size(request, self.engine.context_length, self.config)
        images = await admit_images([(where, part.image_url.url) for where, part in request.image_parts()],
                                    self.config, self.pool)
        return ChatJob(self._chat(request, images), request.completion_limit, self._sampling(request),
                       request.stream, bool(request.stream_options and request.stream_options.include_usage))

    def _chat(self, request: ChatCompletionRequest, images: dict[str, AdmittedImage]) -> list[dict[str, Any]]:
        """OpenAI messages -> the chat format of :mod:`giraffe_core.frames` (images not decoded yet)."""
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
                    low = part.image_url.detail == "low"
                    budget = self.config.low_detail_tokens if low else self.config.high_detail_tokens
                    content.append({"type": "image", "image": images[f"messages[{i}].content[{j}]"],
                                    "max_tokens": budget})
            chat.append({"role": role, "content": content})
        return chat

    def _sampling(self, request: ChatCompletionRequest) -> dict[str, Any]:
        temperature = self.config.default_temperature if request.temperature is None else request.temperature
        if temperature == 0:
            return {"do_sample": False, "seed": request.seed, "stop": request.stop}
        return {"do_sample": True, "temperature": temperature,
                "top_p": 1.0 if request.top_p is None else request.top_p, "seed": request.seed, "stop": request.stop}

    # ---------------------------------------------------------------------------------------------
    # on the worker thread
    # ---------------------------------------------------------------------------------------------

    def _prepare(self, job: ChatJob) -> tuple[Any, int]:
        """Decode the images, prepare the inputs, and the reply budget (400 if it does not fit)."""
        chat = [message if isinstance(message["content"], str) else
                {**message, "content": [{**p, "image": decode(p["image"])} if p.get("type") == "image" else p
                                        for p in message["content"]]}
                for message in job.chat]
        inputs = self.engine.prepare(chat)
        context, prompt = self.engine.context_length, inputs.num_tokens
        if job.limit is not None:
            if prompt + job.limit > context:
                raise _context_error(prompt, job.limit, context)
            return inputs, job.limit
        if prompt >= context:
            raise _context_error(prompt, None, context)
        return inputs, min(self.config.default_max_tokens, context - prompt)

    def _generate(self, job: ChatJob) -> Generation:
        inputs, budget = self._prepare(job)
        return self.engine.generate(inputs, max_new_tokens=budget, **job.sampling)

    # ---------------------------------------------------------------------------------------------
    # answers
    # ---------------------------------------------------------------------------------------------

    async def complete(self, job: ChatJob, slot: Slot, rid: str) -> dict[str, Any]:
        """The ``chat.completion`` object of a non-streaming request."""
        started = time.perf_counter()
        generation = await self.worker.submit(lambda: self._generate(job), slot)
        logger.info("%s: %d prompt + %d completion tokens, %s, %.2f s", rid, generation.prompt_tokens,
                    generation.completion_tokens, generation.finish_reason, time.perf_counter() - started)
        return {
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": self.name,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": generation.text},
                         "logprobs": None, "finish_reason": generation.finish_reason}],
            "usage": _usage(generation),
        }

    async def stream(self, job: ChatJob, slot: Slot, rid: str) -> AsyncIterator[str]:
        """Server-sent events of a streaming request; what fails before the first token is raised here."""
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        gone = threading.Event()
        self.worker.submit(self._stream_job(job, rid, asyncio.get_running_loop(), events, gone), slot)
        try:
            kind, value = await events.get()
        except BaseException:
            gone.set()
            raise
        if kind == "error":
            gone.set()
            if isinstance(value, RequestError):
                raise value
            if isinstance(value, GiraffeError):
                raise RequestError(str(value), error_code=value.code) from value
            raise value
        return self._sse(job, rid, events, gone)

    def _stream_job(self, job: ChatJob, rid: str, loop: asyncio.AbstractEventLoop,
                    events: asyncio.Queue[tuple[str, Any]], gone: threading.Event) -> Callable[[], None]:
        def emit(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                gone.set()

        def run() -> None:
            try:
                inputs, budget = self._prepare(job)
                stream: GenerationStream = self.engine.stream(inputs, max_new_tokens=budget, **job.sampling)
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

        return run

    async def _sse(self, job: ChatJob, rid: str, events: asyncio.Queue[tuple[str, Any]],
                   gone: threading.Event) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data: dict[str, Any] = {
                "id": rid, "object": "chat.completion.chunk", "created": created, "model": self.name,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if job.include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                kind, value = await events.get()
                if kind == "delta":
                    yield chunk({"content": value})
                    continue
                if kind == "end":
                    yield chunk({}, value.finish_reason)
                    if job.include_usage:
                        usage = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": self.name,
                                 "system_fingerprint": None, "choices": [], "usage": _usage(value)}
                        yield f"data: {json.dumps(usage)}\n\n"
                    logger.info("%s (stream): %d prompt + %d completion tokens, %s", rid, value.prompt_tokens,
                                value.completion_tokens, value.finish_reason)
                else:  # the model failed after the response started: report it in the stream
                    error = RequestError(f"generation failed: {type(value).__name__}: {value}", status=500,
                                         type="server_error")
                    yield f"data: {json.dumps(error.body())}\n\n"
                break
            yield "data: [DONE]\n\n"
        finally:
            gone.set()  # a client that went away (or a finished stream) stops the decoding
