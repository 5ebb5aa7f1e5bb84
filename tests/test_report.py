"""The HTML report (:func:`giraffe_agent.report.write_report`): one self-contained file, every frame
embedded, overlays where the action lands, hostile model output escaped, crashed and empty runs.

Overlay references are computed here from the definition of the coordinate spaces (a fraction of
the model's image is the same fraction of the viewport; screenshot pixels are CSS pixels times the
device scale factor), not with :class:`~giraffe_agent.coords.CoordinateTransform`.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from giraffe_agent.actions import Click, Drag, Scroll, Type
from giraffe_agent.envs.base import ActResult, Observation
from giraffe_agent.report import write_report
from giraffe_agent.trajectory import ParseInfo, RunMeta, RunResult, RunWriter, StepRecord, Timings, read_run
from giraffe_core.memory import MemoryConfig, TimelineMemory
from giraffe_core.samples import screenshot

VIEWPORT = (400, 250)  # CSS px
DPR = 2.0  # screenshots are 800x500 px
HOSTILE = '<script>alert(1)</script><img src="http://evil.example/x.png">'
CONFIG = MemoryConfig(budget_tokens=4000, reserve_tokens=64, full_max_tokens=80, low_max_tokens=16,
                      full_frames=2, low_frames=2, text_frames=4, block_frames=1)


def observe(step: int) -> Observation:
    return Observation(image=screenshot(800, 500, title=f"Page {step}", seed=step), viewport_css=VIEWPORT,
                       device_scale_factor=DPR, wall_time=50.0 + step, url=f"https://shop.example/item?id={step}&x=1",
                       title=f'Item "{step}" <b>bold</b>', events=["blocked request to https://ads.example/t.js"])


#: (raw output, parsed action or None on a parse error, result message)
STEPS = [
    ('{"action": "click", "x": 250, "y": 600}', Click(x=250, y=600), "clicked"),
    (HOSTILE, None, None),
    ('{"action": "drag", "x": 100, "y": 100, "to_x": 900, "to_y": 800}',
     Drag(x=100, y=100, to_x=900, to_y=800), "dragged"),
    ('{"action": "type", "text": "</pre><script>x()</script>", "x": 140, "y": 84, "space": "image_px"}',
     Type(text="</pre><script>x()</script>", x=140, y=84, space="image_px"), "typed <i>ok</i>"),
    ('{"action": "scroll", "direction": "down"}', Scroll(direction="down"), "scrolled"),
]


def write_run(engine, out: Path, *, finish: bool = True, steps: int | None = None) -> list[StepRecord]:
    memory = TimelineMemory.for_engine(engine, CONFIG, store=out / "frames")
    memory.add_text("task", "Find the price.")
    with RunWriter.create(out) as run:
        run.write_meta(RunMeta(task="Find the <price>", start_url="https://shop.example/", backend="scripted"))
        for step, (raw, action, message) in enumerate(STEPS[:steps]):
            obs = observe(step)
            memory.add_frame(obs.image, step=step, url=obs.url, title=obs.title, wall_time=obs.wall_time)
            context = memory.render()
            run.append_step(StepRecord.build(
                out, step=step, raw_output=raw, context=context, frames=memory.frames, action=action,
                parse=ParseInfo(ok=action is not None, style="json", error=None if action else f"no JSON in {raw}"),
                result=ActResult(True, message) if message else None, observation=obs,
                transform=obs.transform(context.layout.plan.frames[-1].size), timings=Timings(model_s=0.1)))
            memory.add_text("model", raw, step=step)
        records = read_run(out).steps
        if finish:
            run.write_result(RunResult.from_steps(records, status="done", answer="<b>$12</b>", total_s=3.0))
    return records


def svg_of(page: str, frame_path: str) -> str:
    found = re.findall(r'<svg class="frame"[^>]*data-frame="' + re.escape(frame_path) + r'".*?</svg>', page, re.S)
    assert len(found) >= 1, f"no frame {frame_path} in the report"
    return found[0]


def expected_px(value: float, axis: int, space: str, image_px: tuple[int, int]) -> float:
    """Model coordinate -> screenshot pixels, from the definitions."""
    extent = 1000.0 if space == "norm1000" else image_px[axis]
    return value / extent * VIEWPORT[axis] * DPR


@pytest.fixture()
def run_dir(tiny_engine, tmp_path):
    out = tmp_path / "run"
    write_run(tiny_engine, out)
    return out


def test_report_is_one_self_contained_file(run_dir):
    before = {p for p in run_dir.rglob("*")}
    path = write_report(run_dir)
    assert path == run_dir / "report.html" and {p for p in run_dir.rglob("*")} - before == {path}
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    # no external resource: every src/href is a data: URL, no <link>, no external script
    refs = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page)
    assert refs and all(r.startswith("data:image/") for r in refs)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    # the only URLs in the page are the run's own page URLs, shown as escaped text
    allowed = {"https://shop.example/", "https://ads.example/t.js", "http://evil.example/x.png"} | {
        f"https://shop.example/item?id={i}&amp;x=1" for i in range(len(STEPS))}
    for url in re.findall(r"https?://[^\s<\"'&]+(?:&amp;[^\s<\"'&]+)*", page):
        assert url in allowed, url


def test_report_embeds_every_steps_frame(run_dir):
    page = write_report(run_dir).read_text(encoding="utf-8")
    run = read_run(run_dir)
    assert len(run.steps) == len(STEPS)
    for record in run.steps:
        svg = svg_of(page, record.frame_path)
        data = re.search(r'<image href="data:image/jpeg;base64,([^"]+)"', svg).group(1)
        thumb = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
        original = Image.open(run_dir / record.frame_path).convert("RGB")
        assert original.size == (800, 500) and 'viewBox="0 0 800 500"' in svg
        assert thumb.width <= 960 and abs(thumb.width / thumb.height - 800 / 500) < 0.01
        diff = np.abs(np.asarray(original.resize(thumb.size), dtype=float) - np.asarray(thumb, dtype=float))
        assert diff.mean() < 6, f"step {record.step}: the embedded frame is not the step's frame"
    # different steps show different frames
    assert len({r.frame_path for r in run.steps}) == len(STEPS)


def test_overlays_are_drawn_where_the_action_lands(run_dir):
    page = write_report(run_dir).read_text(encoding="utf-8")
    run = read_run(run_dir)

    def circles(record):
        svg = svg_of(page, record.frame_path)
        return [(kind, float(x), float(y)) for kind, x, y in
                re.findall(r'<circle class="mark" data-kind="(\w+)"[^>]*cx="([\d.]+)" cy="([\d.]+)"', svg)]

    click, bad, drag, typed, scroll = run.steps
    image_px = click.transform.image_px
    assert circles(click) == [("point", pytest.approx(expected_px(250, 0, "norm1000", image_px), abs=0.06),
                               pytest.approx(expected_px(600, 1, "norm1000", image_px), abs=0.06))]
    assert circles(click)[0][1:] == (pytest.approx(200.0, abs=0.06), pytest.approx(300.0, abs=0.06))
    assert circles(bad) == []  # nothing parsed, nothing drawn
    assert [c[0] for c in circles(drag)] == ["from", "to"]
    (_, x0, y0), (_, x1, y1) = circles(drag)
    assert (x0, y0, x1, y1) == (pytest.approx(80.0, abs=0.06), pytest.approx(50.0, abs=0.06),
                                pytest.approx(720.0, abs=0.06), pytest.approx(400.0, abs=0.06))
    assert '<line class="path" x1="80.0" y1="50.0" x2="720.0" y2="400.0"/>' in svg_of(page, drag.frame_path)
    image_px = typed.transform.image_px
    ((_, x, y),) = circles(typed)
    assert x == pytest.approx(expected_px(140, 0, "image_px", image_px), abs=0.06)
    assert y == pytest.approx(expected_px(84, 1, "image_px", image_px), abs=0.06)
    assert circles(scroll) == [] and 'data-kind="scroll" x1="400.0" y1="250.0"' in svg_of(page, scroll.frame_path)


def test_hostile_model_output_is_escaped(run_dir):
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page and "<script>x()</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<img src="http://evil' not in page and "&lt;img src=&quot;http://evil.example/x.png&quot;&gt;" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page  # titles
    assert "typed &lt;i&gt;ok&lt;/i&gt;" in page  # result messages
    assert "&lt;b&gt;$12&lt;/b&gt;" in page and "Find the &lt;price&gt;" in page  # answer and task
    assert page.count("<pre>") == page.count("</pre>") == len(STEPS)


def test_report_shows_status_tokens_tiers_and_events(run_dir):
    page = write_report(run_dir).read_text(encoding="utf-8")
    result = read_run(run_dir).result
    assert ">done<" in page and f"prompt {result.prompt_tokens}" in page and "parse error" in page
    assert "blocked request to https://ads.example/t.js" in page and "frames per tier" in page
    last = read_run(run_dir).steps[-1]
    assert f"full {last.tokens.tiers['full']}" in page and f"low {last.tokens.tiers['low']}" in page


def test_report_of_a_crashed_run(tiny_engine, tmp_path):
    out = tmp_path / "crashed"
    write_run(tiny_engine, out, finish=False, steps=2)
    with open(out / "trajectory.jsonl", "ab") as handle:
        handle.write(b'{"step": 2, "raw_output": "half a li')  # killed mid-write
    page = write_report(out).read_text(encoding="utf-8")
    assert "incomplete: no result.json" in page and "incomplete last line" in page
    assert page.count('<section class="step"') == 2


def test_report_of_a_run_without_steps(tmp_path):
    out = tmp_path / "empty"
    with RunWriter.create(out) as run:
        run.write_meta(RunMeta(task="nothing happened", backend="scripted"))
    page = write_report(out).read_text(encoding="utf-8")
    assert "No steps were recorded." in page and "nothing happened" in page and '<section class="step"' not in page


# --------------------------------------------------------------------------------------------------
# hostile run directories, written by hand (meta.json, trajectory.jsonl, frames/)
# --------------------------------------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of ``width`` x ``height`` (all black): tiny on disk, huge decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height, 9))
            + chunk(b"IEND", b""))


def hand_made_run(out: Path, steps: list[dict], frames: dict[str, bytes], **meta) -> Path:
    """A run directory written byte by byte, the way someone else's could be."""
    (out / "frames").mkdir(parents=True)
    (out / "meta.json").write_text(json.dumps({"task": "hostile", "backend": "scripted", **meta}))
    (out / "trajectory.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    for name, data in frames.items():
        (out / "frames" / name).write_bytes(data)
    return out


def step(n: int, frame: str, viewport=(400, 250), image_px=(392, 252), **action) -> dict:
    return {"step": n, "raw_output": "{}", "parse": {"ok": True, "style": "json"},
            "action": {"action": "click", "x": 500, "y": 500, **action}, "frame_path": f"frames/{frame}",
            "transform": {"viewport_css": list(viewport), "device_scale_factor": 1.0, "image_px": list(image_px)}}


def small_png() -> bytes:
    buffer = io.BytesIO()
    screenshot(400, 250, title="ok", seed=0).save(buffer, format="PNG")
    return buffer.getvalue()


def sections(page: str) -> list[str]:
    return re.findall(r'<section class="step".*?</section>', page, re.S)


def test_a_zero_viewport_draws_no_overlay_instead_of_dividing_by_zero(tmp_path):
    out = hand_made_run(tmp_path / "run", [
        step(0, "a.png", viewport=(0, 0), image_px=(0, 0)),
        step(1, "a.png", viewport=(0, 0), image_px=(0, 0), space="image_px"),
        step(2, "a.png", viewport=(400, 250), image_px=(0, 0), space="image_px"),
        step(3, "a.png", x=float("inf")),
        step(4, "a.png"),  # a sane step: drawn, so the overlays above were left out on purpose
    ], {"a.png": small_png()})
    text = (out / "trajectory.jsonl").read_text().replace("Infinity", "1e999")
    (out / "trajectory.jsonl").write_text(text)  # JSON has no infinity; 1e999 parses as one
    page = write_report(out).read_text(encoding="utf-8")
    marks = [s.count('<circle class="mark"') for s in sections(page)]
    assert marks == [0, 0, 0, 0, 1]
    assert page.count('<image href="data:image/jpeg') == 5  # every frame is still shown


def test_a_frame_too_large_to_decode_is_named_not_decoded(tmp_path, monkeypatch):
    from PIL import ImageFile

    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or load(self))
    out = hand_made_run(tmp_path / "run", [step(0, "huge.png"), step(1, "big.png"), step(2, "ok.png")],
                        {"huge.png": png_header_only(15000, 15000), "big.png": png_header_only(7000, 7000),
                         "ok.png": small_png()})
    page = write_report(out).read_text(encoding="utf-8")
    huge, big, ok = sections(page)
    assert "cannot be shown" in huge and "<image" not in huge  # over Pillow's own limit (225 M pixels)
    assert "7000x7000 pixels is over" in big and "<image" not in big  # over the report's 40 M pixels
    assert "<image" in ok and set(decoded) == {(400, 250)}  # only the sane frame was ever decoded
    assert len(page) < 1_000_000


def test_control_the_pixel_limit_is_what_refuses_the_big_frame(tmp_path, monkeypatch):
    import giraffe_agent.report as report

    monkeypatch.setattr(report, "MAX_FRAME_PIXELS", 50_000_000)
    out = hand_made_run(tmp_path / "run", [step(0, "big.png")], {"big.png": png_header_only(7000, 7000)})
    (big,) = sections(write_report(out).read_text(encoding="utf-8"))
    assert "<image" in big and 'viewBox="0 0 7000 7000"' in big  # decoded and embedded without the limit


def test_frames_that_are_not_images_or_not_allowed_formats_are_named(tmp_path):
    gif = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(gif, format="GIF")
    out = hand_made_run(tmp_path / "run", [
        step(0, "garbage.png"), step(1, "anim.gif"), step(2, "truncated.png"), step(3, "missing.png"),
        {**step(4, "x.png"), "frame_path": "../../../etc/passwd"},
    ], {"garbage.png": b"\x89PNG\r\n\x1a\nnot really", "anim.gif": gif.getvalue(), "truncated.png": small_png()[:300]})
    page = write_report(out).read_text(encoding="utf-8")
    shown = sections(page)
    assert len(shown) == 5 and all("cannot be shown" in s and "<image" not in s for s in shown)


def test_the_embedded_frames_have_a_budget(tmp_path, monkeypatch):
    import giraffe_agent.report as report

    frames = {f"{i}.png": small_png() for i in range(3)}
    frames = {name: data + bytes([i]) for i, (name, data) in enumerate(frames.items())}  # distinct files
    out = hand_made_run(tmp_path / "run", [step(i, f"{i}.png") for i in range(3)], frames)
    monkeypatch.setattr(report, "MAX_EMBEDDED_BYTES", 1)
    first, second, third = sections(write_report(out).read_text(encoding="utf-8"))
    assert "<image" in first and "not embedded" in second and "not embedded" in third


def test_long_outputs_and_impossible_times_are_cut_not_fatal(tmp_path):
    out = hand_made_run(tmp_path / "run", [{**step(0, "a.png"), "raw_output": "x" * 100_000, "wall_time": 1e300}],
                        {"a.png": small_png()}, started_at=-1e300)
    page = write_report(out).read_text(encoding="utf-8")
    assert "(80000 more characters)" in page and "x" * 20_001 not in page


def test_giraffe_view_never_crashes_on_a_hostile_run(tmp_path):
    from typer.testing import CliRunner

    from giraffe_cli import app

    markup = "[/bold][link=file:///etc/passwd]click[/link][bold red]"
    out = hand_made_run(tmp_path / "run", [
        {**step(0, "huge.png", viewport=(0, 0), image_px=(0, 0)), "url": markup,
         "result": {"ok": False, "message": markup}},
        step(1, "big.png"),
    ], {"huge.png": png_header_only(15000, 15000), "big.png": png_header_only(7000, 7000)}, task=markup)
    for args in (["view", str(out)], ["view", str(out), "--json"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert result.exception is None and "Traceback" not in result.output
    assert (out / "report.html").is_file()
    table = CliRunner().invoke(app, ["view", str(out)], env={"COLUMNS": "400"}).output
    assert "[/bold]" in table  # printed as text, not taken for markup


def test_giraffe_view_on_a_broken_run_is_one_clear_error(tmp_path):
    from typer.testing import CliRunner

    from giraffe_cli import app

    out = hand_made_run(tmp_path / "run", [], {})
    (out / "meta.json").write_text('{"task": 3}')
    result = CliRunner().invoke(app, ["view", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert type(result.exception.__context__.__cause__).__name__ == "TrajectoryError"
