"""Grounding in ms-swift records: ``objects`` boxes -> the model's coordinate convention.

A record's ``objects`` (ms-swift) lists the referred objects and their boxes::

    "objects": {"ref": ["a dog", "a woman"], "bbox": [[331.5, 761.4, 853.5, 1594.8], [...]],
                "bbox_type": "real", "image_id": [0, 0]}

(also as a JSON string, or ms-swift 2's list ``[{"caption"|"ref": ..., "bbox": [...],
"bbox_type": ..., "image": 0}]``). ``bbox`` is ``[x1, y1, x2, y2]``: pixels of the original image
(``bbox_type: real``, the default) or fractions of its width and height (``norm1``). ``image_id``
gives each box's image (default 0), counted in the order the record's images appear in the chat.
The text marks where they go: the ``i``-th ``<ref-object>`` becomes ``ref[i]``, the ``i``-th
``<bbox>`` becomes ``bbox[i]``; the counts must match.

Conventions (``box_format``):

* ``qwen2_vl`` (Qwen2-VL, Qwen3-VL): integer coordinates in 0..1000 of the image's width and
  height, ``round(x / width * 1000)``; written ``<|object_ref_start|>a dog<|object_ref_end|>``
  and ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` as Qwen2-VL's grounding data does;
* ``qwen2_5_vl`` (Qwen2.5-VL): integer pixels of the image as the model sees it, resized to its
  planned size (:func:`giraffe_core.resolution.frame_plan` under the image's token budget),
  ``round(x * resized_width / width)``; written as the plain ref text and ``[x1, y1, x2, y2]``
  (the form of Qwen2.5-VL's ``bbox_2d`` answers).

Coordinates are clamped to the image.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from giraffe_core.errors import GiraffeError
from giraffe_core.resolution import VisionGeometry, frame_plan
from training.data.media import BadRecord

__all__ = ["BOX_TAG", "BoxConvention", "Objects", "REF_TAG", "parse_objects", "render_objects"]

REF_TAG = "<ref-object>"
BOX_TAG = "<bbox>"
_TAGS = re.compile(f"({re.escape(REF_TAG)}|{re.escape(BOX_TAG)})")


@dataclass(frozen=True)
class Objects:
    """A record's grounding: refs in tag order, boxes ``(x1, y1, x2, y2)`` with their image index."""

    refs: tuple[str, ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    image_ids: tuple[int, ...]
    normalized: bool


@dataclass(frozen=True)
class BoxConvention:
    """How boxes are written for one model (see the module docstring).

    Attributes:
        box_format: ``qwen2_vl`` (0..1000) or ``qwen2_5_vl`` (pixels of the resized image).
        geometry: the model's image geometry (``qwen2_5_vl`` needs it to plan the resized size).
        default_max_tokens: token budget of an image part without ``max_tokens``, visual tokens.
    """

    box_format: Literal["qwen2_vl", "qwen2_5_vl"] = "qwen2_vl"
    geometry: VisionGeometry | None = None
    default_max_tokens: int | None = None

    def resized(self, size: tuple[int, int], max_tokens: int | None) -> tuple[int, int]:
        """(width, height) in pixels the model sees an image of ``size`` at, under its budget."""
        geometry = self.geometry or VisionGeometry()
        side = geometry.token_side_px
        default = self.default_max_tokens or geometry.max_pixels // (side * side)
        try:
            return frame_plan(size, int(max_tokens or default), geometry).size
        except GiraffeError as exc:
            raise BadRecord(f"cannot plan an image of {size[0]}x{size[1]} px: {exc.message}") from exc


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _from_list(items: list) -> dict:
    """ms-swift 2's ``[{"caption"|"ref", "bbox", "bbox_type", "image"}]`` as the dict form."""
    if not all(isinstance(i, dict) for i in items):
        raise BadRecord("objects must be an object {ref, bbox} or a list of {ref, bbox}")
    types = {i.get("bbox_type", "real") for i in items}
    if len(types) > 1:
        raise BadRecord(f"objects mix bbox types {sorted(types)}")
    return {"ref": [i.get("ref", i.get("caption")) for i in items if i.get("ref", i.get("caption")) is not None],
            "bbox": [i.get("bbox") for i in items], "image_id": [i.get("image", 0) for i in items],
            "bbox_type": types.pop() if types else "real"}


def parse_objects(value: Any) -> Objects | None:
    """A record's ``objects`` (``None`` when absent or empty)."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadRecord(f"objects is not valid JSON: {exc.msg}") from exc
    if isinstance(value, list):
        value = _from_list(value)
    if not isinstance(value, dict) or set(value) - {"ref", "bbox", "bbox_type", "image_id"}:
        raise BadRecord("objects must hold ref, bbox and optionally bbox_type and image_id")
    refs = [] if value.get("ref") is None else _listed(value["ref"])
    boxes = value.get("bbox") or []
    if boxes and all(isinstance(v, (int, float)) for v in boxes):
        boxes = [boxes]
    if not all(isinstance(r, str) for r in refs):
        raise BadRecord("objects.ref must be a list of strings")
    for box in boxes:
        if (not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box)
                or box[0] > box[2] or box[1] > box[3]):
            raise BadRecord(f"a bbox must be [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2, got {box!r:.60}")
    kind = value.get("bbox_type", "real")
    if kind not in ("real", "norm1"):
        raise BadRecord(f"objects.bbox_type must be real (pixels) or norm1 (0..1), got {kind!r}")
    ids = _listed(value.get("image_id", [0] * len(boxes)))
    if len(ids) != len(boxes) or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise BadRecord(f"objects.image_id must give an image index for each of the {len(boxes)} boxes")
    return Objects(tuple(refs), tuple(tuple(float(v) for v in b) for b in boxes), tuple(ids), kind == "norm1")


def _image_size(payload: Any) -> tuple[int, int]:
    if isinstance(payload, Image.Image):
        return payload.size
    with Image.open(io.BytesIO(payload) if isinstance(payload, (bytes, bytearray)) else payload) as image:
        return image.size


def _box_text(box: tuple[float, ...], part: dict, objects: Objects, convention: BoxConvention) -> str:
    width, height = _image_size(part["image"])
    if convention.box_format == "qwen2_vl":
        scale_x, scale_y, top_x, top_y = (1000, 1000, 1000, 1000) if objects.normalized else \
            (1000 / width, 1000 / height, 1000, 1000)
    else:
        top_x, top_y = convention.resized((width, height), part.get("max_tokens"))
        scale_x, scale_y = (top_x, top_y) if objects.normalized else (top_x / width, top_y / height)
    x1, y1, x2, y2 = (min(max(round(v * s), 0), top) for v, s, top in
                      zip(box, (scale_x, scale_y, scale_x, scale_y), (top_x, top_y, top_x, top_y)))
    if convention.box_format == "qwen2_vl":
        return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"
    return f"[{x1}, {y1}, {x2}, {y2}]"


def render_objects(messages: list[dict], objects: Objects | None, convention: BoxConvention) -> list[dict]:
    """``messages`` with every ``<ref-object>`` and ``<bbox>`` replaced (see the module docstring).

    Raises:
        BadRecord: tag and object counts differ, a box names an image the record lacks, or tags
            without ``objects``.
    """
    images = [p for m in messages if not isinstance(m["content"], str) for p in m["content"] if p["type"] == "image"]
    refs = list(objects.refs) if objects else []
    boxes = list(zip(objects.boxes, objects.image_ids)) if objects else []
    used = {REF_TAG: 0, BOX_TAG: 0}

    def replace(match: re.Match) -> str:
        tag = match.group(0)
        index = used[tag]
        used[tag] += 1
        pool = refs if tag == REF_TAG else boxes
        if index >= len(pool):
            raise BadRecord(f"more {tag} tags than objects give ({len(pool)})")
        if tag == REF_TAG:
            return refs[index] if convention.box_format == "qwen2_5_vl" else \
                f"<|object_ref_start|>{refs[index]}<|object_ref_end|>"
        box, image_id = boxes[index]
        if image_id >= len(images):
            raise BadRecord(f"a bbox of image {image_id}, but the record has {len(images)} image(s)")
        return _box_text(box, images[image_id], objects, convention)

    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            out.append({**message, "content": _TAGS.sub(replace, content)})
        else:
            out.append({**message, "content": [{**p, "text": _TAGS.sub(replace, p["text"])} if p["type"] == "text"
                                               else p for p in content]})
    if used[REF_TAG] != len(refs) or used[BOX_TAG] != len(boxes):
        raise BadRecord(f"{used[REF_TAG]} {REF_TAG} and {used[BOX_TAG]} {BOX_TAG} tags for {len(refs)} refs and "
                        f"{len(boxes)} boxes in objects")
    return out
