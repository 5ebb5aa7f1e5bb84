"""``giraffe record`` and ``giraffe ask``: screen recording and question answering over it.

Registered on :data:`giraffe_cli.app.app` when :mod:`giraffe_cli.app` is imported. Everything
heavy (mss, Playwright, PyAV, torch, the model) is imported inside the commands.
"""

from __future__ import annotations

import enum
import json
import signal
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from giraffe_cli.app import _fail, app, console

__all__ = ["ask_command", "record_command"]


class ImageFormat(str, enum.Enum):
    """Frame file formats of ``giraffe record``."""

    png = "png"
    jpeg = "jpeg"


class SamplingChoice(str, enum.Enum):
    """Frame sampling of ``giraffe ask``."""

    uniform = "uniform"
    change = "change"


def _ints(text: str, count: int, what: str, sep: str = ",") -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(sep)]
    except ValueError:
        values = []
    if len(values) != count:
        raise typer.BadParameter(f"{what} must be {count} integers separated by {sep!r}, got {text!r}")
    return values


def _source(monitor: int | None, region: str | None, url: str | None, video: Path | None, display: str | None,
            viewport: str, fps: float) -> Any:
    from giraffe_agent.recording import PageSource, ScreenSource, VideoSource

    given = [name for name, value in (("--monitor", monitor), ("--region", region), ("--url", url),
                                      ("--video", video)) if value is not None]
    if len(given) > 1:
        raise typer.BadParameter(f"choose one source, got {' and '.join(given)}")
    if region is not None:
        return ScreenSource(region=_ints(region, 4, "--region"), display=display)
    if url is not None:
        width, height = _ints(viewport, 2, "--viewport", sep="x")
        return PageSource(url, viewport=(width, height))
    if video is not None:
        return VideoSource(video, fps=fps)
    return ScreenSource(monitor=1 if monitor is None else monitor, display=display)


@app.command("record")
def record_command(
    out: Path = typer.Option(..., "--out", "-o", help="a new (or empty) directory for the recording"),
    monitor: int | None = typer.Option(None, help="monitor to record: 1 the first (the default), 0 all as one image"),
    region: str | None = typer.Option(None, help="X,Y,W,H: record this region of the screen, pixels"),
    url: str | None = typer.Option(None, help="record this web page in headless Chromium"),
    video: Path | None = typer.Option(None, help="import this video file, sampled at --fps"),
    fps: float = typer.Option(2.0, min=0.001, max=120, help="frames grabbed per second"),
    duration: float | None = typer.Option(None, min=0.001, help="seconds to record (default: until Ctrl-C)"),
    threshold: float = typer.Option(0.001, min=0.0, max=1.0,
                                    help="keep a frame when more than this fraction of the screen changed"),
    tolerance: int = typer.Option(8, min=0, max=254, help="gray levels a pixel may move and count as unchanged"),
    max_gap: float | None = typer.Option(None, min=0.001, help="keep a frame at least every this many seconds"),
    image_format: ImageFormat = typer.Option(ImageFormat.png, "--format", help="frame files: png or jpeg"),
    mp4: bool = typer.Option(False, "--mp4", help="also write recording.mp4 (PyAV)"),
    display: str | None = typer.Option(None, help="X display (default: $DISPLAY)"),
    viewport: str = typer.Option("1280x720", help="page viewport WxH, CSS pixels (with --url)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Record a monitor, a screen region, a web page or a video file, keeping frames that changed."""
    from rich.live import Live

    from giraffe_agent.recording import Recorder, RecorderConfig, Recording
    from giraffe_core import GiraffeError

    try:
        config = RecorderConfig(fps=fps, threshold=threshold, tolerance=tolerance, max_gap_s=max_gap,
                                image_format=image_format.value, mp4=mp4)
        source = _source(monitor, region, url, video, display, viewport, fps)
        source.open()  # a display, browser or file that fails stops here, before DIR is created
    except GiraffeError as exc:
        _fail(exc)
        return
    try:
        recorder = Recorder(out, config, source=source)
    except GiraffeError as exc:
        source.close()
        _fail(exc)
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _stop(signum: int, frame: Any) -> None:  # first Ctrl-C / SIGTERM: finish cleanly; a second one kills
        recorder.stop()
        signal.signal(signum, previous[signum])

    for sig in previous:
        signal.signal(sig, _stop)
    shown = {"at": 0.0}
    live = None if as_json else Live(console=console, refresh_per_second=4, transient=True)

    def on_grab(stats: Any, kept: Any) -> None:
        now = time.monotonic()
        if live is not None and now - shown["at"] >= 0.25:
            shown["at"] = now
            live.update(f"[bold]recording[/] {escape(str(out))}  {stats.elapsed_s:7.1f} s  grabbed {stats.grabs}  "
                        f"kept {stats.kept}  dropped {stats.dropped}  late {stats.late}  "
                        f"change {stats.last_score:.4f}  (Ctrl-C stops)")

    try:
        if live is not None:
            live.start()
        recorder.run(duration, on_grab=on_grab)
    except GiraffeError as exc:
        recorder.close()
        _fail(exc)
        return
    finally:
        if live is not None:
            live.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = recorder.close()
    summary = {**Recording.open(out).summary(), "grabbed": stats.grabs, "dropped": stats.dropped,
               "late": stats.late, "bytes": stats.bytes_written}
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    console.print(f"[bold]{escape(str(out))}[/]: kept {stats.kept} of {stats.grabs} frames over "
                  f"{summary['duration_s']:.1f} s "
                  f"({stats.dropped} unchanged dropped, {stats.late} ticks late), "
                  f"{stats.bytes_written / 1e6:.1f} MB of frames")


@app.command("ask")
def ask_command(
    source: Path = typer.Argument(..., help="a recording directory or a video file"),
    question: str = typer.Argument(..., help="the question"),
    model: str = typer.Option("tiny", help="'tiny', a saved directory, or a hub id (ignored with --endpoint)"),
    endpoint: str | None = typer.Option(None, help="an OpenAI-compatible server instead, e.g. http://127.0.0.1:8000/v1"),
    served_model: str | None = typer.Option(None, help="the endpoint's model id (default: the first it lists)"),
    api_key: str | None = typer.Option(None, envvar="OPENAI_API_KEY", help="the endpoint's API key"),
    budget: int = typer.Option(131072, min=1, help="most prompt tokens"),
    sampling: SamplingChoice = typer.Option(SamplingChoice.uniform, help="uniform in time, or weighted by change"),
    scheme: str = typer.Option("4,240,3", help="hybrid scheme L,m,s: groups of L frames, the first at m tokens, "
                                                "the others at m/s"),
    fps: float = typer.Option(1.0, min=0.001, help="frames per second sampled from a video file"),
    context_length: int | None = typer.Option(None, help="extend the local model's context to this many tokens"),
    max_new_tokens: int = typer.Option(256, min=1, help="longest answer, tokens"),
    max_frames: int | None = typer.Option(None, min=1, help="use at most this many frames"),
    no_marks: bool = typer.Option(False, "--no-marks", help="leave the recording's event marks out"),
    as_json: bool = typer.Option(False, "--json", help="print the Answer as JSON"),
) -> None:
    """Answer a question about a recording or a video with hybrid-resolution frames in a token budget."""
    from giraffe_agent.qa import ask
    from giraffe_agent.recording import Recording
    from giraffe_core import GiraffeError, GroupScheme, load

    try:
        parts = scheme.replace(" ", "").split(",")
        if len(parts) != 3:
            raise typer.BadParameter(f"--scheme is L,m,s (e.g. 4,240,3), got {scheme!r}")
        try:
            group = GroupScheme(group_size=int(parts[0]), high_tokens=int(parts[1]), ratio=float(parts[2]))
        except ValueError as exc:
            raise typer.BadParameter(f"--scheme {scheme!r}: {exc}") from exc
        recording = Recording.open(source, fps=fps)
        engine = None if endpoint else load(model, context_length=context_length)
        answer = ask(recording, question, engine=engine, endpoint=endpoint, served_model=served_model,
                     api_key=api_key, budget_tokens=budget, scheme=group, sampling=sampling.value,
                     max_new_tokens=max_new_tokens, max_frames=max_frames, include_marks=not no_marks)
    except GiraffeError as exc:
        _fail(exc)
        return
    if as_json:
        print(answer.model_dump_json(indent=2))
        return
    tiers = answer.tokens_by_tier()
    table = Table(title=f"{len(answer.frames)} of {answer.recording['frames']} frames, "
                        f"{answer.recording['duration_s']:.1f} s recording", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("prompt tokens", f"{answer.prompt_tokens} (budget {answer.budget_tokens})"
                  + (f", server counted {answer.server_prompt_tokens}" if answer.server_prompt_tokens else ""))
    for tier in sorted(tiers):
        frames = sum(1 for f in answer.frames if f.tier == tier)
        table.add_row(f"{tier} frames", f"{frames} frames, {tiers[tier]} visual tokens")
    table.add_row("sampling", f"{answer.sampling}, scheme (L, m, s) = ({answer.scheme.group_size}, "
                              f"{answer.scheme.high_tokens}, {answer.scheme.ratio:g})")
    if answer.frames:
        table.add_row("span", escape(f"{answer.frames[0].label} .. {answer.frames[-1].label}"))
    table.add_row("model", escape(f"{answer.model} ({answer.backend})"))
    table.add_row("time", ", ".join(f"{k} {v:.2f}" for k, v in answer.timings.items()))
    console.print(table)
    if answer.backend == "engine" and answer.model == "tiny":
        console.print("[dim]tiny preset: random weights, so the answer is noise; the pipeline is real.[/]")
    console.print(f"[bold]answer[/] ({answer.completion_tokens} tokens, {answer.finish_reason}): "
                  + escape(repr(answer.text)))
    for citation in answer.citations:
        console.print(escape(f"  cites {citation.text!r} -> frame {citation.frame} {citation.label}"))
