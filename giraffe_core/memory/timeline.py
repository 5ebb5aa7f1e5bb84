"""The timeline memory: frames and text turns kept inside a token budget by resolution tiers.

Frames enter at full resolution and move down the tiers as they age (full -> low -> text caption
-> evicted to disk) under a :class:`~giraffe_core.memory.MemoryConfig` policy; a frame never moves
back up, but :meth:`TimelineMemory.zoom` brings any frame (or a crop of it) back at full
resolution as a new item. :meth:`TimelineMemory.render` turns the timeline into a chat:

* one system message (system items), then turns in the order items were added: consecutive
  task / frame / tool / error items form one user turn, consecutive model items one assistant turn;
* every shown frame is preceded by a caption ``[step 3 · t=12.5s · URL · title]``; a text-tier
  frame is the caption alone, with the action that followed it; evicted frames are summarised in
  one line after the task;
* the newest frame is marked as the current screen at the very end, so the mark never changes the
  prefix an earlier step left in a KV cache.

The rendered context's token count is exact (the same tokenization the model sees, computed
without the model or any pixel work) and never exceeds ``budget_tokens - reserve_tokens``: when
the policy's tiers do not fit, the oldest frames are demoted further, in aligned blocks, and stay
demoted (a move that would not free tokens is skipped). Every render appends a
:class:`MemoryRecord` to :attr:`TimelineMemory.records`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from giraffe_core.errors import InputError
from giraffe_core.frames import ChatLayout, layout_chat, load_image
from giraffe_core.memory.items import (
    TIER_ORDER,
    FrameItem,
    FrameStore,
    Role,
    TextItem,
    Tier,
    pixel_digest,
)
from giraffe_core.memory.policy import MemoryConfig, policy_tiers
from giraffe_core.positions import VisionTokenIds
from giraffe_core.resolution import WRAPPER_TOKENS, VisionGeometry, frame_plan

__all__ = ["MemoryRecord", "RenderedContext", "TimelineMemory"]


class MemoryRecord(BaseModel):
    """What one render held: the tier of every frame and the tokens each tier used.

    ``tokens`` maps a tier to its prompt tokens: visual tokens plus wrappers for "full" and
    "low", caption tokens for "text" (each caption tokenized alone, so within a token or two of
    its share of the prompt); "other" is the rest of the prompt (turn markup, task, model outputs).
    """

    model_config = ConfigDict(extra="forbid")

    step: int
    frames: int
    tiers: dict[str, Tier]
    tokens: dict[str, int]
    frames_per_tier: dict[str, int]
    total_tokens: int
    budget_tokens: int
    demoted_by_budget: int


@dataclass
class RenderedContext:
    """A rendered timeline: the chat, its exact token layout and the record of its tiers."""

    messages: list[dict]
    layout: ChatLayout
    record: MemoryRecord

    @property
    def token_count(self) -> int:
        """Prompt tokens, exactly as the model will read them."""
        return self.layout.num_tokens


def _rank(tier: Tier) -> int:
    return TIER_ORDER.index(tier)


class TimelineMemory:
    """Frames and text turns of an episode or recording, rendered within a token budget.

    Args:
        processor: the model's processor (tokenizer, chat template, image geometry).
        tokens: the model's placeholder ids (``VisionTokenIds.from_config(model.config)``).
        config: budget, tiers and policy; defaults work for a 128K-token model.
        store: where full-resolution frames are written (a directory or a :class:`FrameStore`);
            a temporary directory by default.
    """

    def __init__(self, processor: Any, tokens: VisionTokenIds, config: MemoryConfig | None = None,
                 store: FrameStore | str | None = None) -> None:
        self.processor = processor
        self.tokens = tokens
        self.config = config or MemoryConfig()
        self.store = store if isinstance(store, FrameStore) else FrameStore(store)
        self.geometry = VisionGeometry.from_processor(processor)
        side = self.geometry.token_side_px
        self.full_max_tokens = self.config.full_max_tokens or self.geometry.max_pixels // (side * side)
        self.items: list[FrameItem | TextItem] = []
        self.records: list[MemoryRecord] = []
        self._caps: dict[str, Tier] = {}  # demotions forced by the budget; they only ever deepen
        self._step = 0
        self._start: float | None = None  # earliest wall time seen: the origin of t=... in captions

    @classmethod
    def for_engine(cls, engine: Any, config: MemoryConfig | None = None,
                   store: FrameStore | str | None = None) -> TimelineMemory:
        """A memory that renders for ``engine`` (a :class:`~giraffe_core.engine.Engine`)."""
        return cls(engine.processor, engine.tokens, config, store)

    # ----------------------------------------------------------------------------------- adding

    @property
    def frames(self) -> list[FrameItem]:
        """All frames, oldest first (evicted ones included)."""
        return [item for item in self.items if isinstance(item, FrameItem)]

    def _stamp(self, step: int | None, wall_time: float | None) -> tuple[int, float]:
        step = self._step if step is None else int(step)
        if step < 0:
            raise InputError(f"step must be >= 0, got {step}")
        self._step = max(self._step, step)
        now = time.time() if wall_time is None else float(wall_time)
        self._start = now if self._start is None else min(self._start, now)
        return step, now

    def add_frame(self, image: Any, *, step: int | None = None, url: str | None = None,
                  title: str | None = None, source: str = "screen", wall_time: float | None = None) -> FrameItem:
        """Add a frame (PIL image, path, bytes or HxWx3 uint8 array); it is written to disk at
        full resolution. ``wall_time`` is seconds since the epoch (now by default)."""
        picture = load_image(image)
        step, now = self._stamp(step, wall_time)
        frame_id, digest = f"f{len(self.frames):05d}", pixel_digest(picture)
        path = self.store.save(f"{frame_id}-{digest[:12]}", picture)
        frame = FrameItem(id=frame_id, step=step, wall_time=now, url=url, title=title, source=source,
                          path=path, width=picture.width, height=picture.height, digest=digest)
        self.items.append(frame)
        return frame

    def add_text(self, role: Role, text: str, *, step: int | None = None,
                 wall_time: float | None = None) -> TextItem:
        """Add a text turn: ``system``, ``task``, ``model`` (the assistant), ``tool`` or ``error``."""
        if role not in ("system", "task", "model", "tool", "error"):
            raise InputError(f"unknown text role {role!r}", hint="use system, task, model, tool or error")
        step, now = self._stamp(step, wall_time)
        item = TextItem(id=f"t{sum(isinstance(i, TextItem) for i in self.items):05d}", step=step,
                        wall_time=now, role=role, text=str(text))
        self.items.append(item)
        return item

    def set_action(self, action: str, frame_id: str | None = None) -> FrameItem:
        """Record the action that followed a frame (the newest by default); text captions show it."""
        frame = self._frame(frame_id) if frame_id is not None else (self.frames or [None])[-1]
        if frame is None:
            raise InputError("there is no frame to attach an action to")
        frame.action = action
        return frame

    def _frame(self, target: str | int) -> FrameItem:
        frames = self.frames
        if isinstance(target, str):
            found = [f for f in frames if f.id == target]
        else:
            found = [f for f in frames if f.step == target and f.zoom_of is None][-1:]
        if not found:
            raise InputError(f"no frame {target!r} in the timeline",
                             hint="zoom takes a frame id such as 'f00003' or a step number")
        return found[0]

    def zoom(self, target: str | int, box: tuple[int, int, int, int] | None = None, *,
             step: int | None = None, wall_time: float | None = None) -> FrameItem:
        """Bring an older frame back at full resolution: the frame with id ``target`` (or the
        newest frame of step ``target``), cropped to ``box`` = (x0, y0, x1, y1) pixels of that
        frame when given. The zoom is a new frame of the current step, read from disk."""
        original = self._frame(target)
        box = None if box is None else tuple(box)  # type: ignore[assignment]
        picture = FrameStore.crop(original.path, box)
        step, now = self._stamp(step, wall_time)
        frame_id, digest = f"f{len(self.frames):05d}", pixel_digest(picture)
        path = self.store.save(f"{frame_id}-{digest[:12]}", picture)
        frame = FrameItem(id=frame_id, step=step, wall_time=now, url=original.url, title=original.title,
                          source="zoom", path=path, width=picture.width, height=picture.height,
                          zoom_of=original.id, box=box, digest=digest)
        self.items.append(frame)
        return frame

    # ---------------------------------------------------------------------------------- tiers

    def tiers(self) -> dict[str, Tier]:
        """Tier of every frame now: the policy's, deepened by earlier budget demotions."""
        frames = self.frames
        tiers = {}
        for frame, tier in zip(frames, policy_tiers(len(frames), self.config)):
            cap = self._caps.get(frame.id)
            tiers[frame.id] = cap if cap is not None and _rank(cap) > _rank(tier) else tier
        return tiers

    def _cost(self, frame: FrameItem, tier: Tier) -> int:
        """Prompt tokens ``frame`` takes at ``tier`` (its caption, plus its image and wrappers)."""
        if tier == "evicted":
            return 0
        caption = len(self.processor.tokenizer(self._caption(frame, tier))["input_ids"])
        if tier == "text":
            return caption
        budget = self.full_max_tokens if tier == "full" else self.config.low_max_tokens
        return caption + frame_plan((frame.width, frame.height), budget, self.geometry).tokens + WRAPPER_TOKENS

    def _demote_once(self, tiers: dict[str, Tier]) -> bool:
        """Deepen the oldest aligned block of frames at one tier: low frames (blocks of 4q), then
        full frames (blocks of q; the newest frame stays full), then text captions (blocks of 4q).
        A block goes to the next tier that frees tokens (low -> text, or straight to evicted when
        a caption costs more than the small image)."""
        frames = self.frames
        q = self.config.block_frames
        for source, size in (("low", 4 * q), ("full", q), ("text", 4 * q)):
            candidates = [i for i, f in enumerate(frames) if tiers[f.id] == source]
            if source == "full":
                candidates = candidates[:-1]
            if not candidates:
                continue
            first = candidates[0] // size * size
            block = [frames[i] for i in candidates if first <= i < first + size]
            for target in TIER_ORDER[_rank(source) + 1:]:
                if sum(self._cost(f, source) - self._cost(f, target) for f in block) > 0:
                    for frame in block:
                        self._caps[frame.id] = target
                    return True
        return False

    # -------------------------------------------------------------------------------- rendering

    def _caption(self, frame: FrameItem, tier: Tier) -> str:
        fields = [f"zoom of step {self._frame(frame.zoom_of).step}" if frame.zoom_of else f"step {frame.step}"]
        if frame.box is not None:
            fields.append(f"box ({frame.box[0]},{frame.box[1]})-({frame.box[2]},{frame.box[3]}) px")
        fields.append(f"t={frame.wall_time - (self._start if self._start is not None else frame.wall_time):.1f}s")
        fields += [v for v in (frame.url, frame.title) if v]
        if tier == "text":
            fields.append("screen not shown")
            if frame.action:
                fields.append(f"action: {frame.action}")
        return "[" + " · ".join(fields) + "]\n"

    def _messages(self, tiers: dict[str, Tier]) -> list[dict]:
        system = [i.text for i in self.items if isinstance(i, TextItem) and i.role == "system"]
        messages: list[dict] = [{"role": "system", "content": "\n\n".join(system)}] if system else []
        evicted = [f for f in self.frames if tiers[f.id] == "evicted"]
        note = None
        if evicted:
            note = (f"[{len(evicted)} earlier screens (steps {evicted[0].step}-{evicted[-1].step}) are stored "
                    "on disk and not shown; zoom into a step to see it again]\n")
        screens = [f for f in self.frames if f.zoom_of is None]
        newest = screens[-1] if screens else None  # the current screen (zoom-backs are not screens)
        for item in self.items:
            if isinstance(item, TextItem):
                if item.role == "system":
                    continue
                role = "assistant" if item.role == "model" else "user"
                parts = [{"type": "text", "text": item.text + ("" if role == "assistant" else "\n")}]
                if item.role == "task" and note is not None:
                    parts.append({"type": "text", "text": note})
                    note = None
            else:
                tier = tiers[item.id]
                role = "user"
                if tier == "evicted":
                    continue
                parts = [{"type": "text", "text": self._caption(item, tier)}]
                if tier in ("full", "low"):
                    budget = self.full_max_tokens if tier == "full" else self.config.low_max_tokens
                    parts.append({"type": "image", "image": item.path, "max_tokens": budget, "tier": tier,
                                  "key": f"{item.digest}@{budget}"})
            if messages and messages[-1]["role"] == role and role != "system":
                messages[-1]["content"].extend(parts)
            else:
                messages.append({"role": role, "content": list(parts)})
        if note is not None:  # no task item: the note opens the first user turn
            first_user = next((m for m in messages if m["role"] == "user"), None)
            if first_user is None:
                messages.append(first_user := {"role": "user", "content": []})
            first_user["content"].insert(0, {"type": "text", "text": note})
        for message in messages:  # assistant turns are plain strings in ChatML
            if message["role"] == "assistant":
                message["content"] = "\n".join(p["text"] for p in message["content"])
        if newest is not None and tiers[newest.id] in ("full", "low") and messages and messages[-1]["role"] == "user":
            where = "the last image" if newest is self.frames[-1] else "the last screenshot before the zoom"
            messages[-1]["content"].append(
                {"type": "text", "text": f"Current screen: step {newest.step} ({where}).\n"})
        return messages

    def render(self, *, add_generation_prompt: bool = True) -> RenderedContext:
        """Render the timeline as a chat within the budget; appends a :class:`MemoryRecord`.

        Raises:
            InputError: when even with every frame evicted the text alone exceeds the budget.
        """
        limit = self.config.budget_tokens - self.config.reserve_tokens
        demoted = 0
        caps_before = dict(self._caps)
        while True:
            tiers = self.tiers()
            messages = self._messages(tiers)
            layout = layout_chat(self.processor, messages, self.tokens, add_generation_prompt=add_generation_prompt)
            if layout.num_tokens <= limit:
                break
            if not self._demote_once(tiers):
                self._caps = caps_before  # a render that cannot fit changes nothing
                raise InputError(
                    f"the timeline needs {layout.num_tokens} tokens with every frame demoted; the budget leaves "
                    f"{limit} (budget_tokens {self.config.budget_tokens} - "
                    f"reserve_tokens {self.config.reserve_tokens})",
                    hint="raise budget_tokens or start a new timeline",
                )
            demoted += 1
        record = self._record(tiers, messages, layout, demoted)
        self.records.append(record)
        return RenderedContext(messages, layout, record)

    def _record(self, tiers: dict[str, Tier], messages: list[dict], layout: ChatLayout, demoted: int) -> MemoryRecord:
        tokens = {"full": 0, "low": 0, "text": 0}
        frames_per_tier = {tier: 0 for tier in TIER_ORDER}
        for tier in tiers.values():
            frames_per_tier[tier] += 1
        if layout.plan is not None:
            for part, plan in zip(layout.parts, layout.plan.frames):
                tokens[part["tier"]] += plan.tokens + WRAPPER_TOKENS
        tokenizer = self.processor.tokenizer
        for frame in self.frames:
            if tiers[frame.id] == "text":
                tokens["text"] += len(tokenizer(self._caption(frame, "text"))["input_ids"])
        tokens["other"] = layout.num_tokens - sum(tokens.values())
        return MemoryRecord(step=self._step, frames=len(tiers), tiers=tiers, tokens=tokens,
                            frames_per_tier=frames_per_tier, total_tokens=layout.num_tokens,
                            budget_tokens=self.config.budget_tokens, demoted_by_budget=demoted)

