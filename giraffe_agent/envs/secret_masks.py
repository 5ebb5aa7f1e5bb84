"""Where a secret may show on a Chromium page: the boxes the browser environment masks in every
screenshot (:mod:`giraffe_agent.masking` paints them) before it is stored or sent to a model.

:class:`SecretMasks` finds, at every observation (before and after the screenshot):

1. every element a secret was typed into: :meth:`SecretMasks.type_text` types a secret character
   by character and records the element that has the focus before each one (through open shadow
   roots and into frames), so text fields, password fields (whose bullets show the length),
   textareas, contenteditable elements, and fields the focus moves through (one-character code
   inputs) are all followed. Each is re-measured at every observation while it exists (its
   border box and any content overflowing it); a navigation ends it;
2. every field (input, textarea, select) of every frame whose value or placeholder holds a
   secret in any form :meth:`~giraffe_agent.safety.Secrets.find` knows, wherever it came from
   (a page that copies the value into another field, a re-rendered field, a page restored from
   the back/forward cache);
3. the text of every frame: all text nodes in document order (through open shadow roots) are
   joined, and every node a secret occurrence overlaps is masked line box by line box, so a
   value split over several elements is found too.

Child frames are measured in the main viewport's CSS pixels and clipped to their frame. A frame
that cannot be read (or holds more than ``max_chars`` characters of text) is masked whole; when
the main frame cannot be read, the whole screen is (the caller hides it).

Not found: a secret drawn in a canvas, an image, a video or a plugin, rendered by CSS
(``content: attr(...)``), inside a closed shadow root, shown only in part (a few characters),
or shown after a transformation other than the encodings redaction decodes (upper-cased text
in the DOM, reversed, spaced out with other characters); keystrokes typed while no element had
the focus. A hostile page can hide its text from the scan (it runs in the page's own world):
masking keeps the SDK from showing what a field displays, it does not stop a page that means to
display a secret.
"""

from __future__ import annotations

import bisect
import logging
from typing import TYPE_CHECKING, Any

from giraffe_agent.envs.page_scripts import (
    COLLECT_TEXTS_JS,
    ELEMENT_BOXES_JS,
    FOCUSED_JS,
    FRAME_CONTENT_JS,
    TEXT_BOXES_JS,
)
from giraffe_agent.masking import Box
from giraffe_agent.safety import Secrets

if TYPE_CHECKING:
    from playwright.async_api import ElementHandle, Frame, Page

__all__ = ["MAX_SCANNED_CHARS", "MAX_TRACKED", "SecretMasks", "UnreadableFrame"]

logger = logging.getLogger(__name__)

#: most characters of text (and field values) read from one frame; more: the frame is masked whole
MAX_SCANNED_CHARS = 4_000_000
#: most elements followed at once (the oldest are forgotten first)
MAX_TRACKED = 512
_NESTED_FRAMES = 16


class UnreadableFrame(Exception):
    """A frame whose texts could not be read (crashed, navigating, too large)."""


class SecretMasks:
    """The boxes that may show a secret on one browser environment's page (see the module doc).

    Args:
        secrets: the environment's secrets.
        max_chars: most characters read from one frame (:data:`MAX_SCANNED_CHARS`).
    """

    def __init__(self, secrets: Secrets, *, max_chars: int = MAX_SCANNED_CHARS) -> None:
        self.secrets = secrets
        self.max_chars = max_chars
        self._tracked: list[tuple[Frame, ElementHandle]] = []

    @property
    def tracked(self) -> int:
        """How many elements a secret was typed into are followed."""
        return len(self._tracked)

    # ---------------------------------------------------------------- typing

    async def type_text(self, page: Page, text: str) -> bool:
        """Type ``text`` (already filled in) character by character, recording the element that has
        the focus before each character and after the last. A newline or carriage return is
        inserted as text, never pressed as Enter (a single-line field drops it instead of
        submitting half a secret). Returns whether any element received the text."""
        received = False
        for char in text:
            received = await self._note_focus(page) or received
            if char in "\r\n":
                await page.keyboard.insert_text(char)
            else:
                await page.keyboard.type(char)
        received = await self._note_focus(page) or received
        if not received:
            logger.warning("a secret was typed while no element had the focus: nothing is masked for it")
        return received

    async def _focused(self, page: Page) -> tuple[Frame, ElementHandle] | None:
        frame = page.main_frame
        for _ in range(_NESTED_FRAMES):
            handle = await frame.evaluate_handle(FOCUSED_JS)
            element = handle.as_element()
            if element is None:
                await handle.dispose()
                return None
            child = await element.content_frame()
            if child is None:
                return frame, element
            await element.dispose()
            frame = child
        return None

    async def _note_focus(self, page: Page) -> bool:
        found = await self._focused(page)
        if found is None:
            return False
        frame, element = found
        known = [h for f, h in self._tracked if f is frame]
        try:
            seen = bool(known) and await element.evaluate("(e, known) => known.includes(e)", known)
        except Exception:  # a handle of an earlier document of this frame: those are gone
            self._tracked = [(f, h) for f, h in self._tracked if f is not frame]
            seen = False
        if seen:
            await element.dispose()
        else:
            self._tracked.append((frame, element))
            if len(self._tracked) > MAX_TRACKED:
                await self._tracked.pop(0)[1].dispose()
        return True

    # ---------------------------------------------------------------- measuring

    async def boxes(self, page: Page) -> list[Box]:
        """Every box (CSS px of the viewport) that may show a secret on ``page`` now.

        Raises:
            UnreadableFrame: the main frame cannot be read (hide the whole screen).
        """
        offsets: dict[Frame, tuple[float, float, Box | None] | None] = {page.main_frame: (0.0, 0.0, None)}
        boxes = await self._tracked_boxes(page, offsets)
        for frame in page.frames:
            if frame.is_detached():
                continue
            where = await self._offset(frame, offsets)
            if where is None:  # the frame is not shown
                continue
            try:
                rects = await self._scan(frame)
            except Exception as exc:
                if frame is page.main_frame:
                    raise UnreadableFrame(_first_line(exc)) from exc
                logger.info("masking the whole of a frame that cannot be read: %s", _first_line(exc))
                if where[2] is not None:
                    boxes.append(where[2])
                continue
            boxes += _placed(rects, where)
        return boxes

    async def _tracked_boxes(self, page: Page, offsets: dict[Any, Any]) -> list[Box]:
        boxes: list[Box] = []
        alive = []
        for frame, element in self._tracked:
            if frame.is_detached():
                continue
            if frame.page is not page:  # another tab's: kept, measured when that tab is current
                alive.append((frame, element))
                continue
            try:
                rects = await element.evaluate(ELEMENT_BOXES_JS)
            except Exception:  # its document is gone (navigation): so is the element
                continue
            alive.append((frame, element))
            where = await self._offset(frame, offsets)
            if where is not None:
                boxes += _placed(rects, where)
        self._tracked = alive
        return boxes

    async def _offset(self, frame: Frame, offsets: dict[Any, Any]) -> tuple[float, float, Box | None] | None:
        """Where ``frame``'s viewport lies in the main viewport: (x, y, its box), CSS px; ``None``
        when it is not shown (or gone). Raises :class:`UnreadableFrame` when it cannot be placed."""
        if frame not in offsets:
            offsets[frame] = None
            try:
                element = await frame.frame_element()
                border = await element.bounding_box()
                content = await element.evaluate(FRAME_CONTENT_JS) if border is not None else None
                await element.dispose()
            except Exception as exc:
                if frame.is_detached():
                    return None
                raise UnreadableFrame(f"a frame cannot be placed: {_first_line(exc)}") from exc
            if border is not None and content is not None:
                x, y = border["x"] + content[0], border["y"] + content[1]
                offsets[frame] = (x, y, (x, y, float(content[2]), float(content[3])))
        return offsets[frame]

    async def _scan(self, frame: Frame) -> list[list[float]]:
        """The boxes (CSS px of the frame) of the fields and text nodes of ``frame`` showing a secret."""
        collection = await frame.evaluate_handle(COLLECT_TEXTS_JS, self.max_chars)
        try:
            data = await collection.evaluate("c => ({texts: c.texts, fields: c.fields, over: c.over})")
            if data["over"]:
                raise UnreadableFrame(f"more than {self.max_chars} characters of text")
            indices = self._showing(data["texts"], data["fields"])
            rects = await collection.evaluate(TEXT_BOXES_JS, indices) if indices else []
        finally:
            await collection.dispose()
        return [rect for node in rects for rect in node]

    def _showing(self, texts: list[str], fields: list[bool]) -> list[int]:
        """Indices of the texts that show a secret: a field on its own, text nodes joined in order."""
        found = {i for i, (text, field) in enumerate(zip(texts, fields)) if field and self.secrets.find(text)}
        nodes = [i for i, field in enumerate(fields) if not field]
        starts, total = [], 0
        for i in nodes:
            starts.append(total)
            total += len(texts[i])
        joined = "".join(texts[i] for i in nodes)
        for start, end, _ in self.secrets.find(joined):
            first, last = bisect.bisect_right(starts, start) - 1, bisect.bisect_right(starts, end - 1) - 1
            found.update(nodes[first:last + 1])
        return sorted(found)

    async def close(self) -> None:
        """Forget every element (their handles are released)."""
        tracked, self._tracked = self._tracked, []
        for _, element in tracked:
            try:
                await element.dispose()
            except Exception as exc:
                logger.debug("releasing an element: %s", _first_line(exc))


def _placed(rects: list[list[float]], where: tuple[float, float, Box | None]) -> list[Box]:
    """Frame boxes moved into the main viewport and clipped to the frame."""
    dx, dy, clip = where
    out = []
    for rect in rects:
        x0, y0 = rect[0] + dx, rect[1] + dy
        x1, y1 = x0 + rect[2], y0 + rect[3]
        if clip is not None:
            x0, y0 = max(x0, clip[0]), max(y0, clip[1])
            x1, y1 = min(x1, clip[0] + clip[2]), min(y1, clip[1] + clip[3])
        if x1 > x0 and y1 > y0:
            out.append((float(x0), float(y0), float(x1 - x0), float(y1 - y0)))
    return out


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]
