"""Run directories: what an agent run leaves on disk, written crash-safely, read back tolerantly.

A run directory ``OUT/`` holds::

    meta.json          task, start URL, backend, configs, start time, giraffe version
                       (written atomically when the run starts)
    trajectory.jsonl   one JSON line per model call (step and attempt), appended crash-safely:
                       one write per line, then flush and fsync
    frames/            every frame at full resolution as PNG (the run's TimelineMemory is created
                       with ``store=run.frames_dir``); records name frames by paths RELATIVE to OUT/
    result.json        status, answer, steps, tokens, durations (written atomically at the end;
                       absent when the run crashed)
    report.html        written on demand by :func:`giraffe_agent.report.write_report`

Atomic writes go to a temporary file in the same directory, are flushed and fsynced, and replace
the target with ``os.replace``, so a reader never sees half a ``meta.json`` or ``result.json``.
A SIGKILL during an append can leave at most a partial LAST line in ``trajectory.jsonl``;
:func:`read_run` skips it and says so, and every completed step stays readable.

Every :class:`StepRecord` carries the EXACT rendered context of its step
(:class:`StoredContext`): the chat the memory rendered, with each image part's payload replaced by
the frame's path relative to the run directory (``max_tokens``, ``tier`` and ``key`` kept), and
its token count. :func:`context_messages` turns it back into the input of
:func:`giraffe_core.frames.layout_chat`, which then gives the identical token sequence, so training
code sees exactly what the agent saw.

Redaction: a ``redact`` callable (``str -> str``, e.g. the safety module's secret redactor) is
applied by :class:`RunWriter` to every string written to ``meta.json``, ``trajectory.jsonl`` and
``result.json`` (keys included). Secrets are never part of a rendered context (they are named as
``{{secret:NAME}}`` and filled in only when typing), so redaction leaves stored contexts intact.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from giraffe_agent.coords import CoordinateTransform
from giraffe_core.errors import GiraffeError

if TYPE_CHECKING:
    from giraffe_agent.backends.base import Completion
    from giraffe_agent.envs.base import ActResult, Observation
    from giraffe_core.memory import FrameItem, RenderedContext

__all__ = [
    "ActInfo",
    "Durations",
    "FRAMES_DIR",
    "FrameRef",
    "META_FILE",
    "ParseInfo",
    "RESULT_FILE",
    "Run",
    "RunMeta",
    "RunResult",
    "RunWriter",
    "StepRecord",
    "StepTokens",
    "StoredContext",
    "TRAJECTORY_FILE",
    "Timings",
    "TrajectoryError",
    "context_messages",
    "read_run",
    "replace_atomic",
    "set_aside",
    "write_json_atomic",
]

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
TRAJECTORY_FILE = "trajectory.jsonl"
RESULT_FILE = "result.json"
FRAMES_DIR = "frames"
#: version of the run-directory format written here
FORMAT_VERSION = 1

Redactor = Callable[[str], str]


class TrajectoryError(GiraffeError, OSError):
    """A run directory cannot be written or read: it already holds a run, a file is corrupt in a
    way a crash cannot explain, or a frame it names is missing."""

    code = "trajectory-error"


def _identity(text: str) -> str:
    return text


def _giraffe_version() -> str:
    import giraffe_core

    return str(giraffe_core.__version__)


# --------------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunMeta(_Model):
    """``meta.json``: what the run was asked to do and how.

    Attributes:
        task: the task given to the agent.
        start_url: the first page, when the environment is a browser.
        backend: the backend's ``name`` (``"local:tiny"``, ``"openai:MODEL"``, ``"scripted"``...).
        model: the model id or path, when known.
        config: configuration dicts by name (``{"memory": ..., "safety": ..., "loop": ...}``).
        started_at: start of the run, seconds since the epoch.
        giraffe_version: the SDK version that wrote the run.
        format: the run-directory format version.
    """

    format: int = FORMAT_VERSION
    task: str
    start_url: str | None = None
    backend: str
    model: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    started_at: float = Field(default_factory=time.time)
    giraffe_version: str = Field(default_factory=_giraffe_version)


class ParseInfo(_Model):
    """How the raw output parsed: ``ok``, the ``style`` recognised (``"json"``, ``"qwen"``,
    ``"uitars"``...) and, when it failed, the ``error`` feedback given to the model."""

    ok: bool
    style: str | None = None
    error: str | None = None


class ActInfo(_Model):
    """What executing the action did: ``ok`` and the environment's ``message``."""

    ok: bool
    message: str = ""


class Timings(_Model):
    """Wall times of one step, seconds: the model call, the action, and the whole step."""

    model_s: float | None = None
    act_s: float | None = None
    step_s: float | None = None


class StepTokens(_Model):
    """Token counts of one model call.

    Attributes:
        prompt: prompt tokens the backend reported (else the rendered context's exact count).
        completion: generated tokens, when known.
        reused: prompt tokens served from a KV cache, when known.
        tiers: prompt tokens per tier ("full", "low", "text", "other") from the memory's record.
        frames_per_tier: frames at each tier ("full", "low", "text", "evicted").
        budget: the memory's token budget; ``demoted_by_budget``: demotions the budget forced.
    """

    prompt: int | None = None
    completion: int | None = None
    reused: int | None = None
    tiers: dict[str, int] = Field(default_factory=dict)
    frames_per_tier: dict[str, int] = Field(default_factory=dict)
    budget: int | None = None
    demoted_by_budget: int = 0


class FrameRef(_Model):
    """A frame shown (as an image) in a step's context.

    Attributes:
        id: the memory's frame id (``"f00003"``), when known.
        path: the full-resolution PNG, relative to the run directory (``"frames/f00003-....png"``).
        step: the step the frame belongs to, when known.
        tier: the tier it was shown at ("full" or "low").
        max_tokens: its visual-token budget.
        size: (width, height) it was resized to for the model, pixels.
        tokens: visual tokens it took (wrappers excluded).
    """

    id: str | None = None
    path: str
    step: int | None = None
    tier: str | None = None
    max_tokens: int | None = None
    size: tuple[int, int] | None = None
    tokens: int | None = None


class StoredContext(_Model):
    """The exact context of one model call, as stored in a trajectory.

    ``messages`` is the rendered chat with every image part's ``image`` replaced by the frame's
    path relative to the run directory (other keys, ``max_tokens``, ``tier``, ``key``, kept);
    ``token_count`` is the prompt length in tokens; ``add_generation_prompt`` whether the layout
    ended with the assistant prompt. :func:`context_messages` rebuilds the
    :func:`~giraffe_core.frames.layout_chat` input.
    """

    messages: list[dict[str, Any]]
    token_count: int
    add_generation_prompt: bool = True

    @classmethod
    def from_rendered(cls, context: RenderedContext, run_dir: str | os.PathLike,
                      *, add_generation_prompt: bool = True) -> StoredContext:
        """Store ``context`` (a :class:`~giraffe_core.memory.RenderedContext`) for a run in ``run_dir``.

        Image payloads that are files inside ``run_dir`` become relative paths; any other payload
        (a file elsewhere, a PIL image, bytes) is first copied losslessly into ``run_dir/frames/``
        as ``ext-<pixel digest>.png``, so the run directory is always self-contained.
        """
        messages, _ = _store_messages(context.messages, Path(run_dir))
        return cls(messages=messages, token_count=int(context.token_count),
                   add_generation_prompt=add_generation_prompt)


class StepRecord(_Model):
    """One line of ``trajectory.jsonl``: one model call (a step, or a retry of it after a parse error).

    Attributes:
        step: the agent step, from 0; ``attempt``: 0, then 1, 2... after parse errors.
        wall_time: when the record was made, seconds since the epoch.
        raw_output: the model's text, exactly as the backend returned it.
        parse: how it parsed.
        action: the parsed action as its canonical dict (``model_dump(mode="json")``), or ``None``.
        result: what executing it did, or ``None`` when nothing was executed.
        frame_id, frame_path: the current frame (the screenshot the action's coordinates refer
            to), its path relative to the run directory.
        transform: that frame's :class:`~giraffe_agent.coords.CoordinateTransform` as the model saw it.
        frames: every frame shown as an image in this step's context, in order.
        url, title: the page when the step was observed.
        events: what the environment reported (blocked requests, refused downloads, dialogs).
        timings: model, action and step wall times, seconds.
        tokens: prompt, completion and reused tokens, and the memory's tokens and frames per tier.
        context: the exact rendered context of the call (see :class:`StoredContext`).
    """

    step: int = Field(ge=0)
    attempt: int = Field(0, ge=0)
    wall_time: float = Field(default_factory=time.time)
    raw_output: str
    parse: ParseInfo
    action: dict[str, Any] | None = None
    result: ActInfo | None = None
    frame_id: str | None = None
    frame_path: str | None = None
    transform: CoordinateTransform | None = None
    frames: list[FrameRef] = Field(default_factory=list)
    url: str | None = None
    title: str | None = None
    events: list[str] = Field(default_factory=list)
    timings: Timings = Field(default_factory=Timings)
    tokens: StepTokens = Field(default_factory=StepTokens)
    context: StoredContext | None = None

    @classmethod
    def build(
        cls,
        run_dir: str | os.PathLike,
        *,
        step: int,
        raw_output: str,
        parse: ParseInfo,
        attempt: int = 0,
        context: RenderedContext | None = None,
        frames: Sequence[FrameItem] = (),
        action: BaseModel | dict[str, Any] | None = None,
        result: ActResult | ActInfo | None = None,
        observation: Observation | None = None,
        transform: CoordinateTransform | None = None,
        completion: Completion | None = None,
        timings: Timings | None = None,
        events: Sequence[str] | None = None,
        add_generation_prompt: bool = True,
    ) -> StepRecord:
        """A record from the loop's own objects.

        Args:
            run_dir: the run directory (frame paths are made relative to it).
            step, attempt, raw_output, parse: as in the attributes.
            context: the step's :class:`~giraffe_core.memory.RenderedContext`; stored exactly.
            frames: the memory's frames (``memory.frames``): give the shown frames their ids and
                steps; the newest is the current frame.
            action: the parsed action (a pydantic action or its dict).
            result: the environment's :class:`~giraffe_agent.envs.base.ActResult`.
            observation: the observation the model saw (URL, title, events).
            transform: the current frame's transform as the model saw it.
            completion: the backend's :class:`~giraffe_agent.backends.base.Completion` (tokens).
            timings: wall times of the step, seconds.
            events: events to record (default: the observation's).
            add_generation_prompt: whether the context was laid out with the assistant prompt.
        """
        run_dir = Path(run_dir)
        by_path = {_real(f.path): f for f in frames}
        refs: list[FrameRef] = []
        stored: StoredContext | None = None
        step_tokens = StepTokens()
        if context is not None:
            messages, rels = _store_messages(context.messages, run_dir)
            stored = StoredContext(messages=messages, token_count=int(context.token_count),
                                   add_generation_prompt=add_generation_prompt)
            plans = context.layout.plan.frames if context.layout.plan is not None else ()
            for part, rel, plan in zip(context.layout.parts, rels, plans):
                payload = part.get("image")
                item = by_path.get(_real(payload)) if isinstance(payload, (str, os.PathLike)) else None
                refs.append(FrameRef(id=item.id if item else None, path=rel, step=item.step if item else None,
                                     tier=part.get("tier"), max_tokens=plan.max_tokens, size=plan.size,
                                     tokens=plan.tokens))
            record = context.record
            step_tokens = StepTokens(prompt=int(context.token_count), tiers=dict(record.tokens),
                                     frames_per_tier=dict(record.frames_per_tier), budget=record.budget_tokens,
                                     demoted_by_budget=record.demoted_by_budget)
        if completion is not None:
            if completion.prompt_tokens is not None:
                step_tokens.prompt = completion.prompt_tokens
            step_tokens.completion = completion.completion_tokens
            step_tokens.reused = completion.reused_tokens
        current = frames[-1] if frames else None
        action_dict: dict[str, Any] | None = None
        if action is not None:
            dumped = action.model_dump(mode="json") if isinstance(action, BaseModel) else dict(action)
            action_dict = {"action": dumped["action"], **dumped} if "action" in dumped else dumped  # tag first
        act = None
        if result is not None:
            act = result if isinstance(result, ActInfo) else ActInfo(ok=bool(result.ok), message=str(result.message))
        return cls(
            step=step, attempt=attempt, raw_output=raw_output, parse=parse, action=action_dict, result=act,
            frame_id=current.id if current else None,
            frame_path=_relative_frame(current.path, run_dir) if current else None,
            transform=transform, frames=refs,
            url=observation.url if observation else None, title=observation.title if observation else None,
            events=list(events if events is not None else (observation.events if observation else [])),
            timings=timings or Timings(), tokens=step_tokens, context=stored,
        )


class Durations(_Model):
    """Wall times of a run, seconds: the whole run, and the sums over steps of model calls and actions."""

    total_s: float | None = None
    model_s: float = 0.0
    act_s: float = 0.0


class RunResult(_Model):
    """``result.json``: how the run ended.

    Attributes:
        status: how it ended (the loop's word: "done", "failed", "max_steps", "timeout", "loop",
            "error"...).
        answer: the answer, when the task asked a question and the agent gave one.
        error: what went wrong, when the run ended on an error.
        steps: steps taken.
        prompt_tokens, completion_tokens, reused_tokens: sums over model calls (known counts only).
        tokens_per_tier: prompt tokens per tier, summed over model calls.
        frames_per_tier: frames at each tier at the last step.
        durations: wall times, seconds.
        info: the environment's facts at the end (e.g. a task's reward), never shown to the model.
        finished_at: end of the run, seconds since the epoch.
    """

    status: str
    answer: str | None = None
    error: str | None = None
    steps: int = Field(0, ge=0)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reused_tokens: int = 0
    tokens_per_tier: dict[str, int] = Field(default_factory=dict)
    frames_per_tier: dict[str, int] = Field(default_factory=dict)
    durations: Durations = Field(default_factory=Durations)
    info: dict[str, Any] = Field(default_factory=dict)
    finished_at: float = Field(default_factory=time.time)

    @classmethod
    def from_steps(cls, records: Iterable[StepRecord], *, status: str, answer: str | None = None,
                   error: str | None = None, total_s: float | None = None,
                   info: dict[str, Any] | None = None) -> RunResult:
        """The result of a run whose model calls were ``records``: steps, token sums and durations."""
        records = list(records)
        per_tier: dict[str, int] = {}
        for r in records:
            for tier, n in r.tokens.tiers.items():
                per_tier[tier] = per_tier.get(tier, 0) + n
        return cls(
            status=status, answer=answer, error=error,
            steps=len({r.step for r in records}),
            prompt_tokens=sum(r.tokens.prompt or 0 for r in records),
            completion_tokens=sum(r.tokens.completion or 0 for r in records),
            reused_tokens=sum(r.tokens.reused or 0 for r in records),
            tokens_per_tier=per_tier,
            frames_per_tier=dict(records[-1].tokens.frames_per_tier) if records else {},
            durations=Durations(total_s=total_s, model_s=sum(r.timings.model_s or 0.0 for r in records),
                                act_s=sum(r.timings.act_s or 0.0 for r in records)),
            info=dict(info or {}),
        )


# --------------------------------------------------------------------------------------------------
# frames and contexts
# --------------------------------------------------------------------------------------------------


def _real(path: Any) -> str:
    return os.path.realpath(os.fspath(path))


def _relative_frame(payload: Any, run_dir: Path) -> str:
    """The run-relative POSIX path of an image payload; payloads outside ``run_dir`` are copied in."""
    root = _real(run_dir)
    if isinstance(payload, (str, os.PathLike)):
        real = _real(payload)
        if real.startswith(root + os.sep):
            return Path(os.path.relpath(real, root)).as_posix()
    from giraffe_core.frames import load_image
    from giraffe_core.memory import FrameStore, pixel_digest

    image = load_image(payload)
    name = f"ext-{pixel_digest(image)[:16]}"
    frames = run_dir / FRAMES_DIR
    if not (frames / f"{name}.png").exists():
        logger.warning("an image of the context is not in the run directory; copied to %s/%s.png "
                       "(create the memory with store=run.frames_dir to avoid copies)", frames, name)
        FrameStore(frames).save(name, image)
    return f"{FRAMES_DIR}/{name}.png"


def _is_image_part(part: Any) -> bool:
    return isinstance(part, dict) and (part.get("type") == "image" or "image" in part)


def _store_messages(messages: Sequence[dict], run_dir: Path) -> tuple[list[dict], list[str]]:
    """A JSON-ready copy of a chat with image payloads as run-relative paths, and those paths in order."""
    out, rels = [], []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            parts = []
            for part in content:
                if _is_image_part(part):
                    rel = _relative_frame(part["image"], run_dir)
                    rels.append(rel)
                    parts.append({k: (rel if k == "image" else copy.deepcopy(v)) for k, v in part.items()})
                else:
                    parts.append(copy.deepcopy(part))
            content = parts
        out.append({**{k: copy.deepcopy(v) for k, v in message.items() if k != "content"}, "content": content})
    return out, rels


def _inside(run_dir: Path, rel: str, what: str) -> Path:
    """``run_dir / rel``, refusing paths that leave the run directory or do not exist."""
    root = Path(_real(run_dir))
    path = Path(_real(root / rel))
    if root not in path.parents:
        raise TrajectoryError(f"{what}: frame path {rel!r} points outside the run directory {root}")
    if not path.is_file():
        raise TrajectoryError(f"{what}: frame {rel!r} is missing from the run directory {root}",
                              hint="copy the whole run directory, frames/ included")
    return path


def context_messages(record: StepRecord | StoredContext, run_dir: str | os.PathLike) -> list[dict]:
    """The stored context of ``record`` as input for :func:`giraffe_core.frames.layout_chat`.

    Image parts get the absolute path of their frame in ``run_dir``; everything else is as the
    memory rendered it, so ``layout_chat(processor, context_messages(r, d), tokens,
    add_generation_prompt=stored.add_generation_prompt).input_ids`` equals the ``input_ids`` the
    model read at that step.

    Raises:
        TrajectoryError: the record has no context, or a frame is missing or outside ``run_dir``.
    """
    stored = record.context if isinstance(record, StepRecord) else record
    where = f"step {record.step} attempt {record.attempt}" if isinstance(record, StepRecord) else "context"
    if stored is None:
        raise TrajectoryError(f"{where}: the record holds no rendered context")
    out = []
    for message in stored.messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [{**part, "image": str(_inside(Path(run_dir), part["image"], where))}
                       if _is_image_part(part) else dict(part) for part in content]
        out.append({**message, "content": content})
    return out


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def _redacted(value: Any, redact: Redactor) -> Any:
    """``value`` with ``redact`` applied to every string in it (dict keys included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {(redact(k) if isinstance(k, str) else k): _redacted(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, redact) for v in value]
    return value


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform can open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory, flushed and
    fsynced, then ``os.replace`` (and the directory fsynced). Readers see the old file or the new
    one, never a part. Raises ``OSError``; the temporary file is removed on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (:func:`replace_atomic`).

    Raises:
        TrajectoryError: the file cannot be written.
    """
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    try:
        return replace_atomic(path, text.encode("utf-8"))
    except OSError as exc:
        raise TrajectoryError(f"cannot write {path}: {exc}") from exc


def set_aside(run_dir: str | os.PathLike, aside_dir: str | os.PathLike) -> Path | None:
    """Move ``run_dir`` (when it exists) into ``aside_dir`` as ``NAME-K``, K the first free number
    from 1, so an earlier attempt is kept, never overwritten; returns its new path."""
    run_dir, aside_dir = Path(run_dir), Path(aside_dir)
    if not run_dir.exists():
        return None
    aside_dir.mkdir(parents=True, exist_ok=True)
    k = 1
    while (aside_dir / f"{run_dir.name}-{k}").exists():
        k += 1
    return run_dir.rename(aside_dir / f"{run_dir.name}-{k}")


class RunWriter:
    """Writes a run directory (see the module doc). Use :meth:`create`; close it (or use ``with``).

    Attributes:
        directory: the run directory; ``frames_dir``: its ``frames/`` (give it to the memory as
            ``store``); ``steps_written``: lines appended so far.
    """

    def __init__(self, directory: str | os.PathLike, *, redact: Redactor | None = None) -> None:
        self.directory = Path(directory)
        self.frames_dir = self.directory / FRAMES_DIR
        self.redact: Redactor = redact or _identity
        self.steps_written = 0
        self._fd: int | None = None

    @classmethod
    def create(cls, directory: str | os.PathLike, *, redact: Redactor | None = None) -> RunWriter:
        """Make ``directory`` (and ``frames/``) and open its trajectory for appending.

        Args:
            directory: the run directory; it may exist but must not already hold a run.
            redact: applied to every string written (default: none).

        Raises:
            TrajectoryError: the directory already holds a run, or cannot be created.
        """
        writer = cls(directory, redact=redact)
        existing = [n for n in (META_FILE, TRAJECTORY_FILE, RESULT_FILE) if (writer.directory / n).exists()]
        if existing:
            raise TrajectoryError(f"{writer.directory} already holds a run ({', '.join(existing)})",
                                  hint="choose a new output directory (--out) for every run")
        try:
            writer.frames_dir.mkdir(parents=True, exist_ok=True)
            writer._fd = os.open(writer.directory / TRAJECTORY_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise TrajectoryError(f"cannot create the run directory {writer.directory}: {exc}") from exc
        _fsync_dir(writer.directory)
        return writer

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dump(self, model: BaseModel) -> Any:
        return _redacted(model.model_dump(mode="json"), self.redact)

    def write_meta(self, meta: RunMeta) -> Path:
        """Write ``meta.json`` atomically (redacted); returns its path."""
        return write_json_atomic(self.directory / META_FILE, self._dump(meta))

    def append_step(self, record: StepRecord) -> None:
        """Append ``record`` as one JSON line (redacted), then flush and fsync.

        The line goes out in one ``write`` (repeated only if the OS writes part of it), so a crash
        leaves at most this last line partial.

        Raises:
            TrajectoryError: the writer is closed, or the disk refused the line.
        """
        if self._fd is None:
            raise TrajectoryError(f"the run writer of {self.directory} is closed")
        line = json.dumps(self._dump(record), ensure_ascii=False, separators=(",", ":")) + "\n"
        data = memoryview(line.encode("utf-8"))
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
            os.fsync(self._fd)
        except OSError as exc:
            raise TrajectoryError(f"cannot append step {record.step} to {self.directory / TRAJECTORY_FILE}: "
                                  f"{exc}") from exc
        self.steps_written += 1

    def write_result(self, result: RunResult) -> Path:
        """Write ``result.json`` atomically (redacted); returns its path."""
        return write_json_atomic(self.directory / RESULT_FILE, self._dump(result))

    def close(self) -> None:
        """Close the trajectory file; safe to call twice."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A run directory read back by :func:`read_run`.

    Attributes:
        directory: the run directory.
        meta: ``meta.json``.
        steps: every complete line of ``trajectory.jsonl``, in order.
        result: ``result.json``, or ``None`` when the run did not finish (crashed or still running).
        skipped_lines: lines of ``trajectory.jsonl`` that could not be read (a crash leaves at most one).
        warnings: why each was skipped.
    """

    directory: Path
    meta: RunMeta
    steps: list[StepRecord]
    result: RunResult | None = None
    skipped_lines: int = 0
    warnings: list[str] = field(default_factory=list)

    def path(self, relative: str) -> Path:
        """The absolute path of a run-relative frame path (refused if it leaves the run directory)."""
        return _inside(self.directory, relative, "run")


def _read_json(path: Path, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise TrajectoryError(f"cannot read {path}: {exc}") from exc


def read_run(directory: str | os.PathLike, *, strict: bool = True) -> Run:
    """Read a run directory.

    A last line of ``trajectory.jsonl`` that is incomplete (a crash mid-write) is skipped and
    counted in ``Run.skipped_lines``. An unreadable line BEFORE the last one cannot come from a
    crash: it raises with ``strict`` (the default) and is skipped otherwise.

    Raises:
        TrajectoryError: no ``meta.json``, an unreadable ``meta.json``/``result.json``, or (strict)
            a corrupt line in the middle of the trajectory.
    """
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise TrajectoryError(f"{directory} is not a run directory: it has no {META_FILE}",
                              hint="pass the --out directory of a run")
    meta = _read_json(meta_path, RunMeta)
    result_path = directory / RESULT_FILE
    result = _read_json(result_path, RunResult) if result_path.is_file() else None
    steps: list[StepRecord] = []
    warnings: list[str] = []
    trajectory = directory / TRAJECTORY_FILE
    data = trajectory.read_bytes() if trajectory.is_file() else b""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline: no partial tail
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            steps.append(StepRecord.model_validate_json(raw))
        except ValidationError as exc:
            last = number == len(lines)
            why = f"{TRAJECTORY_FILE} line {number}: " + ("incomplete last line (the run was interrupted "
                                                          "while writing it)" if last else f"unreadable: {exc}")
            if not last and strict:
                raise TrajectoryError(why, hint="read_run(..., strict=False) skips corrupt lines") from exc
            logger.warning("%s: %s", directory, why)
            warnings.append(why)
    return Run(directory, meta, steps, result, len(warnings), warnings)
