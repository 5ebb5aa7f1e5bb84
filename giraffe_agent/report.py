"""A self-contained HTML report of a run directory: ``report.html`` next to its trajectory.

The page needs nothing else: frames are embedded as base64 JPEG thumbnails, the CSS is inline and
there is no script. It shows the task, status, answer, steps and tokens, then for every model call
(step and attempt) the current frame with the action drawn where it lands (a circle for clicks,
typing and selects, a line for drags, an arrow for scrolls), the raw output, the parse result, the
action, what executing it did, the memory's tiers and tokens, timings and events (blocked
requests...). It works on crashed runs (no ``result.json``) and runs without steps.

Overlays: the frame is an SVG whose coordinate system is the full-resolution screenshot's pixels;
a model position goes through the frame's stored
:class:`~giraffe_agent.coords.CoordinateTransform` (``to_screenshot``), rescaled when the stored
PNG is not exactly ``transform.screenshot_px``. Everything from the run (model output, titles,
URLs, messages) is HTML-escaped.

A run directory may come from someone else, so nothing in it can crash the report or make it
unbounded: a frame's file size and pixel count are checked before it is decoded (only PNG, JPEG
and WebP are opened), a frame over the limits or that does not decode is named instead of shown,
the thumbnails together embed at most :data:`MAX_EMBEDDED_BYTES`, long model outputs are cut,
and an impossible geometry (a 0x0 viewport) or time draws no overlay or date instead of raising.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from giraffe_agent.trajectory import Run, StepRecord, TrajectoryError, read_run

__all__ = ["REPORT_FILE", "overlay_points", "write_report"]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
#: largest width and height of an embedded thumbnail, pixels
THUMB_WIDTH = 960
THUMB_MAX_HEIGHT = 2400
#: largest frame file decoded, bytes, and largest frame decoded, pixels (a 4K screen at 2x is 33 M)
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_FRAME_PIXELS = 40_000_000
#: the thumbnails of one report together embed at most this many bytes (base64 excluded)
MAX_EMBEDDED_BYTES = 64 * 1024 * 1024
#: longest model output shown per step, characters
MAX_SHOWN_CHARS = 20_000
#: the image formats a frame may have (what the SDK writes, and JPEG/WebP); others are not decoded
FRAME_FORMATS = ("PNG", "JPEG", "WEBP")
#: what decoding a hostile or broken image can raise besides OSError
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d1f23}
header{background:#1f2a44;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:20px}
header table td{padding:2px 12px 2px 0;vertical-align:top}
main{padding:16px 28px;max-width:1500px}
section.step{background:#fff;border:1px solid #d9dce1;border-radius:6px;margin:0 0 18px;padding:14px;
display:grid;grid-template-columns:minmax(320px,3fr) minmax(280px,2fr);gap:16px}
section.step h2{grid-column:1/-1;margin:0;font-size:16px}
svg.frame{width:100%;height:auto;border:1px solid #ccd;background:#eee}
.mark{fill:rgba(255,40,40,.25);stroke:#ff2020;stroke-width:3}
.path{stroke:#ff2020;stroke-width:4;fill:none}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f9;border:1px solid #e3e3e8;padding:8px;
margin:4px 0 10px;max-height:320px;overflow:auto}
.bad{color:#b00020}.ok{color:#0a7a32}.muted{color:#6b7080}
table.kv td{padding:1px 10px 1px 0;vertical-align:top}
.status{display:inline-block;padding:1px 8px;border-radius:10px;background:#3b4b70}
"""


def _e(value: Any) -> str:
    """HTML-escape anything (``None`` as an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def _fmt_time(epoch: float | None) -> str:
    """Local date and time of ``epoch`` (seconds); ``"?"`` for a time no calendar holds."""
    if epoch is None:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
    except (OverflowError, OSError, ValueError):
        return "?"


def _cut(text: str | None, limit: int = MAX_SHOWN_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}\n... ({len(text) - limit} more characters)"


def overlay_points(record: StepRecord, frame_size: tuple[int, int]) -> list[tuple[str, float, float]]:
    """Where ``record``'s action lands on its frame: ``(kind, x, y)`` in pixels of the stored frame.

    Kinds: ``"point"`` (click, double and right click, type, select, scroll at a position),
    ``"from"``/``"to"`` (the two ends of a drag). Empty when the action has no position or the
    record has no transform.

    Args:
        record: a step with ``action`` and ``transform``.
        frame_size: (width, height) of the stored full-resolution frame, pixels.

    A transform that cannot map a point (a side of zero or less, as in a run recorded with a 0x0
    viewport) gives no overlay; so does a coordinate that is not a finite number.
    """
    action, transform = record.action, record.transform
    if not action or transform is None or action.get("action") == "zoom" or not _drawable(transform):
        return []
    space = "image_px" if action.get("space") == "image_px" else "norm1000"
    sw, sh = transform.screenshot_px
    sx, sy = frame_size[0] / sw, frame_size[1] / sh

    def point(x: Any, y: Any) -> tuple[float, float] | None:
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
            return None
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        px, py = transform.to_screenshot(float(x), float(y), space)
        return px * sx, py * sy

    start = point(action.get("x"), action.get("y"))
    if start is None:
        return []
    if action.get("action") == "drag":
        end = point(action.get("to_x"), action.get("to_y"))
        return [("from", *start)] + ([("to", *end)] if end is not None else [])
    return [("point", *start)]


def _drawable(transform: Any) -> bool:
    """True when ``transform`` maps model positions to a frame: every side and the scale positive."""
    sides = (*transform.viewport_css, *transform.image_px, *transform.screenshot_px)
    return all(side > 0 for side in sides) and math.isfinite(transform.device_scale_factor)


class _Frames:
    """The frames a report embeds: one thumbnail per frame path, within :data:`MAX_EMBEDDED_BYTES`."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.embedded_bytes = 0
        self._cache: dict[str, tuple[str, tuple[int, int]]] = {}

    def thumbnail(self, relative: str) -> tuple[str, tuple[int, int]]:
        """A data URL of the frame's thumbnail and its full size in pixels.

        Raises:
            TrajectoryError: the frame is missing, outside the run, too large, not an image, or
                over the report's budget.
        """
        if relative not in self._cache:
            if self.embedded_bytes >= MAX_EMBEDDED_BYTES:
                raise TrajectoryError(f"not embedded: the report already embeds {MAX_EMBEDDED_BYTES >> 20} MiB "
                                      "of frames")
            jpeg, size = _thumbnail(self.run.path(relative))
            self.embedded_bytes += len(jpeg)
            self._cache[relative] = ("data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii"), size)
        return self._cache[relative]


def _thumbnail(path: Path) -> tuple[bytes, tuple[int, int]]:
    """A JPEG of the frame at most :data:`THUMB_WIDTH` x :data:`THUMB_MAX_HEIGHT`, and the frame's size.

    The file size and the pixel count are checked before anything is decoded.

    Raises:
        TrajectoryError: the file is over :data:`MAX_FRAME_BYTES`, the image over
            :data:`MAX_FRAME_PIXELS`, not a PNG, JPEG or WebP, or does not decode.
    """
    try:
        if path.stat().st_size > MAX_FRAME_BYTES:
            raise TrajectoryError(f"the file is over {MAX_FRAME_BYTES >> 20} MiB")
        with Image.open(path, formats=FRAME_FORMATS) as image:  # reads the header only
            size = image.size
            if not 0 < size[0] * size[1] <= MAX_FRAME_PIXELS:
                raise TrajectoryError(f"{size[0]}x{size[1]} pixels is over the {MAX_FRAME_PIXELS:,} "
                                      "pixels a report decodes")
            picture = image.convert("RGB")  # decodes
    except Image.DecompressionBombError as exc:
        raise TrajectoryError(f"the image is over the {MAX_FRAME_PIXELS:,} pixels a report decodes ({exc})") from exc
    except TrajectoryError:
        raise
    except _DECODE_ERRORS as exc:
        raise TrajectoryError(f"not a readable PNG, JPEG or WebP image ({exc})") from exc
    picture.thumbnail((THUMB_WIDTH, THUMB_MAX_HEIGHT), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue(), size


def _frame_svg(record: StepRecord, frames: _Frames) -> str:
    if not record.frame_path:
        return '<p class="muted">no frame recorded for this step</p>'
    try:
        url, (width, height) = frames.thumbnail(record.frame_path)
    except (TrajectoryError, OSError) as exc:
        return f'<p class="bad">frame {_e(record.frame_path)} cannot be shown: {_e(exc)}</p>'
    marks = []
    radius = max(6.0, max(width, height) / 90)
    points = overlay_points(record, (width, height))
    kind = _e((record.action or {}).get("action"))
    for which, x, y in points:
        marks.append(f'<circle class="mark" data-kind="{which}" data-action="{kind}" cx="{x:.1f}" cy="{y:.1f}" '
                     f'r="{radius:.1f}"/>')
    if len(points) == 2:
        (_, x0, y0), (_, x1, y1) = points
        marks.append(f'<line class="path" x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}"/>')
    action = record.action or {}
    if action.get("action") == "scroll":
        if points:
            x0, y0 = points[0][1], points[0][2]
        else:
            x0, y0 = width / 2, height / 2
        length = max(width, height) / 12
        dx, dy = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}.get(
            str(action.get("direction", "down")), (0, 1))
        marks.append(f'<line class="path" data-kind="scroll" x1="{x0:.1f}" y1="{y0:.1f}" '
                     f'x2="{x0 + dx * length:.1f}" y2="{y0 + dy * length:.1f}"/>')
    title = f"{_e(record.frame_id or '')} {_e(record.frame_path)} ({width}x{height} px)"
    return (f'<svg class="frame" viewBox="0 0 {width} {height}" data-frame="{_e(record.frame_path)}" '
            f'role="img" aria-label="{title}"><title>{title}</title>'
            f'<image href="{url}" x="0" y="0" width="{width}" height="{height}" preserveAspectRatio="none"/>'
            + "".join(marks) + "</svg>")


def _kv(rows: list[tuple[str, str]]) -> str:
    """A two-column table; values must already be escaped."""
    return '<table class="kv">' + "".join(f"<tr><td class=muted>{_e(k)}</td><td>{v}</td></tr>" for k, v in rows) \
        + "</table>"


def _tokens_line(tokens: dict[str, int]) -> str:
    return ", ".join(f"{_e(k)} {int(v)}" for k, v in tokens.items() if v) or "-"


def _step_html(record: StepRecord, frames: _Frames) -> str:
    parse = record.parse
    parse_html = (f'<span class="ok">parsed</span> ({_e(parse.style or "?")})' if parse.ok else
                  f'<span class="bad">parse error</span>: {_e(parse.error)}')
    if record.result is None:
        result_html = '<span class="muted">not executed</span>'
    else:
        cls = "ok" if record.result.ok else "bad"
        result_html = f'<span class="{cls}">{"ok" if record.result.ok else "failed"}</span> {_e(record.result.message)}'
    t = record.tokens
    token_bits = [f"prompt {t.prompt}" if t.prompt is not None else None,
                  f"completion {t.completion}" if t.completion is not None else None,
                  f"reused {t.reused}" if t.reused is not None else None]
    timing = record.timings
    times = ", ".join(f"{name} {value:.2f} s" for name, value in
                      (("model", timing.model_s), ("act", timing.act_s), ("step", timing.step_s)) if value is not None)
    shown = ", ".join(f"{f.id or f.path} ({f.tier or '?'}, {f.tokens} tok)" for f in record.frames)
    rows = [
        ("page", f"{_e(record.title)}<br><span class=muted>{_e(record.url)}</span>"),
        ("parse", parse_html),
        ("action", f"<code>{_e(json.dumps(record.action)) if record.action is not None else '-'}</code>"),
        ("result", result_html),
        ("tokens", _e(", ".join(b for b in token_bits if b) or "-")),
        ("tiers (tokens)", _tokens_line(t.tiers)),
        ("frames per tier", _tokens_line(t.frames_per_tier)),
        ("frames shown", _e(shown or "-")),
        ("timings", _e(times or "-")),
    ]
    if record.context is not None:
        rows.append(("context", _e(f"{record.context.token_count} tokens")))
    events = ("<ul>" + "".join(f"<li>{_e(ev)}</li>" for ev in record.events) + "</ul>") if record.events else ""
    attempt = f" · attempt {record.attempt}" if record.attempt else ""
    anchor = f"step-{record.step}-{record.attempt}"
    return (f'<section class="step" id="{anchor}"><h2>Step {record.step}{attempt} '
            f'<span class="muted">{_e(_fmt_time(record.wall_time))}</span></h2>'
            f"<div>{_frame_svg(record, frames)}</div>"
            f"<div><b>raw output</b><pre>{_e(_cut(record.raw_output))}</pre>{_kv(rows)}"
            + (f"<b>events</b>{events}" if events else "") + "</div></section>")


def _header(run: Run) -> str:
    meta, result, steps = run.meta, run.result, run.steps
    if result is None:
        status = "incomplete: no result.json (the run crashed or is still running)"
        prompt = sum(r.tokens.prompt or 0 for r in steps)
        completion = sum(r.tokens.completion or 0 for r in steps)
        reused = sum(r.tokens.reused or 0 for r in steps)
        n_steps = len({r.step for r in steps})
        per_tier: dict[str, int] = {}
        for r in steps:
            for tier, n in r.tokens.tiers.items():
                per_tier[tier] = per_tier.get(tier, 0) + n
        answer, duration = None, None
    else:
        status = result.status + (f": {result.error}" if result.error else "")
        prompt, completion, reused = result.prompt_tokens, result.completion_tokens, result.reused_tokens
        n_steps, per_tier, answer = result.steps, result.tokens_per_tier, result.answer
        duration = result.durations.total_s
    rows = [
        ("task", _e(meta.task)),
        ("start URL", _e(meta.start_url or "-")),
        ("status", f'<span class="status">{_e(status)}</span>'),
        ("answer", _e(answer if answer is not None else "-")),
        ("steps", _e(f"{n_steps} ({len(steps)} model calls)")),
        ("tokens", _e(f"prompt {prompt}, completion {completion}, reused {reused}")),
        ("tokens per tier", _tokens_line(per_tier)),
        ("backend", _e(meta.backend + (f" ({meta.model})" if meta.model else ""))),
        ("started", _e(_fmt_time(meta.started_at) + (f", {duration:.1f} s" if duration is not None else ""))),
        ("giraffe", _e(meta.giraffe_version)),
    ]
    if result is not None and result.info:
        rows.insert(4, ("environment", _e(", ".join(f"{k}: {v}" for k, v in result.info.items()))))
    if run.warnings:
        rows.append(("warnings", "<br>".join(_e(w) for w in run.warnings)))
    return f"<header><h1>{_e(meta.task)}</h1>{_kv(rows)}</header>"


def write_report(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None) -> Path:
    """Write a self-contained HTML report of the run in ``run_dir``.

    Args:
        run_dir: a run directory (see :mod:`giraffe_agent.trajectory`); it may lack ``result.json``
            and have no steps.
        out: where to write (default ``run_dir/report.html``); written atomically.

    Returns:
        The path of the report.

    Raises:
        TrajectoryError: ``run_dir`` is not a readable run directory, or the report cannot be written.
    """
    run = read_run(run_dir, strict=False)
    frames = _Frames(run)
    body = "".join(_step_html(record, frames) for record in run.steps) or \
        '<p class="muted">No steps were recorded.</p>'
    page = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Giraffe run: {_e(run.meta.task[:80])}</title><style>{_CSS}</style></head>"
            f"<body>{_header(run)}<main>{body}</main></body></html>\n")
    target = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    _write_atomic(target, page.encode("utf-8"))
    logger.info("wrote %s (%d steps, %d bytes)", target, len(run.steps), len(page))
    return target


def _write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a new, randomly named temporary file in its directory
    (``O_EXCL``: a file or link planted in the run directory is never written through), then replace.

    Raises:
        TrajectoryError: the file cannot be written.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise TrajectoryError(f"cannot write the report {target}: {exc}") from exc
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; a report is as readable as the run's other files
        with open(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise TrajectoryError(f"cannot write the report {target}: {exc}") from exc
