"""The settings of ``giraffe serve``: :class:`ServerConfig` (limits, image sources, security, defaults).

Every limit has a default that is safe for the common case (the server and its client on the same
machine) and a command-line option of ``giraffe serve`` (named in each field's description).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["MiB", "ServerConfig"]

MiB = 1024 * 1024


class ServerConfig(BaseModel):
    """Settings of :func:`~giraffe_core.engine.create_app` and :func:`~giraffe_core.engine.serve`.

    Sizes are in bytes, pixels are width x height of one decoded frame, times are in seconds.
    """

    # hide_input_in_errors: a refused api_key must not be echoed in the error (or a log, or a terminal)
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # --- request size and queue ------------------------------------------------------------------
    max_body_bytes: int = Field(20 * MiB, ge=1, description="largest request body, bytes (413; --max-body-mb)")
    max_pending_requests: int = Field(
        16, ge=1, description="chat requests being read, queued or run at once; more get 503 (--max-pending)")
    body_timeout_s: float = Field(30.0, gt=0, description="time to receive one request body, s (408 after it)")
    max_prompt_chars: int | None = Field(
        None, ge=1, description="characters of text in one request, 413 above (None: 8 x the model's "
                                "context_length; --max-prompt-chars)")
    max_images_per_request: int = Field(1024, ge=1, description="image parts in one request (413; --max-images)")

    # --- images: pixels before decoding ----------------------------------------------------------
    max_image_pixels: int = Field(
        16_777_216, ge=1, description="pixels of one image (4096 x 4096), 413 above (--max-image-pixels)")
    max_request_pixels: int = Field(
        67_108_864, ge=1, description="pixels of all images of one request, 413 above (--max-request-pixels)")
    max_image_bytes: int = Field(20 * MiB, ge=1, description="largest image file (local, remote or data URL), bytes")

    # --- images: where they may come from --------------------------------------------------------
    local_image_dir: Path | None = Field(
        None, description="the one folder local paths and file:// URLs may name (None: local paths refused; "
                          "--image-dir)")
    allow_remote_urls: bool = Field(False, description="fetch http(s) image URLs (off: 400; --allow-remote-urls)")
    remote_timeout_s: float = Field(10.0, gt=0, description="time for one remote image, every redirect included, s")
    remote_max_redirects: int = Field(3, ge=0, description="redirects followed for one remote image")
    remote_allowed_networks: tuple[str, ...] = Field(
        (), description="private networks (CIDR) remote image URLs may reach anyway, e.g. an intranet image host")
    allow_private_addresses: bool = Field(
        False, description="UNSAFE, for tests: let remote image URLs reach loopback, private and link-local "
                           "addresses (server-side request forgery)")

    # --- who may talk to the server --------------------------------------------------------------
    api_key: SecretStr | None = Field(
        None, description="required as 'Authorization: Bearer KEY' on every route but /health (401 otherwise; "
                          "--api-key or $GIRAFFE_API_KEY)")
    allowed_hosts: tuple[str, ...] = Field(
        (), description="Host header values accepted besides localhost, 127.0.0.1, [::1] and the address the "
                        "connection came in on ('name' for any port, 'name:port', '*' for any; --allowed-host)")
    cors_allowed_origins: tuple[str, ...] = Field(
        (), description="origins (scheme://host[:port]) whose web pages may call the API; none: no CORS "
                        "headers (--cors-origin)")
    allow_unauthenticated_remote: bool = Field(
        False, description="let serve() bind a non-loopback address without an api_key "
                           "(--allow-unauthenticated-remote)")

    # --- generation defaults ---------------------------------------------------------------------
    default_max_tokens: int = Field(512, ge=1, description="reply budget without max_tokens, tokens")
    default_temperature: float = Field(1.0, ge=0, le=2, description="temperature without one (0: greedy)")
    low_detail_tokens: int = Field(80, ge=1, description='visual-token budget of detail "low" images')
    high_detail_tokens: int | None = Field(
        None, ge=1, description='visual-token budget of "high"/"auto" images (None: the processor cap)')

    @field_validator("local_image_dir")
    @classmethod
    def _folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"local_image_dir: {str(value)!r} is not a folder")
        return None if value is None else value.resolve()

    @field_validator("remote_allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"remote_allowed_networks: {net!r} is not a network like '10.0.0.0/8'") from exc
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [h for h in value if not h or any(c in h for c in "/ @") or h != h.strip()]
        if bad:
            raise ValueError(f"allowed_hosts: {bad[0]!r} is not a host name (e.g. 'gpu-box', 'gpu-box:8000', '*')")
        return tuple(h.lower() for h in value)

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [o for o in value if o != "*" and (not o.startswith(("http://", "https://")) or o.endswith("/"))]
        if bad:
            raise ValueError(f"cors_allowed_origins: {bad[0]!r} is not an origin like 'http://localhost:3000'")
        return value

    @field_validator("api_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        key = None if value is None else value.get_secret_value()
        if key is not None and (not key or not key.isascii() or not key.isprintable() or " " in key):
            raise ValueError("api_key must be a non-empty string of printable ASCII characters without spaces")
        return value

    def prompt_char_limit(self, context_length: int) -> int:
        """The most characters of text one request may hold (``max_prompt_chars`` or 8 per context token)."""
        return self.max_prompt_chars if self.max_prompt_chars is not None else 8 * context_length
