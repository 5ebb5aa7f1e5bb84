"""What the timeline holds: frames (screenshots, video frames, zooms) and text turns, and the
on-disk store that keeps every frame at full resolution."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from giraffe_core.errors import InputError

__all__ = ["TIER_ORDER", "FrameItem", "FrameStore", "Role", "TextItem", "Tier", "pixel_digest"]

#: who a text turn comes from; "model" turns render as the assistant, the rest as the user
Role = Literal["system", "task", "model", "tool", "error"]
#: how a frame is shown: full resolution, low resolution, a text caption only, or not at all
Tier = Literal["full", "low", "text", "evicted"]
#: tiers from most to least detailed; a frame only ever moves right
TIER_ORDER: tuple[Tier, ...] = ("full", "low", "text", "evicted")


def pixel_digest(image: Image.Image) -> str:
    """A 128-bit hash of an image's size, mode and pixels (hex)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.size}{image.mode}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class FrameItem(BaseModel):
    """One frame of the timeline. Its full-resolution image lives on disk at ``path``.

    Attributes:
        id: unique id, e.g. ``"f0007"``.
        step: agent step (or frame index of a recording) the frame belongs to.
        wall_time: capture time, seconds since the epoch.
        url, title: page URL / window title when known.
        source: where it came from ("browser", "desktop", "video", "zoom", ...).
        action: the action that followed this frame (set once the model acted).
        width, height: full-resolution size, pixels.
        zoom_of, box: for a zoom-back, the frame it shows again and the crop (x0, y0, x1, y1) in
            that frame's pixels (``None``: the whole frame).
        digest: hash of the pixels; two frames with the same digest show the same image.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["frame"] = "frame"
    id: str
    step: int = Field(ge=0)
    wall_time: float
    url: str | None = None
    title: str | None = None
    source: str = "screen"
    action: str | None = None
    path: str
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    zoom_of: str | None = None
    box: tuple[int, int, int, int] | None = None
    digest: str = Field(description="hash of the full-resolution pixels: the frame's identity for caches")


class TextItem(BaseModel):
    """A text turn: the system prompt, the task, a model output, a tool result or an error."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["text"] = "text"
    id: str
    step: int = Field(ge=0)
    wall_time: float
    role: Role
    text: str


class FrameStore:
    """Full-resolution frames as PNG files in one directory (a temporary one by default).

    Writes are atomic (a temporary file, then a rename), so a crash never leaves half a frame.
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="giraffe-frames-"))
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, name: str, image: Image.Image) -> str:
        """Write ``image`` as ``<name>.png``; returns its path."""
        path = self.directory / f"{name}.png"
        tmp = path.with_suffix(".png.tmp")
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
        return str(path)

    @staticmethod
    def crop(path: str, box: tuple[int, int, int, int] | None) -> Image.Image:
        """The stored frame at ``path``, cropped to ``box`` = (x0, y0, x1, y1) pixels when given."""
        try:
            image = Image.open(path)
            image.load()
        except OSError as exc:
            raise InputError(f"stored frame {path} cannot be read: {exc}") from exc
        if box is None:
            return image.convert("RGB")
        if len(box) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in box):
            raise InputError(f"a zoom box is four integers (x0, y0, x1, y1) in pixels, got {box!r}")
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height):
            raise InputError(f"zoom box {box} is outside the {image.width}x{image.height} px frame",
                             hint="give (x0, y0, x1, y1) in the frame's own pixels, x0 < x1, y0 < y1")
        return image.crop(box).convert("RGB")
