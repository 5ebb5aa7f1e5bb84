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
``system``. (LLaMA-Factory and ms-swift records, ``videos: [...]`` with images alongside, are read
by :mod:`training.data.formats` and expanded here by :func:`expand_videos`.)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from giraffe_core.errors import GiraffeError
from giraffe_core.resolution import GroupScheme, VisionGeometry, plan_groups
from training.data.chat import LLAVA, Dialect, family_hint, parse_chat
from training.data.examples import DataLog, Example
from training.data.media import BadRecord
from training.data.readers import source_records

__all__ = ["VideoSettings", "expand_videos", "read_video_qa", "video_frames"]

_FIELDS = {"id", "source", "system", "video", "questions", "conversations", "messages"}
_VIDEO_QA = Dialect("video_qa", frozenset({"id", "source", "system", "conversations", "messages", "videos"}),
                    LLAVA.roles, videos=True, text_category="video")


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


@dataclass(frozen=True)
class VideoSettings:
    """How videos become frames: sampling rate (frames per second of video), the most frames per
    video, the hybrid-resolution scheme, the model's geometry and where decoded frames are stored."""

    frames_dir: Path
    geometry: VisionGeometry
    fps: float = 2.0
    max_frames: int = 768
    scheme: GroupScheme = field(default_factory=GroupScheme)


def expand_videos(messages: list[dict], settings: VideoSettings | None) -> list[dict]:
    """``messages`` with every ``{"type": "video", "video": path}`` part replaced by its frames
    (:func:`video_frames`).

    Raises:
        BadRecord: a video cannot be read, or ``settings`` is ``None`` while the chat has videos.
    """
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str) or not any(p["type"] == "video" for p in content):
            out.append(message)
            continue
        if settings is None:
            raise BadRecord("a video, but no video settings were given to the reader")
        parts: list[dict] = []
        for part in content:
            if part["type"] != "video":
                parts.append(part)
                continue
            try:
                parts += video_frames(part["video"], settings.frames_dir, fps=settings.fps,
                                      max_frames=settings.max_frames, geometry=settings.geometry,
                                      scheme=settings.scheme)
            except GiraffeError as exc:
                raise BadRecord(f"unreadable video: {exc.message}") from exc
        out.append({**message, "content": parts})
    return out


def _qa_dialogue(record: dict, video: Path) -> list[dict]:
    """The chat of a ``questions`` record: the video, then each question and answer as turns."""
    messages: list[dict] = []
    if isinstance(record.get("system"), str) and record["system"]:
        messages.append({"role": "system", "content": record["system"]})
    questions = record["questions"]
    if not isinstance(questions, list) or not questions:
        raise BadRecord("empty conversation: no questions")
    for i, qa in enumerate(questions):
        if not isinstance(qa, dict) or set(qa) - {"question", "answer"}:
            raise BadRecord(f"question {i} must be an object with question and answer only")
        question, answer = qa.get("question"), qa.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str) or not question or not answer:
            raise BadRecord(f"question {i} needs a non-empty question and answer")
        content = ([{"type": "video", "video": video}] if i == 0 else []) + [{"type": "text", "text": question}]
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
    return messages


def _dialogue(record: dict, video: Path, root: Path) -> list[dict]:
    """The chat of one record, the video where ``<video>`` is (or opening the first user turn)."""
    if "questions" in record:
        return _qa_dialogue(record, video)
    chat = {k: v for k, v in record.items() if k != "video"}
    return parse_chat({**chat, "videos": [str(video.absolute())]}, root, _VIDEO_QA).messages


def read_video_qa(path: str | Path, log: DataLog, *, label: str, frames_dir: Path, geometry: VisionGeometry,
                  video_root: str | None = None, fps: float = 2.0, max_frames: int = 768,
                  scheme: GroupScheme | None = None, category: str | None = None,
                  max_samples: int | None = None) -> list[Example]:
    """Read a video QA JSON / JSONL file (see the module docstring); one sample per record."""
    path = Path(path)
    root = Path(video_root) if video_root else path.parent
    settings = VideoSettings(frames_dir, geometry, fps, max_frames, scheme or GroupScheme())
    out: list[Example] = []
    for line, record in source_records(path, log, label, out, max_samples):
        try:
            if isinstance(record, BadRecord):
                raise record
            if not isinstance(record, dict):
                raise BadRecord(f"a record must be an object, got {type(record).__name__}")
            unknown = set(record) - _FIELDS
            if unknown:
                raise BadRecord(f"unknown field(s): {sorted(unknown)}{family_hint(unknown, _VIDEO_QA)}")
            value: Any = record.get("video")
            if not isinstance(value, str) or not value:
                raise BadRecord("no video path")
            video = Path(value) if os.path.isabs(value) else root / value
            if not video.is_file():
                raise BadRecord(f"missing video: {video}")
            messages = expand_videos(_dialogue(record, video, root), settings)
        except BadRecord as exc:
            log.bad(label, path, line, str(exc))
            continue
        out.append(Example(messages, f"{path}:{line}", category or "video"))
    return out
