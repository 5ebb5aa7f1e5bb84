"""Image admission and decoding for ``giraffe serve``: pixels are counted BEFORE anything is decoded.

Admission (:func:`admit_images`, on the request's own task, before it is queued) reads only each
image's header (``PIL.Image.open`` parses the header and decodes nothing) and refuses, in
milliseconds:

* a format other than PNG, JPEG, WebP, GIF or BMP (400 ``invalid_image``; Pillow's other plugins,
  some of which run external programs, are never tried), bytes Pillow cannot identify (400), an
  animated or multi-frame image (400 ``invalid_image``: send frames as separate images);
* an image of more than :attr:`ServerConfig.max_image_pixels` pixels (413 ``image_too_large``,
  default 16,777,216 = 4096 x 4096), or above Pillow's own ``Image.MAX_IMAGE_PIXELS``: Pillow's
  ``DecompressionBombWarning`` range is refused like its ``DecompressionBombError`` range, never
  decoded;
* a request whose images have more than :attr:`ServerConfig.max_request_pixels` pixels together
  (413 ``request_too_large``, default 67,108,864), checked image by image, so the images after the
  one that crosses the limit are not even fetched.

Pixels, not bytes, are what is counted: a 22 KB PNG of 12,000 x 12,000 one-bit pixels is 144
million pixels, and a palette or one-bit image takes 1 byte per pixel once decoded and 4 once
converted to RGB, whatever its file size. Decoding (:func:`decode`) happens later, on the engine's
worker thread, one request at a time, so decoded pixels in memory never exceed about 5 bytes x
``max_request_pixels`` (320 MiB at the default) at once.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import Executor
from dataclasses import dataclass

from PIL import Image

from giraffe_core.engine.server_config import ServerConfig
from giraffe_core.engine.server_errors import RequestError
from giraffe_core.engine.server_sources import image_bytes

__all__ = ["ALLOWED_FORMATS", "AdmittedImage", "admit_images", "decode", "pixel_limit", "probe"]

#: the image formats the server reads (OpenAI's PNG, JPEG, WebP and GIF, and BMP)
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


@dataclass(frozen=True)
class AdmittedImage:
    """An image whose header was read and whose size is within the limits; not decoded yet.

    Attributes:
        data: the encoded bytes.
        size: width and height from the header, pixels.
        where: the request field it came from (``messages[0].content[1]``).
    """

    data: bytes
    size: tuple[int, int]
    where: str

    @property
    def pixels(self) -> int:
        """Width x height."""
        return self.size[0] * self.size[1]


def pixel_limit(config: ServerConfig) -> int:
    """The pixels one image may have: ``max_image_pixels``, or Pillow's ``MAX_IMAGE_PIXELS`` if lower."""
    pillow = Image.MAX_IMAGE_PIXELS
    return config.max_image_pixels if pillow is None else min(config.max_image_pixels, int(pillow))


def _unreadable(where: str, exc: BaseException) -> RequestError:
    return RequestError(f"{where}: cannot read the image ({type(exc).__name__}: {str(exc)[:200]})", param=where,
                        error_code="invalid_image")


def _image_too_large(where: str, size: tuple[int, int] | None, limit: int) -> RequestError:
    what = f"{size[0]} x {size[1]} = {size[0] * size[1]:,} pixels" if size else "over Pillow's decompression limit"
    return RequestError(f"{where}: the image is {what}, over this server's limit of {limit:,} pixels per image "
                        f"(--max-image-pixels); send a smaller image", status=413, param=where,
                        error_code="image_too_large")


def probe(data: bytes, where: str, config: ServerConfig) -> AdmittedImage:
    """Read the header of ``data`` and admit it, or refuse it, without decoding a pixel.

    Raises:
        RequestError: 400 ``invalid_image`` (unreadable, another format, animated); 413
            ``image_too_large`` (over :func:`pixel_limit`).
    """
    limit = pixel_limit(config)
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            size = image.size
            animated = bool(getattr(image, "is_animated", False))
    except Image.DecompressionBombError as exc:
        raise _image_too_large(where, None, limit) from exc
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's plugins raise many types on malformed headers; all mean "unreadable"
        raise _unreadable(where, exc) from exc
    if size[0] * size[1] > limit:
        raise _image_too_large(where, size, limit)
    if animated:
        raise RequestError(f"{where}: animated or multi-frame images are not supported; send each frame as an "
                           f"image of its own", param=where, error_code="invalid_image")
    return AdmittedImage(data, size, where)


async def admit_images(parts: list[tuple[str, str]], config: ServerConfig,
                       pool: Executor) -> dict[str, AdmittedImage]:
    """Fetch and probe each ``(where, url)`` image in order, keeping the request under its pixel limit.

    ``pool`` runs the blocking steps (reading, base64 decoding, header parsing).

    Returns:
        The admitted images by their request field.

    Raises:
        RequestError: what :func:`~giraffe_core.engine.server_sources.image_bytes` and :func:`probe`
            raise, and 413 ``request_too_large`` once the images' pixels pass ``max_request_pixels``.
    """
    admitted: dict[str, AdmittedImage] = {}
    total = 0
    for where, url in parts:
        data = await image_bytes(url, config, where, pool)
        image = await asyncio.get_running_loop().run_in_executor(pool, probe, data, where, config)
        total += image.pixels
        if total > config.max_request_pixels:
            raise RequestError(f"{where}: the request's images have {total:,} pixels up to this one, over this "
                               f"server's limit of {config.max_request_pixels:,} pixels per request "
                               f"(--max-request-pixels); send fewer or smaller images", status=413, param=where,
                               error_code="request_too_large")
        admitted[where] = image
    return admitted


def decode(image: AdmittedImage) -> Image.Image:
    """Decode an admitted image as RGB (on the worker thread); a 400 ``invalid_image`` when Pillow cannot."""
    try:
        with Image.open(io.BytesIO(image.data), formats=ALLOWED_FORMATS) as opened:
            if opened.size != image.size:  # the same bytes give the same header; a guard, not a path
                raise ValueError(f"the header changed from {image.size} to {opened.size}")
            opened.load()
            return opened.convert("RGB")
    except Image.DecompressionBombError as exc:  # Pillow's limit was lowered since admission
        raise _image_too_large(image.where, image.size, int(Image.MAX_IMAGE_PIXELS or 0)) from exc
    except MemoryError:
        raise
    except Exception as exc:  # truncated or corrupt data behind a valid header
        raise _unreadable(image.where, exc) from exc
