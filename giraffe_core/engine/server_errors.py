"""The error ``giraffe serve`` answers with: :class:`RequestError`, an OpenAI-shaped JSON error.

Every refusal of the server (schema, limits, images, security checks) is a ``RequestError`` with an
HTTP status and the fields of OpenAI's error object, ``{"error": {"message", "type", "param",
"code"}}``. :func:`send_error` writes one to a raw ASGI ``send`` (for the security middleware,
which answers before FastAPI sees the request).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from giraffe_core.errors import GiraffeError

__all__ = ["RequestError", "send_error"]


class RequestError(GiraffeError, ValueError):
    """A request the server refuses, with its HTTP status and OpenAI error fields.

    Attributes:
        status: HTTP status code (400, 401, 404, 413, 415, 421, 503...).
        type: OpenAI error type (``invalid_request_error``, ``server_error``...).
        param: the offending request field (``messages[0].content[1]``), or ``None``.
        error_code: OpenAI error code (``context_length_exceeded``, ``model_not_found``...), or ``None``.
        headers: extra response headers (``WWW-Authenticate`` of a 401).
    """

    code = "request-error"

    def __init__(self, message: str, *, status: int = 400, type: str = "invalid_request_error",
                 param: str | None = None, error_code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.param = param
        self.error_code = error_code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The OpenAI error object, ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.error_code}}


async def send_error(send: Callable[[dict[str, Any]], Awaitable[None]], error: RequestError) -> None:
    """Answer an ASGI HTTP request with ``error`` as JSON (status, body and the error's headers)."""
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
