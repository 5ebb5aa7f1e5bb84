"""Question answering over a screen recording (or a video) within a token budget.

:func:`ask` picks frames of a :class:`~giraffe_agent.recording.Recording`, plans their resolution
with the paper's hybrid group scheme ``(L, m, s)`` (default ``(4, 240, 3)``: the first frame of
every group of 4 at up to 240 visual tokens, the other three at up to 80), renders them in time
order, each after its timestamp caption ``[t=HH:MM:SS]``, and asks the local engine or any
OpenAI-compatible endpoint. The :class:`Answer` carries the text, the plan (which frame went in
at which resolution), exact token counts and the frames the answer cites.

Frame choice (:func:`select_frames`): every frame gets a weight, and ``n`` distinct frames are
drawn by systematic sampling proportional to the weights, frames whose weight alone is at least
``1/n`` of the remainder being taken for sure first (the classic "PPS systematic sampling with
certainty units"; deterministic, exactly ``n`` distinct frames, sorted by time).

* ``"uniform"``: weight = time the frame stays on screen (until the next frame), so samples are
  spread evenly over time; for a video opened at a fixed fps this is evenly spaced frames.
* ``"change"``: weight = 0.9 x the frame's share of all change scores + 0.1 x its share of the
  time, so bursts of activity get most frames while long still periods are still represented.

Budget: the largest ``n`` whose rendered prompt fits ``budget_tokens`` is found by bisection on
exact counts (the chat template and tokenizer on the text, plus each frame's planned visual
tokens: the same arithmetic the processor's placeholder expansion does), then the final chat is
checked with :func:`giraffe_core.layout_chat`; the prompt never exceeds the budget. For the local
engine the budget is also capped at ``context_length - max_new_tokens``.

Citations (:func:`parse_timestamps`, :func:`cite`): ``[t=00:12:03]``, ``t=12:03``, bare
``hh:mm:ss`` / ``mm:ss`` (with optional fractions) and ``12.5s`` / ``12 seconds`` in the answer
are read as seconds since the recording started and mapped to the nearest frame in the prompt.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from giraffe_agent.backends.openai import BackendError, to_openai_messages
from giraffe_agent.recording import Mark, Recording, RecordingError, format_timestamp
from giraffe_core.errors import ConfigError, InputError
from giraffe_core.extras import require
from giraffe_core.frames import ChatLayout, layout_chat
from giraffe_core.positions import VisionTokenIds
from giraffe_core.resolution import WRAPPER_TOKENS, GroupScheme, ResolutionPlan, VisionGeometry, frame_plan, plan_groups

__all__ = [
    "Answer",
    "CHANGE_SHARE",
    "Citation",
    "DEFAULT_BUDGET_TOKENS",
    "PlannedFrame",
    "QAPlan",
    "Sampling",
    "ask",
    "cite",
    "frame_weights",
    "parse_timestamps",
    "plan_question",
    "select_frames",
]

logger = logging.getLogger(__name__)

Sampling = Literal["uniform", "change"]
#: the paper's budget: 128K tokens
DEFAULT_BUDGET_TOKENS = 131072
#: share of a frame's "change" weight that comes from its change score (the rest from its time on screen)
CHANGE_SHARE = 0.9


# --------------------------------------------------------------------------------------------------
# choosing frames
# --------------------------------------------------------------------------------------------------


def frame_weights(recording: Recording, sampling: Sampling = "uniform") -> np.ndarray:
    """Sampling weight of every frame (sums to 1); see the module docstring."""
    if sampling not in ("uniform", "change"):
        raise ConfigError(f"sampling must be 'uniform' or 'change', got {sampling!r}")
    count = len(recording)
    if count == 0:
        return np.zeros(0)
    times = np.array([f.t for f in recording.frames], dtype=np.float64)
    end = max(float(recording.duration), float(times[-1]))
    shown = np.diff(np.append(times, end))
    span = end - float(times[0])
    # a frame is on screen at least a tenth of the mean frame period (the last frame of a
    # recording closed on it would otherwise weigh nothing)
    floor = 0.1 * span / count if span > 0 else 1.0
    shown = np.maximum(shown, floor)
    time_share = shown / shown.sum()
    if sampling == "uniform":
        return time_share
    scores = np.clip(np.array(recording.scores(), dtype=np.float64), 0.0, None)
    if scores.sum() <= 0:
        return time_share
    return CHANGE_SHARE * scores / scores.sum() + (1.0 - CHANGE_SHARE) * time_share


def _systematic(weights: np.ndarray, count: int) -> list[int]:
    """``count`` distinct indices drawn by PPS systematic sampling with certainty units."""
    total_items = len(weights)
    if count >= total_items:
        return list(range(total_items))
    if count <= 0:
        return []
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if w.sum() <= 0:
        w = np.ones(total_items)
    chosen: set[int] = set()
    remaining = np.arange(total_items)
    k = count
    while k > 0:
        ww = w[remaining]
        total = ww.sum()
        if total <= 0:
            ww = np.ones(len(remaining))
            total = float(len(remaining))
        certain = ww * k >= total
        if not certain.any():
            break
        chosen.update(int(i) for i in remaining[certain])
        k -= int(certain.sum())
        remaining = remaining[~certain]
    if k > 0:
        ww = w[remaining]
        if ww.sum() <= 0:
            ww = np.ones(len(remaining))
        edges = np.cumsum(ww) / ww.sum()
        targets = (np.arange(k) + 0.5) / k
        picks = np.minimum(np.searchsorted(edges, targets, side="right"), len(remaining) - 1)
        for p in picks:
            chosen.add(int(remaining[p]))
        if len(chosen) < count:  # floating-point ties: fill with the heaviest frames not taken
            for i in np.argsort(-w, kind="stable"):
                if len(chosen) >= count:
                    break
                chosen.add(int(i))
    return sorted(chosen)


def select_frames(recording: Recording, count: int, sampling: Sampling = "uniform") -> list[int]:
    """Indices of ``count`` distinct frames of ``recording`` (all when it has fewer), in time order."""
    return _systematic(frame_weights(recording, sampling), count)


# --------------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------------


class PlannedFrame(BaseModel):
    """One frame in the prompt.

    Attributes:
        index: the frame's index in the recording; position: its place in the prompt (0, 1...).
        t: seconds since the recording started; label: its caption, e.g. ``[t=00:12:03]``.
        wall_time: capture time, seconds since the epoch (``None`` when unknown).
        tier: "high" or "low"; max_tokens: the tier's budget, visual tokens.
        source_size, size: (width, height) in the recording and as fed to the model, pixels.
        tokens: visual tokens of the frame (wrappers excluded).
        score: the frame's change score (0-1), when known.
    """

    model_config = ConfigDict(extra="forbid")

    index: int
    position: int
    t: float
    label: str
    wall_time: float | None = None
    tier: str
    max_tokens: int
    source_size: tuple[int, int]
    size: tuple[int, int]
    tokens: int
    score: float | None = None


class Citation(BaseModel):
    """A moment the answer refers to, mapped to the nearest frame in the prompt.

    Attributes:
        text: the reference as written; start, end: its character span in the answer.
        t: the time it names, seconds since the recording started.
        frame: the recording index of the nearest frame in the prompt; frame_t: that frame's time,
            seconds; label: that frame's caption.
    """

    model_config = ConfigDict(extra="forbid")

    text: str
    start: int
    end: int
    t: float
    frame: int
    frame_t: float
    label: str


@dataclass
class QAPlan:
    """What :func:`plan_question` decided: the chat to send and how it was built.

    Attributes:
        question: the question.
        messages: the chat (one user turn; images as PIL images already at their planned size).
        frames: the frames in the prompt, in time order.
        prompt_tokens: exact prompt length, tokens (<= ``budget_tokens``).
        budget_tokens: the budget the plan had to fit.
        sampling, scheme: how frames were chosen and tiered.
        recording: the recording's summary.
        plan: the resolution plan of the frames.
        layout: the chat's exact token layout (what the model reads).
        marks: the event marks shown.
    """

    question: str
    messages: list[dict]
    frames: list[PlannedFrame]
    prompt_tokens: int
    budget_tokens: int
    sampling: Sampling
    scheme: GroupScheme
    recording: dict[str, Any]
    plan: ResolutionPlan
    layout: ChatLayout
    marks: list[Mark] = field(default_factory=list)

    @property
    def token_count(self) -> int:
        """Prompt tokens, exactly as the model will read them (= ``prompt_tokens``)."""
        return self.layout.num_tokens

    def openai_messages(self) -> list[dict]:
        """The chat as OpenAI chat-completions messages, every frame a PNG data URL at its planned size.

        A Qwen-VL server keeps an image whose sides are multiples of 28 and whose area is within
        its pixel bounds as it is, so it spends exactly the planned visual tokens on it.
        """
        return to_openai_messages(self)

    @property
    def visual_tokens(self) -> int:
        """Visual tokens of all frames, wrappers excluded."""
        return sum(f.tokens for f in self.frames)

    def tokens_by_tier(self) -> dict[str, int]:
        """Visual tokens plus wrappers per tier, and "text" for the rest of the prompt."""
        out: dict[str, int] = {}
        for f in self.frames:
            out[f.tier] = out.get(f.tier, 0) + f.tokens + WRAPPER_TOKENS
        out["text"] = self.prompt_tokens - sum(out.values())
        return out


def _timestamp_decimals(times: Sequence[float]) -> int:
    """0, or the fewest decimals (up to 3) that give consecutive distinct times distinct labels."""
    ordered = sorted(times)
    for decimals in range(4):
        labels = [format_timestamp(t, decimals) for t in ordered]
        if all(a != b for a, b, ta, tb in zip(labels, labels[1:], ordered, ordered[1:]) if tb - ta > 1e-9):
            return decimals
    return 3


def _label(t: float, decimals: int) -> str:
    return f"[t={format_timestamp(t, decimals)}]"


def _chat(recording: Recording, chosen: Sequence[int], images: Sequence[Any], budgets: Sequence[int],
          tiers: Sequence[str], question: str, marks: Sequence[Mark], decimals: int) -> list[dict]:
    """The QA chat: a header, frames (caption, image) and marks in time order, then the question."""
    note = "; lines like [t=HH:MM:SS mark: ...] are events noted during the recording" if marks else ""
    header = (f"This is a screen recording, {format_timestamp(recording.duration)} long. Below are {len(chosen)} "
              f"of its {len(recording)} frames in time order, some at higher resolution than others; each "
              f"frame follows its timestamp [t=HH:MM:SS], the time since the recording started{note}. When your "
              "answer refers to a moment, cite its timestamp like [t=00:01:05].\n")
    content: list[dict] = [{"type": "text", "text": header}]
    events: list[tuple[float, int, int]] = [(m.t, 0, i) for i, m in enumerate(marks)]
    events += [(recording.frames[idx].t, 1, pos) for pos, idx in enumerate(chosen)]
    for t, kind, i in sorted(events):
        if kind == 0:
            content.append({"type": "text", "text": f"[t={format_timestamp(t, decimals)} mark: {marks[i].label}]\n"})
        else:
            part: dict[str, Any] = {"type": "image", "image": images[i], "max_tokens": int(budgets[i]),
                                    "tier": tiers[i]}
            content += [{"type": "text", "text": _label(t, decimals)}, part]
    content.append({"type": "text", "text": f"\nQuestion: {question}"})
    return [{"role": "user", "content": content}]


def _skeleton(messages: list[dict]) -> list[dict]:
    """The chat with image payloads dropped (what the chat template needs)."""
    return [{**m, "content": [{"type": "image"} if p.get("type") == "image" else p for p in m["content"]]}
            for m in messages]


def _vision_tokens(processor: Any, geometry: VisionGeometry) -> VisionTokenIds:
    tokenizer = processor.tokenizer
    return VisionTokenIds(image_token_id=int(tokenizer.convert_tokens_to_ids("<|image_pad|>")),
                          video_token_id=int(tokenizer.convert_tokens_to_ids("<|video_pad|>")),
                          spatial_merge_size=geometry.merge_size)


def plan_question(
    recording: Recording,
    question: str,
    *,
    processor: Any,
    tokens: VisionTokenIds | None = None,
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    scheme: GroupScheme | None = None,
    sampling: Sampling = "uniform",
    include_marks: bool = True,
    max_frames: int | None = None,
) -> QAPlan:
    """Choose, tier and render frames of ``recording`` for ``question`` within ``budget_tokens``.

    Args:
        recording: an open recording (:meth:`Recording.open`).
        question: the question.
        processor: the model's processor (``engine.processor``): its chat template, tokenizer and
            image geometry define the exact count.
        tokens: the model's placeholder ids (``engine.tokens``); default: read from the tokenizer.
        budget_tokens: the most prompt tokens, visual and text together.
        scheme: the group scheme ``(L, m, s)``; default ``(4, 240, 3)``.
        sampling: "uniform" or "change" (see the module docstring).
        include_marks: show the recording's event marks as text lines.
        max_frames: use at most this many frames even if more would fit.

    Raises:
        RecordingError: the recording has no frames.
        InputError: an empty question, or a budget too small for even one frame.
    """
    if not isinstance(question, str) or not question.strip():
        raise InputError("the question is empty", hint="ask something about the recording")
    if len(recording) == 0:
        raise RecordingError(f"the recording {recording.path} has no frames",
                             hint="record for longer, or lower the threshold so changes are kept")
    if budget_tokens < 1:
        raise InputError(f"budget_tokens must be >= 1, got {budget_tokens}")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"max_frames must be >= 1, got {max_frames}")
    if sampling not in ("uniform", "change"):
        raise ConfigError(f"sampling must be 'uniform' or 'change', got {sampling!r}")
    scheme = scheme or GroupScheme()
    geometry = VisionGeometry.from_processor(processor)
    tokens = tokens or _vision_tokens(processor, geometry)
    tokenizer = processor.tokenizer
    marks = list(recording.marks) if include_marks else []
    weights = frame_weights(recording, sampling)
    limit = len(recording) if max_frames is None else min(max_frames, len(recording))

    def build(n: int) -> tuple[list[int], ResolutionPlan, int, list[dict]]:
        chosen = _systematic(weights, n)
        plan = plan_groups([recording.frames[i].size for i in chosen], geometry, scheme)
        decimals = _timestamp_decimals([recording.frames[i].t for i in chosen])  # frames need distinct labels
        sizes = [f.size for f in plan.frames]
        messages = _chat(recording, chosen, sizes, [f.max_tokens for f in plan.frames],
                         [f.tier for f in plan.frames], question, marks, decimals)
        return chosen, plan, decimals, messages

    counts: dict[int, int] = {}

    def count(n: int) -> int:
        if n not in counts:
            _, plan, _, messages = build(n)
            text = processor.apply_chat_template(_skeleton(messages), tokenize=False, add_generation_prompt=True)
            # one <|image_pad|> per frame in the template's text; the processor expands it to one
            # per visual token (special tokens are never merged with their neighbours)
            counts[n] = len(tokenizer(text)["input_ids"]) + sum(f.tokens - 1 for f in plan.frames)
        return counts[n]

    if count(1) > budget_tokens:
        raise InputError(
            f"one frame with its question and captions needs {count(1)} prompt tokens; the budget is {budget_tokens}",
            hint="raise budget_tokens (or the model's context_length), lower the scheme's high_tokens, shorten "
                 "the question" + (", or leave out the recording's marks (include_marks=False)" if marks else ""))
    low, high = 1, limit
    if count(high) <= budget_tokens:
        low = high
    while low < high:  # largest n with count(n) <= budget (count grows with n)
        mid = (low + high + 1) // 2
        if count(mid) <= budget_tokens:
            low = mid
        else:
            high = mid - 1
    n = low
    while True:
        chosen, plan, decimals, _ = build(n)
        images = _load_planned(recording, chosen, plan, geometry)
        messages = _chat(recording, chosen, images, [f.max_tokens for f in plan.frames],
                         [f.tier for f in plan.frames], question, marks, decimals)
        layout = layout_chat(processor, messages, tokens)
        exact = layout.num_tokens
        if exact != count(n):
            logger.warning("the QA token estimate (%d) differs from the layout's count (%d)", count(n), exact)
        if exact <= budget_tokens or n == 1:
            break
        n -= 1
    if exact > budget_tokens:
        raise InputError(f"one frame needs {exact} prompt tokens; the budget is {budget_tokens}",
                         hint="raise budget_tokens or lower the scheme's high_tokens")
    scores = recording.scores() if recording.kind == "directory" or sampling == "change" else None
    frames = [
        PlannedFrame(index=idx, position=pos, t=recording.frames[idx].t,
                     label=_label(recording.frames[idx].t, decimals), wall_time=recording.frames[idx].wall_time,
                     tier=fp.tier, max_tokens=fp.max_tokens, source_size=fp.source_size, size=fp.size,
                     tokens=fp.tokens, score=None if scores is None else round(scores[idx], 6))
        for pos, (idx, fp) in enumerate(zip(chosen, plan.frames))
    ]
    logger.info("QA plan: %d of %d frames, %d prompt tokens (budget %d), sampling %s", len(frames), len(recording),
                exact, budget_tokens, sampling)
    return QAPlan(question=question, messages=messages, frames=frames, prompt_tokens=exact,
                  budget_tokens=budget_tokens, sampling=sampling, scheme=scheme, recording=recording.summary(),
                  plan=plan, layout=layout, marks=marks)


def _load_planned(recording: Recording, chosen: Sequence[int], plan: ResolutionPlan,
                  geometry: VisionGeometry) -> list[Image.Image]:
    """The chosen frames, each resized to its planned size (so only small images are held).

    Frame files of a directory are decoded and resized on a thread pool (PIL releases the GIL
    while it decodes and resizes); a video is decoded in one sequential pass. A frame whose
    planned size would be re-planned differently (never for real screen sizes) is kept at full
    resolution and resized by the processor instead.
    """

    def fit(full: Image.Image, position: int) -> Image.Image:
        fp = plan.frames[position]
        if full.size == fp.size or frame_plan(fp.size, fp.max_tokens, geometry).size != fp.size:
            return full
        return full.resize(fp.size, Image.Resampling.BICUBIC)

    if recording.kind == "directory":
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="giraffe-frames") as pool:
            return list(pool.map(lambda pos: fit(recording.image(chosen[pos]), pos), range(len(chosen))))
    out: list[Image.Image | None] = [None] * len(chosen)
    position = {idx: pos for pos, idx in enumerate(chosen)}
    for idx, full in recording.images(chosen):
        out[position[idx]] = fit(full, position[idx])
    missing = [chosen[i] for i, im in enumerate(out) if im is None]
    if missing:
        raise RecordingError(f"frames {missing[:5]} of {recording.path} could not be decoded",
                             hint="the video is damaged; re-encode it or record it again")
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# citations
# --------------------------------------------------------------------------------------------------

_TIME = re.compile(
    r"(?<![\w:.])"
    r"(?:\[\s*)?(?:t\s*=\s*)?"
    r"(?:"
    r"(?:(?P<h>\d{1,2}):)?(?P<m>\d{1,3}):(?P<s>\d{2}(?:\.\d+)?)(?![\d:])"
    r"|"
    r"(?P<secs>\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)\b"
    r")"
    r"(?:\s*\])?",
    re.IGNORECASE,
)


def parse_timestamps(text: str) -> list[tuple[int, int, float]]:
    """Every time reference in ``text`` as ``(start, end, seconds)``, in order.

    Forms: ``[t=00:12:03]``, ``t=12:03``, ``01:02:03.5``, ``12:03`` (minutes:seconds),
    ``12.5s``, ``12 sec``, ``40 seconds``. Clock forms need seconds below 60 (and minutes below
    60 when hours are given).
    """
    out = []
    for match in _TIME.finditer(text):
        if match.group("secs") is not None:
            seconds = float(match.group("secs"))
        else:
            h = int(match.group("h") or 0)
            m, s = int(match.group("m")), float(match.group("s"))
            if s >= 60 or (match.group("h") is not None and m >= 60):
                continue
            seconds = h * 3600 + m * 60 + s
        out.append((match.start(), match.end(), seconds))
    return out


def cite(text: str, frames: Sequence[PlannedFrame], *, duration: float | None = None) -> list[Citation]:
    """Map the time references in ``text`` to the nearest frames in the prompt.

    References past ``duration`` (seconds, plus one second of slack) are ignored: they cannot
    name a moment of the recording.
    """
    if not frames:
        return []
    times = np.array([f.t for f in frames])
    out = []
    for start, end, seconds in parse_timestamps(text):
        if duration is not None and seconds > duration + 1.0:
            continue
        nearest = frames[int(np.argmin(np.abs(times - seconds)))]
        out.append(Citation(text=text[start:end], start=start, end=end, t=seconds, frame=nearest.index,
                            frame_t=nearest.t, label=nearest.label))
    return out


# --------------------------------------------------------------------------------------------------
# answering
# --------------------------------------------------------------------------------------------------


class Answer(BaseModel):
    """The answer to a question about a recording, and how it was produced (JSON-ready).

    Attributes:
        question, text: the question and the model's answer.
        citations: the moments the answer names, mapped to frames in the prompt.
        frames: the plan: every frame in the prompt with its tier, sizes and tokens.
        prompt_tokens: exact prompt length, tokens (<= budget_tokens); visual_tokens: of frames.
        completion_tokens: tokens generated (when the backend says).
        server_prompt_tokens: prompt tokens the endpoint reported (endpoint only).
        budget_tokens: the budget the prompt was fitted to.
        sampling, scheme: how frames were chosen and tiered.
        backend: "engine" or "endpoint"; model: the model's name.
        finish_reason: "stop" or "length" (when known).
        recording: the recording's summary.
        timings: seconds spent planning (with decoding frames) and generating.
    """

    model_config = ConfigDict(extra="forbid")

    question: str
    text: str
    citations: list[Citation] = Field(default_factory=list)
    frames: list[PlannedFrame]
    prompt_tokens: int
    visual_tokens: int
    completion_tokens: int | None = None
    server_prompt_tokens: int | None = None
    budget_tokens: int
    sampling: Sampling
    scheme: GroupScheme
    backend: Literal["engine", "endpoint"]
    model: str
    finish_reason: str | None = None
    recording: dict[str, Any]
    timings: dict[str, float] = Field(default_factory=dict)

    @property
    def cited_frames(self) -> list[PlannedFrame]:
        """The distinct frames the answer cites, in time order."""
        cited = {c.frame for c in self.citations}
        return [f for f in self.frames if f.index in cited]

    def tokens_by_tier(self) -> dict[str, int]:
        """Visual tokens (wrappers excluded) per tier."""
        out: dict[str, int] = {}
        for f in self.frames:
            out[f.tier] = out.get(f.tier, 0) + f.tokens
        return out


def _base_url(endpoint: str) -> str:
    url = endpoint.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the endpoint must be an http(s) URL, got {endpoint!r}",
                          hint="e.g. http://127.0.0.1:8000/v1 (giraffe serve, vLLM, sglang)")
    path = url.partition("://")[2].partition("/")[2]
    return url if path else url + "/v1"


def _ask_endpoint(plan: QAPlan, endpoint: str, served_model: str | None, api_key: str | None,
                  max_new_tokens: int, temperature: float, timeout_s: float) -> tuple[str, str, int | None,
                                                                                     int | None, str | None]:
    openai = require("openai", extra="agent", purpose="ask an OpenAI-compatible endpoint")
    base_url = _base_url(endpoint)
    client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "unused",
                           timeout=timeout_s, max_retries=1)
    try:
        if served_model is None:
            models = [m.id for m in client.models.list()]
            if not models:
                raise BackendError(f"{base_url} serves no models", hint="pass served_model= / --served-model")
            served_model = models[0]
        reply = client.chat.completions.create(model=served_model, messages=plan.openai_messages(),
                                               max_tokens=max_new_tokens, temperature=temperature)
    except openai.APITimeoutError as exc:
        raise BackendError(f"{base_url}: no answer within {timeout_s} s",
                           hint="raise timeout_s, or check that the server is not overloaded") from exc
    except openai.APIConnectionError as exc:
        raise BackendError(f"cannot reach the endpoint {base_url}: {exc.__cause__ or exc}",
                           hint="is the server running (e.g. `giraffe serve --port 8000`) and is the URL its API "
                                "root (ending in /v1)?") from exc
    except openai.APIStatusError as exc:
        raise BackendError(f"{base_url} refused the request (HTTP {exc.status_code}): {exc.message}",
                           status=exc.status_code,
                           hint="a context-length error means the prompt is longer than the server accepts: "
                                "lower budget_tokens / --budget") from exc
    if not reply.choices:
        raise BackendError(f"{base_url} answered without a choice")
    choice = reply.choices[0]
    usage = reply.usage
    return (choice.message.content or "", served_model, usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None, choice.finish_reason)


def ask(
    recording: Recording | str | os.PathLike,
    question: str,
    *,
    engine: Any = None,
    endpoint: str | None = None,
    served_model: str | None = None,
    api_key: str | None = None,
    processor: Any = None,
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    scheme: GroupScheme | None = None,
    sampling: Sampling = "uniform",
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    fps: float = 1.0,
    include_marks: bool = True,
    max_frames: int | None = None,
    timeout_s: float = 600.0,
) -> Answer:
    """Answer ``question`` about a recording (a directory, a video file or an open :class:`Recording`).

    Args:
        recording: what to ask about; a video file is sampled at ``fps`` frames per second.
        question: the question.
        engine: a local :class:`~giraffe_core.Engine`, or what :func:`giraffe_core.load` takes
            ("tiny", a directory, a hub id).
        endpoint: instead of ``engine``, an OpenAI-compatible server, e.g.
            ``"http://127.0.0.1:8000/v1"`` (``giraffe serve``, vLLM, sglang).
        served_model: the endpoint's model id (default: the first it lists).
        api_key: the endpoint's key (default ``$OPENAI_API_KEY``, else a placeholder).
        processor: the served model's processor, for exact counts with an endpoint; default the
            tiny preset's (Qwen2-VL image geometry, so visual tokens are exact for Qwen2/2.5-VL;
            its small vocabulary counts text tokens high, so the budget holds).
        budget_tokens: the most prompt tokens (for an engine, also at most its
            ``context_length - max_new_tokens``).
        scheme: the group scheme ``(L, m, s)``, default ``(4, 240, 3)``.
        sampling: "uniform" (even in time) or "change" (weighted by visual change).
        max_new_tokens: the longest answer, tokens.
        temperature: 0 for greedy decoding.
        fps: frames per second sampled from a video file.
        include_marks: show event marks as text lines.
        max_frames: use at most this many frames.
        timeout_s: endpoint request timeout, seconds.

    Raises:
        ConfigError: neither or both of ``engine`` and ``endpoint``.
        RecordingError: an unreadable or empty recording.
        InputError: a budget too small for even one frame.
        BackendError: the endpoint is unreachable, times out or refuses the request.
    """
    if (engine is None) == (endpoint is None):
        raise ConfigError("ask needs exactly one of engine= (a loaded engine or a model name) or endpoint= (a URL)",
                          hint="e.g. ask(rec, q, engine=giraffe_core.load('tiny', context_length=32768)) or "
                               "ask(rec, q, endpoint='http://127.0.0.1:8000/v1')")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    began = time.perf_counter()
    if not isinstance(recording, Recording):
        recording = Recording.open(recording, fps=fps)
    timings: dict[str, float] = {}
    if endpoint is None:
        if isinstance(engine, (str, os.PathLike)):
            from giraffe_core.engine import load

            loaded = time.perf_counter()
            engine = load(engine)
            timings["load_s"] = time.perf_counter() - loaded
        budget = min(budget_tokens, engine.context_length - max_new_tokens)
        if budget < budget_tokens:
            logger.info("budget capped at %d tokens: the model's context is %d and the answer may take %d",
                        budget, engine.context_length, max_new_tokens)
        if budget < 1:
            raise InputError(f"max_new_tokens={max_new_tokens} leaves no room in the model's context of "
                             f"{engine.context_length} tokens", hint="load the model with a larger context_length")
        planned = time.perf_counter()
        plan = plan_question(recording, question, processor=engine.processor, tokens=engine.tokens,
                             budget_tokens=budget, scheme=scheme, sampling=sampling, include_marks=include_marks,
                             max_frames=max_frames)
        timings["plan_s"] = time.perf_counter() - planned
        generated = time.perf_counter()
        result = engine.generate(plan.messages, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                 temperature=temperature if temperature > 0 else 1.0)
        timings["generate_s"] = time.perf_counter() - generated
        if result.prompt_tokens != plan.prompt_tokens:
            raise RuntimeError(f"bug: the engine read {result.prompt_tokens} prompt tokens, the plan counted "
                               f"{plan.prompt_tokens}")
        text, model, server_prompt, completion, finish = (result.text, engine.name, None, result.completion_tokens,
                                                          result.finish_reason)
        backend: Literal["engine", "endpoint"] = "engine"
    else:
        if processor is None:
            from giraffe_core.engine import tiny_processor

            processor = tiny_processor()
        planned = time.perf_counter()
        plan = plan_question(recording, question, processor=processor, budget_tokens=budget_tokens, scheme=scheme,
                             sampling=sampling, include_marks=include_marks, max_frames=max_frames)
        timings["plan_s"] = time.perf_counter() - planned
        generated = time.perf_counter()
        text, model, server_prompt, completion, finish = _ask_endpoint(
            plan, endpoint, served_model, api_key, max_new_tokens, temperature, timeout_s)
        timings["generate_s"] = time.perf_counter() - generated
        backend = "endpoint"
    timings["total_s"] = time.perf_counter() - began
    return Answer(
        question=question, text=text, citations=cite(text, plan.frames, duration=recording.duration),
        frames=plan.frames, prompt_tokens=plan.prompt_tokens, visual_tokens=plan.visual_tokens,
        completion_tokens=completion, server_prompt_tokens=server_prompt, budget_tokens=plan.budget_tokens,
        sampling=plan.sampling, scheme=plan.scheme, backend=backend, model=model, finish_reason=finish,
        recording=plan.recording, timings={k: round(v, 4) for k, v in timings.items()},
    )
