"""The OpenAI-compatible backend: vLLM, sglang, ``giraffe serve`` or any chat-completions endpoint.

Uses the official ``openai`` client (``pip install 'giraffe[agent]'``), imported when a backend
is created. Errors from the endpoint (unreachable, timeouts, HTTP errors) become
:class:`BackendError` with the HTTP status and the server's message, after the client's bounded
retries (connection errors, 408, 409, 429 and 5xx are retried with backoff, ``max_retries`` times).
"""

from __future__ import annotations

import base64
import io
import logging
import os
from typing import Any

from PIL import Image

from giraffe_agent.backends.base import BackendRequest, Completion
from giraffe_core.errors import GiraffeError
from giraffe_core.extras import require
from giraffe_core.frames import load_image

__all__ = ["BackendError", "OpenAIBackend", "to_openai_messages"]

logger = logging.getLogger(__name__)


class BackendError(GiraffeError, RuntimeError):
    """A backend could not produce the step's output: an endpoint that is unreachable, timed out or
    answered with an HTTP error (``status`` and the server's message), a script that ran out, or a
    replay without a recorded output for the step.

    Attributes:
        status: the HTTP status when the endpoint answered with an error, else ``None``.
    """

    code = "backend-error"

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


def _png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_openai_messages(context: Any, cache: dict[tuple[str, tuple[int, int]], str] | None = None) -> list[dict]:
    """The rendered context as OpenAI chat messages, every frame resized to its planned size.

    Text parts stay text parts; image parts become ``image_url`` parts holding a PNG data URL of
    the frame resized (bicubic, as :func:`giraffe_core.frames.encode_images` does) to
    ``context.layout.plan.frames[i].size``; string contents (system and assistant turns) stay strings.

    Args:
        context: a :class:`~giraffe_core.memory.RenderedContext`.
        cache: data URLs by (image key, planned size), reused across calls; entries for images
            no longer in the context are dropped.
    """
    layout = context.layout
    plans = layout.plan.frames if layout.plan is not None else ()
    cache = {} if cache is None else cache
    used: set[tuple[str, tuple[int, int]]] = set()
    index = 0
    out: list[dict] = []
    for message in context.messages:
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        if message["role"] == "assistant":  # assistant turns are plain strings
            out.append({"role": "assistant", "content": "".join(p.get("text", "") for p in content)})
            continue
        parts: list[dict] = []
        for part in content:
            if part.get("type") == "image" or "image" in part:
                if index >= len(plans):
                    raise BackendError(f"the context has more image parts than its layout plans ({len(plans)})")
                plan = plans[index]
                payload = part["image"]
                source = layout.images[index] if index < len(layout.images) else payload
                if part.get("key"):
                    ident: str | None = f"key:{part['key']}"
                elif isinstance(payload, (str, os.PathLike)):
                    ident = f"path:{os.fspath(payload)}"
                else:  # an in-memory image: no stable identity, encoded every time
                    ident = None
                key = (ident, tuple(plan.size)) if ident is not None else None
                url = cache.get(key) if key is not None else None
                if url is None:
                    image = load_image(source)
                    if image.size != plan.size:
                        image = image.resize(plan.size, Image.Resampling.BICUBIC)
                    url = _png_data_url(image)
                    if key is not None:
                        cache[key] = url
                if key is not None:
                    used.add(key)
                parts.append({"type": "image_url", "image_url": {"url": url}})
                index += 1
            else:
                parts.append({"type": "text", "text": part.get("text", "")})
        out.append({"role": message["role"], "content": parts})
    if index != len(plans):
        raise BackendError(f"the context has {index} image parts but its layout plans {len(plans)} frames")
    for stale in set(cache) - used:
        del cache[stale]
    return out


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions endpoint.

    Frames are resized CLIENT-SIDE to the size the memory planned for them
    (``context.layout.plan.frames[i].size``, sides multiples of 28 px, area within the processor's
    pixel bounds) and sent as lossless PNG data URLs. Qwen2-VL's processor (in vLLM, sglang and
    ``giraffe serve`` alike) leaves such an image exactly as it is, so the server spends exactly the
    planned visual tokens per frame (full and low tiers included) and its ``prompt_tokens`` equal
    the memory's exact count. Sent at full resolution instead, every frame would be resized to the
    server's own cap (up to 1,280 tokens for Qwen2-VL), the tiers would be lost and the budget
    overrun. Caveats: a frame planned below the server's ``min_pixels`` (under 4 tokens for
    Qwen2-VL) is scaled up by the server, and a server configured with a smaller ``max_pixels``
    than a frame's planned area shrinks it. PNG data URLs are cached per frame and size, so a
    frame is encoded once while it stays in the context.

    Args:
        base_url: the endpoint's API root, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: the model id the server serves (``GET /v1/models``).
        api_key: the key (default: ``$OPENAI_API_KEY``, else ``"unused"`` for local servers).
        timeout_s: timeout of one HTTP request, seconds.
        max_retries: retries of a failed request (connection errors, 408, 409, 429, 5xx), with backoff.
        temperature: 0 is greedy decoding.
        seed: sampling seed passed to the server.
        extra_body: extra JSON fields for the request body (e.g. vLLM's ``{"top_k": 20}``).

    Raises:
        MissingExtraError: the ``openai`` package is not installed (``pip install 'giraffe[agent]'``).
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 120.0,
                 max_retries: int = 2, temperature: float = 0.0, seed: int | None = None,
                 extra_body: dict[str, Any] | None = None) -> None:
        openai = require("openai", extra="agent", purpose="call an OpenAI-compatible endpoint")
        self._openai = openai
        self.base_url = base_url
        self.model = model
        self.name = f"openai:{model}"
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.temperature = temperature
        self.seed = seed
        self.extra_body = dict(extra_body or {})
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY") or "unused"
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=max_retries)
        self._images: dict[tuple[str, tuple[int, int]], str] = {}

    def complete(self, request: BackendRequest) -> Completion:
        """Send the step's context and return the reply with the server's token counts.

        Raises:
            BackendError: the endpoint is unreachable, timed out, or answered with an HTTP error.
        """
        openai = self._openai
        messages = to_openai_messages(request.context, self._images)
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": request.max_new_tokens,
                                  "temperature": self.temperature}
        if self.seed is not None:
            kwargs["seed"] = self.seed
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        try:
            reply = self.client.chat.completions.create(**kwargs)
        except openai.APITimeoutError as exc:
            raise BackendError(f"{self.base_url}: no answer within {self.timeout_s} s "
                               f"(after {self.max_retries} retries)",
                               hint="raise timeout_s, or check that the server is not overloaded") from exc
        except openai.APIConnectionError as exc:
            raise BackendError(f"cannot reach the endpoint {self.base_url} after {self.max_retries} retries: "
                               f"{exc.__cause__ or exc}",
                               hint="is the server running, and is base_url its API root (ending in /v1)?") from exc
        except openai.APIStatusError as exc:
            raise BackendError(f"{self.base_url} answered HTTP {exc.status_code}: {_server_message(exc)}",
                               status=exc.status_code) from exc
        except openai.APIError as exc:
            raise BackendError(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc
        if not reply.choices:
            raise BackendError(f"{self.base_url} answered without a choice")
        text = reply.choices[0].message.content or ""
        usage = reply.usage
        prompt = completion = reused = None
        if usage is not None:
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
            details = getattr(usage, "prompt_tokens_details", None)
            reused = getattr(details, "cached_tokens", None) if details is not None else None
        if prompt is not None and prompt != request.context.token_count:
            logger.warning("step %d: the server counted %d prompt tokens, the memory %d (different processor "
                           "settings on the server?)", request.step, prompt, request.context.token_count)
        return Completion(text, prompt, completion, reused)


def _server_message(exc: Any) -> str:
    """The ``error.message`` of an OpenAI-shaped error body, else the client's message."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            code = error.get("code")
            return f"{error['message']}" + (f" ({code})" if code else "")
    return str(getattr(exc, "message", exc))
