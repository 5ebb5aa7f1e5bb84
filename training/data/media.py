"""Media references in training records: image and video values, and typed content parts -> payloads.

A record names an image or a video as

* a path, relative to the source's media root unless absolute, or a ``file://`` URL;
* (images only) a ``data:image/...;base64,...`` URL, decoded bytes checked before use: at most
  :data:`MAX_DATA_URL_BYTES` decoded bytes (checked from the URL's length, before decoding) and
  :data:`giraffe_core.frames.MAX_IMAGE_PIXELS` pixels (from the image's header, before any pixel
  is decoded);
* (``datasets`` rows) a decoded PIL image or an undecoded ``{"bytes", "path"}`` mapping.

Remote URLs (``http://``, ``https://``, anything else with a scheme) are refused: reading
training data never reaches the network; download the files and name them by path.

A typed content part names its kind and, optionally, its own payload (the forms of Qwen-VL's
examples, OpenAI's API, transformers' processors and LLaMA-Factory's v1 format):
``{"type": "image", "image": X}``, ``{"type": "image", "url" | "path": X}``,
``{"type": "image_url", "image_url": {"url": X}}`` (or a plain string), ``{"type": "image_url",
"value": X}``, the same with ``video`` / ``video_url``, and ``{"type": "text", "text" | "value": T}``.
A part without a payload (``{"type": "image"}``) takes the next entry of the record's list.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from giraffe_core.frames import MAX_IMAGE_PIXELS

__all__ = ["BadRecord", "MAX_DATA_URL_BYTES", "check_image", "image_payload", "typed_part", "video_path"]

#: most decoded bytes of an image given inline as a ``data:`` URL (64 MiB)
MAX_DATA_URL_BYTES = 64 * 1024 * 1024
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_DATA_URL = re.compile(r"^data:(?P<type>[^,;]*)(?P<params>(;[^,;]*)*),", re.DOTALL)


class BadRecord(Exception):
    """A record that cannot become a sample; the message is the reason reported."""


def check_image(path: str | Path) -> str | None:
    """Why the image file at ``path`` cannot be used (missing, unreadable, corrupt), or ``None``."""
    path = Path(path)
    if not path.is_file():
        return f"missing image: {path}"
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        return f"corrupt image: {path} ({exc})"
    return None


def _local(value: str, root: Path, what: str) -> Path:
    """The file a path or ``file://`` URL names (relative paths under ``root``); remote URLs refused."""
    if value.startswith("file://"):
        value = value.removeprefix("file://")
    else:
        scheme = _SCHEME.match(value)
        if scheme and len(scheme.group(1)) > 1:  # "C:" stays a Windows drive letter
            raise BadRecord(f"remote {what} URL {value[:80]!r}: training data is read from local files only "
                            "(download it and give its path)")
    return Path(value) if os.path.isabs(value) else root / value


def _data_url_image(value: str) -> bytes:
    """The bytes of an image ``data:`` URL, checked (size before decoding, pixels from the header)."""
    match = _DATA_URL.match(value)
    if match is None or ";base64" not in match.group("params"):
        raise BadRecord("an image data: URL must be base64-encoded (data:image/png;base64,...)")
    encoded = value[match.end():]
    if len(encoded) * 3 // 4 > MAX_DATA_URL_BYTES:
        raise BadRecord(f"an image data: URL of about {len(encoded) * 3 // 4} bytes, over the limit of "
                        f"{MAX_DATA_URL_BYTES}; it was not decoded")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRecord(f"an image data: URL is not valid base64 ({exc})") from exc
    _check_bytes(data, "data: URL")
    return data


def _check_bytes(data: bytes, where: str) -> None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BadRecord(f"image ({where}) is {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS}")
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRecord(f"corrupt image: {where} ({exc})") from exc


def image_payload(value: Any, root: Path) -> Any:
    """A checked path (``str``), decoded image or bytes from a record's image value.

    Raises:
        BadRecord: missing, corrupt or oversized image; a remote URL; a value of another type.
    """
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):  # datasets' undecoded Image
        if value.get("bytes"):
            _check_bytes(bytes(value["bytes"]), "embedded bytes")
            return bytes(value["bytes"])
        value = value["path"]
    if not isinstance(value, str) or not value:
        raise BadRecord(f"an image must be a path, got {type(value).__name__}")
    if value.startswith("data:"):
        return _data_url_image(value)
    path = _local(value, root, "image")
    reason = check_image(path)
    if reason is not None:
        raise BadRecord(reason)
    return str(path)


def video_path(value: Any, root: Path) -> Path:
    """The video file a record's video value names (checked to exist).

    Raises:
        BadRecord: not a path, a remote URL, or no such file.
    """
    if isinstance(value, dict) and value.get("path"):
        value = value["path"]
    if not isinstance(value, str) or not value:
        raise BadRecord(f"a video must be a path, got {type(value).__name__}")
    if value.startswith("data:"):
        raise BadRecord("a video cannot be a data: URL; give its path")
    path = _local(value, root, "video")
    if not path.is_file():
        raise BadRecord(f"missing video: {path}")
    return path


def _url_value(part: dict, key: str) -> Any:
    """The payload of an ``*_url`` part: ``{key: {"url": X}}``, ``{key: X}`` or ``{"value": X}``."""
    inner = part.get(key, part.get("value"))
    if isinstance(inner, dict):
        inner = inner.get("url")
    return inner


def typed_part(part: Any) -> tuple[str, Any]:
    """``(kind, payload)`` of a typed content part: ``("text", str)``, ``("image", value or None)``
    or ``("video", value or None)`` (``None``: take the next from the record's list).

    Raises:
        BadRecord: an unknown or malformed part, or audio (not supported).
    """
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        text = part.get("text", part.get("value"))
        if isinstance(text, str):
            return "text", text
    elif kind in ("image", "video"):
        return kind, next((part[k] for k in (kind, "url", "path", "value") if part.get(k) is not None), None)
    elif kind in ("image_url", "video_url"):
        value = _url_value(part, kind)
        if value is None:
            raise BadRecord(f"an {kind} part without a url: {part!r:.80}")
        return kind.removesuffix("_url"), value
    elif kind in ("audio", "audio_url", "input_audio"):
        raise BadRecord("audio is not supported: Giraffe trains on text, images and video")
    raise BadRecord(f"unknown content part {part!r:.60} (use text, image, image_url, video or video_url parts)")
