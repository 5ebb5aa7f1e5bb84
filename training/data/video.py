"""Video QA: ``{"video": "clip.mp4", "questions": [...]}`` records -> dialogues over sampled frames.

Each video is opened with :class:`giraffe_agent.recording.Recording` (PyAV, the ``agent`` extra),
sampled at ``fps`` (the paper: 2 frames per second), thinned evenly to at most ``max_frames``, and
tiered with the hybrid-resolution group scheme :func:`giraffe_core.resolution.plan_groups`: frame
``i`` gets ``m`` visual tokens when ``i % L == 0`` and ``m / s`` otherwise. Frames enter the chat
as images, each after a ``[t=HH:MM:SS]`` caption, as Giraffe feeds recordings at inference
(:mod:`giraffe_core.frames`), so training and inference see the same layout.

Decoded frames are written once (PNG, atomically) under ``frames_dir/<video stem>-<digest>/``;
the digest covers the video's path, size and modification time and the sampling settings, so a
changed video or setting decodes again and concurrent readers never see half a file.

Record forms: ``questions: [{"question": ..., "answer": ...}]`` (one dialogue per video: the
frames, then each question and answer as turns), or ``conversations``/``messages`` whose first
user turn holds a ``<video>`` tag (or none: the frames open it). Also allowed: ``id``, ``source``,
``system``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from giraffe_core.errors import GiraffeError
from giraffe_core.resolution import GroupScheme, VisionGeometry, plan_groups
from training.data.examples import DataLog, Example
from training.data.readers import BadRecord, chat_from_record, source_records

__all__ = ["read_video_qa", "video_frames"]

_FIELDS = {"id", "source", "system", "video", "questions", "conversations", "messages"}
_TAG = "<video>"


def _evenly(count: int, keep: int) -> list[int]:
    """``keep`` indices spread evenly over ``range(count)`` (all of them when ``keep >= count``)."""
    if keep >= count:
        return list(range(count))
    return [round(i * (count - 1) / (keep - 1)) for i in range(keep)] if keep > 1 else [0]


def video_frames(video: Path, frames_dir: Path, *, fps: float, max_frames: int, geometry: VisionGeometry,
                 scheme: GroupScheme) -> list[dict]:
    """Content parts for a video: a ``[t=...]`` caption and an image part (with its tier's
    ``max_tokens``) per sampled frame. Frames are decoded once into ``frames_dir``.

    Raises:
        GiraffeError: the video cannot be read (``RecordingError``) or PyAV is missing.
    """
    from giraffe_agent.recording import Recording, format_timestamp

    recording = Recording.open(video, fps=fps)
    chosen = _evenly(len(recording), max_frames)
    if not chosen:
        raise BadRecord(f"the video {video} has no frames")
    plan = plan_groups([recording[i].size for i in chosen], geometry, scheme)
    stat = video.stat()
    key = f"{video.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{fps}|{max_frames}"
    folder = frames_dir / f"{video.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    paths = [folder / f"{k:05d}.png" for k in range(len(chosen))]
    missing = [k for k, p in enumerate(paths) if not p.is_file()]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        by_index = {chosen[k]: k for k in missing}
        for index, image in recording.images(by_index):
            target = paths[by_index[index]]
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            image.save(tmp, format="PNG")
            os.replace(tmp, target)
    parts: list[dict] = []
    for k, frame in enumerate(plan.frames):
        t = recording[chosen[k]].t
        parts.append({"type": "text", "text": f"[t={format_timestamp(t)}]\n"})
        parts.append({"type": "image", "image": str(paths[k]), "max_tokens": frame.max_tokens, "tier": frame.tier})
    return parts


def _dialogue(record: dict, frames: list[dict]) -> list[dict]:
    """The chat of one record, with the video's frame parts where ``<video>`` is (or first)."""
    messages: list[dict] = []
    if isinstance(record.get("system"), str) and record["system"]:
        messages.append({"role": "system", "content": record["system"]})
    if "questions" in record:
        questions = record["questions"]
        if not isinstance(questions, list) or not questions:
            raise BadRecord("empty conversation: no questions")
        for i, qa in enumerate(questions):
            if not isinstance(qa, dict) or set(qa) - {"question", "answer"}:
                raise BadRecord(f"question {i} must be an object with question and answer only")
            question, answer = qa.get("question"), qa.get("answer")
            if not isinstance(question, str) or not isinstance(answer, str) or not question or not answer:
                raise BadRecord(f"question {i} needs a non-empty question and answer")
            content = ([*frames] if i == 0 else []) + [{"type": "text", "text": question}]
            messages += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
        return messages
    chat = chat_from_record({k: v for k, v in record.items() if k not in ("video", "system")}, Path("."))
    messages += chat
    first = next((m for m in messages if m["role"] == "user"), None)
    if first is None:
        raise BadRecord("no user turn to hold the video")
    for i, part in enumerate(first["content"]):
        if part["type"] == "text" and _TAG in part["text"]:
            before, after = part["text"].split(_TAG, 1)
            pieces = ([{"type": "text", "text": before}] if before else []) + frames + \
                ([{"type": "text", "text": after.removeprefix("\n")}] if after.strip() else [])
            first["content"][i:i + 1] = pieces
            break
    else:
        first["content"][:0] = frames
    return messages


def read_video_qa(path: str | Path, log: DataLog, *, label: str, frames_dir: Path, geometry: VisionGeometry,
                  video_root: str | None = None, fps: float = 2.0, max_frames: int = 768,
                  scheme: GroupScheme | None = None, category: str | None = None,
                  max_samples: int | None = None) -> list[Example]:
    """Read a video QA JSON / JSONL file (see the module docstring); one sample per record."""
    path = Path(path)
    root = Path(video_root) if video_root else path.parent
    scheme = scheme or GroupScheme()
    out: list[Example] = []
    for line, record in source_records(path, log, label, out, max_samples):
        try:
            if isinstance(record, BadRecord):
                raise record
            if not isinstance(record, dict):
                raise BadRecord(f"a record must be an object, got {type(record).__name__}")
            unknown = set(record) - _FIELDS
            if unknown:
                raise BadRecord(f"unknown field(s): {sorted(unknown)}")
            value: Any = record.get("video")
            if not isinstance(value, str) or not value:
                raise BadRecord("no video path")
            video = Path(value) if os.path.isabs(value) else root / value
            if not video.is_file():
                raise BadRecord(f"missing video: {video}")
            try:
                frames = video_frames(video, frames_dir, fps=fps, max_frames=max_frames, geometry=geometry,
                                      scheme=scheme)
            except GiraffeError as exc:
                raise BadRecord(f"unreadable video: {exc.message}") from exc
            messages = _dialogue(record, frames)
        except BadRecord as exc:
            log.bad(label, path, line, str(exc))
            continue
        out.append(Example(messages, f"{path}:{line}", category or "video"))
    return out
