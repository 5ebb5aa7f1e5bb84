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
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from PIL import Image

from giraffe_agent.trajectory import Run, StepRecord, TrajectoryError, read_run

__all__ = ["REPORT_FILE", "overlay_points", "write_report"]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
#: width of the embedded thumbnails, pixels
THUMB_WIDTH = 960

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
    if epoch is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def overlay_points(record: StepRecord, frame_size: tuple[int, int]) -> list[tuple[str, float, float]]:
    """Where ``record``'s action lands on its frame: ``(kind, x, y)`` in pixels of the stored frame.

    Kinds: ``"point"`` (click, double and right click, type, select, scroll at a position),
    ``"from"``/``"to"`` (the two ends of a drag). Empty when the action has no position or the
    record has no transform.

    Args:
        record: a step with ``action`` and ``transform``.
        frame_size: (width, height) of the stored full-resolution frame, pixels.
    """
    action, transform = record.action, record.transform
    if not action or transform is None or action.get("action") == "zoom":
        return []
    space = action.get("space", "norm1000")
    sw, sh = transform.screenshot_px
    sx, sy = frame_size[0] / sw, frame_size[1] / sh

    def point(x: Any, y: Any) -> tuple[float, float] | None:
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
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


def _thumbnail(path: Path) -> tuple[str, tuple[int, int]]:
    """A base64 JPEG data URL of the frame at most :data:`THUMB_WIDTH` wide, and its full size."""
    with Image.open(path) as image:
        size = image.size
        picture = image.convert("RGB")
    if picture.width > THUMB_WIDTH:
        picture = picture.resize((THUMB_WIDTH, max(1, round(picture.height * THUMB_WIDTH / picture.width))),
                                 Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), size


def _frame_svg(run: Run, record: StepRecord, cache: dict[str, tuple[str, tuple[int, int]]]) -> str:
    if not record.frame_path:
        return '<p class="muted">no frame recorded for this step</p>'
    try:
        path = run.path(record.frame_path)
        if record.frame_path not in cache:
            cache[record.frame_path] = _thumbnail(path)
    except (TrajectoryError, OSError) as exc:
        return f'<p class="bad">frame {_e(record.frame_path)} cannot be shown: {_e(exc)}</p>'
    url, (width, height) = cache[record.frame_path]
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


def _step_html(run: Run, record: StepRecord, cache: dict[str, tuple[str, tuple[int, int]]]) -> str:
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
            f"<div>{_frame_svg(run, record, cache)}</div>"
            f"<div><b>raw output</b><pre>{_e(record.raw_output)}</pre>{_kv(rows)}"
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
    cache: dict[str, tuple[str, tuple[int, int]]] = {}
    body = "".join(_step_html(run, record, cache) for record in run.steps) or \
        '<p class="muted">No steps were recorded.</p>'
    page = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Giraffe run: {_e(run.meta.task[:80])}</title><style>{_CSS}</style></head>"
            f"<body>{_header(run)}<main>{body}</main></body></html>\n")
    target = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise TrajectoryError(f"cannot write the report {target}: {exc}") from exc
    logger.info("wrote %s (%d steps, %d bytes)", target, len(run.steps), len(page))
    return target
