"""Screen recording: real captures under Xvfb (mss), a real page in headless Chromium
(Playwright), video files through PyAV, crash safety under SIGKILL, and the errors users hit.

The X window is drawn by a 40-line X11 client (ctypes on libX11, launched as a subprocess, so no
toolkit is needed): it maps a window, changes its background colour at known times and prints the
wall-clock time right after each change reached the server (``XSync``).

Timestamp tolerance: a change made at wall time ``c`` appears in the first grab that starts after
the X server applied it. Grabs happen every ``1/fps`` seconds and a frame's time is the middle of
its grab call (under 1 ms for mss on a 320x240 Xvfb screen; ~35 ms for a Chromium screenshot), so
the kept frame's time is in ``[c - grab/2, c + 1/fps + grab]``. We allow 50 ms before ``c`` (the
client reads its clock just after ``XSync`` returns, so the server may apply the change a little
before ``c``) and ``1/fps + 0.3 s`` after it for scheduler jitter on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import typer
from cli_result import reported_error
from PIL import Image
from typer.testing import CliRunner

from giraffe_agent.recording import (
    INDEX_NAME,
    MP4_GOP,
    VIDEO_NAME,
    CaptureError,
    PageSource,
    Recorder,
    RecorderConfig,
    Recording,
    RecordingError,
    ScreenSource,
    VideoSource,
    change_score,
    format_timestamp,
    thumbnail,
)
from giraffe_core.errors import GiraffeError, InputError

av = pytest.importorskip("av", reason="PyAV is not installed: pip install -e '.[agent]'")
pytest.importorskip("mss", reason="mss is not installed: pip install -e '.[agent]'")

XVFB = shutil.which("Xvfb")
needs_xvfb = pytest.mark.skipif(XVFB is None, reason="Xvfb is not installed (apt-get install -y xvfb)")

RED, GREEN, BLUE, WHITE = 0xFF0000, 0x00FF00, 0x0000FF, 0xFFFFFF
SCREEN = (320, 240)
WINDOW = (40, 30, 160, 120)  # x, y, width, height

X_CLIENT = r'''
import ctypes, ctypes.util, json, sys, time
x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
x11.XOpenDisplay.restype = ctypes.c_void_p
x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
x11.XDefaultRootWindow.restype = ctypes.c_ulong
x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
x11.XCreateSimpleWindow.restype = ctypes.c_ulong
x11.XCreateSimpleWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                                    ctypes.c_uint, ctypes.c_uint, ctypes.c_ulong, ctypes.c_ulong]
for name, args in {"XMapWindow": [ctypes.c_void_p, ctypes.c_ulong],
                   "XSetWindowBackground": [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong],
                   "XClearWindow": [ctypes.c_void_p, ctypes.c_ulong], "XSync": [ctypes.c_void_p, ctypes.c_int]}.items():
    getattr(x11, name).argtypes = args
spec = json.loads(sys.argv[1])
display = x11.XOpenDisplay(None)
if not display:
    sys.exit("cannot open the display")
x, y, w, h = spec["geometry"]
window = x11.XCreateSimpleWindow(display, x11.XDefaultRootWindow(display), x, y, w, h, 0, 0, spec["colors"][0])
x11.XMapWindow(display, window)
x11.XSync(display, 0)
time.sleep(0.3)
x11.XClearWindow(display, window)
x11.XSync(display, 0)
sys.stdin.readline()  # wait for "go"
start = time.time()
print(json.dumps({"ready": start}), flush=True)
for delay, color in zip(spec["at"], spec["colors"][1:]):
    time.sleep(max(0.0, start + delay - time.time()))
    x11.XSetWindowBackground(display, window, color)
    x11.XClearWindow(display, window)
    x11.XSync(display, 0)
    print(json.dumps({"changed": time.time(), "color": color}), flush=True)
time.sleep(60)
'''


def _rgb(color: int) -> tuple[int, int, int]:
    return (color >> 16) & 255, (color >> 8) & 255, color & 255


@pytest.fixture(scope="module")
def xvfb():
    """An Xvfb server on a free display number (``-displayfd`` picks it); yields ``":N"``."""
    if XVFB is None:
        pytest.skip("Xvfb is not installed (apt-get install -y xvfb)")
    read, write = os.pipe()
    proc = subprocess.Popen([XVFB, "-displayfd", str(write), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                             "-nolisten", "tcp", "-br", "-noreset"], pass_fds=[write],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    number = b""
    deadline = time.monotonic() + 20
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        chunk = os.read(read, 16)
        if not chunk:
            break
        number += chunk
    os.close(read)
    if not number.strip():
        proc.kill()
        pytest.fail("Xvfb did not report a display number")
    try:
        yield f":{number.decode().strip()}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture()
def display(xvfb, monkeypatch):
    """DISPLAY set to the test server for this test only."""
    monkeypatch.setenv("DISPLAY", xvfb)
    return xvfb


@pytest.fixture()
def x_window(display, tmp_path):
    """Start the X client: ``start(colors, at)`` maps the window and returns the running process."""
    script = tmp_path / "xwindow.py"
    script.write_text(X_CLIENT)
    procs = []

    def start(colors, at=()):
        proc = subprocess.Popen([sys.executable, str(script), json.dumps({"geometry": WINDOW, "colors": colors,
                                                                          "at": list(at)})],
                                env={**os.environ, "DISPLAY": display}, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def _go(proc) -> float:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())["ready"]


def _window_pixel(image: Image.Image, dx: int = 80, dy: int = 60) -> tuple[int, int, int]:
    return image.getpixel((WINDOW[0] + dx, WINDOW[1] + dy))


# --------------------------------------------------------------------------------------------------
# the change metric
# --------------------------------------------------------------------------------------------------


def test_thumbnail_is_box_averaged_luma_with_an_integer_factor():
    frame = Image.new("RGB", (1920, 1080), (255, 0, 0))
    thumb = thumbnail(frame)
    assert thumb.shape == (135, 240) and thumb.dtype == np.uint8  # factor ceil(1920 / 256) = 8
    assert int(thumb[0, 0]) == round(255 * 299 / 1000)  # ITU-R 601-2 luma of pure red
    half = Image.new("L", (16, 16), 0)
    half.paste(255, (0, 0, 4, 16))  # the left half of the left 8x8 blocks
    assert np.asarray(thumbnail(half, max_side=2)).tolist() == [[128, 0], [128, 0]]  # 8x8 block means


def test_change_score_counts_blocks_beyond_the_tolerance():
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, (1080, 1920, 3), dtype=np.uint8)
    noisy = np.clip(base.astype(np.int16) + rng.integers(-5, 6, base.shape), 0, 255).astype(np.uint8)
    a, b = thumbnail(base), thumbnail(noisy)
    assert change_score(a, a) == 0.0
    assert change_score(a, b) == 0.0  # +-5 levels of noise, averaged over 8x8 blocks, is below 8 levels
    edited = base.copy()
    edited[0:64, 0:128] = 0  # a 128x64 px edit: 16x8 = 128 blocks of the 240x135 thumbnail
    assert change_score(a, thumbnail(edited)) == pytest.approx(128 / (240 * 135))
    assert change_score(None, a) == 1.0 and change_score(a, thumbnail(base[:540])) == 1.0


def test_format_timestamp():
    assert format_timestamp(0) == "00:00:00"
    assert format_timestamp(3723.4) == "01:02:03"
    assert format_timestamp(3723.46, 1) == "01:02:03.5"
    assert format_timestamp(59.96, 1) == "00:01:00.0"
    assert format_timestamp(30.25, 1) == "00:00:30.3"  # half up


# --------------------------------------------------------------------------------------------------
# the recorder without a source: frames pushed, marks, the index, the MP4
# --------------------------------------------------------------------------------------------------


def _frame(value: int, size=(160, 120)) -> Image.Image:
    image = Image.new("RGB", size, (value, 255 - value, 60))
    image.paste((255, 255, 255), (10, 10, 40, 30))
    return image


def test_pushed_frames_are_deduplicated_marked_and_indexed(tmp_path):
    out = tmp_path / "rec"
    with Recorder(out, RecorderConfig(mp4=True), start_time=1_000.0) as recorder:
        kept = [recorder.add(_frame(100), t=0.0), recorder.add(_frame(100), t=0.5), recorder.add(_frame(101), t=1.0),
                recorder.add(_frame(200), t=1.5)]
        mark = recorder.mark("dialog opened", t=1.7, data={"id": 7})
        kept.append(recorder.add(_frame(200), t=2.0))  # unchanged, but kept: the first frame after a mark
        kept.append(recorder.add(_frame(30), t=2.5))
        with pytest.raises(InputError, match="time order"):
            recorder.add(_frame(30), t=1.0)
        recorder.close(t=3.0)
    assert [k is not None for k in kept] == [True, False, False, True, True, True]
    assert recorder.stats.grabs == 6 and recorder.stats.kept == 4 and recorder.stats.dropped == 2
    rec = Recording.open(out)
    assert rec.complete and rec.kind == "directory" and len(rec) == 4 and rec.duration == 3.0
    assert [f.t for f in rec] == [0.0, 1.5, 2.0, 2.5]
    assert [f.wall_time for f in rec] == [1000.0, 1001.5, 1002.0, 1002.5]
    assert [f.reason for f in rec] == ["first", "change", "mark", "change"]
    assert [f.dropped_before for f in rec] == [0, 2, 0, 0]
    assert rec.marks == [mark] and mark.t == 1.7 and mark.data == {"id": 7}
    assert rec.scores()[0] == 1.0 and rec.scores()[2] == 0.0
    assert np.array_equal(np.asarray(rec.image(1)), np.asarray(_frame(200)))  # PNG: lossless
    assert rec.frame_at(1.9).index == 1 and rec.frame_at(-1).index == 0
    lines = [json.loads(line) for line in (out / INDEX_NAME).read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["start", "frame", "frame", "mark", "frame", "frame", "end"]
    assert lines[0]["version"] == 1 and lines[0]["source"] == {"kind": "push"}
    assert not list((out / "frames").glob(".*.tmp"))
    video = Recording.open(out / VIDEO_NAME, fps=2)  # the MP4 is a variable-frame-rate copy of the kept frames
    assert video.kind == "video" and len(video) == 6  # t = 0, 0.5 .. 2.5 s (the MP4 ends at its last frame)
    image = np.asarray(video.image(3)).astype(int)  # t = 1.5 s: the frame kept at 1.5 s
    assert np.abs(image[60, 100] - np.array(_frame(200).getpixel((100, 60)))).max() <= 6


def test_recorder_refuses_a_directory_that_holds_files(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(RecordingError, match="already holds files"):
        Recorder(tmp_path)
    out = tmp_path / "rec"
    Recorder(out).close()
    with pytest.raises(RecordingError, match="already holds a recording"):
        Recorder(out)


def test_an_empty_recording_opens_with_no_frames(tmp_path):
    with Recorder(tmp_path / "rec") as recorder:
        recorder.mark("nothing happened")
    rec = Recording.open(tmp_path / "rec")
    assert len(rec) == 0 and rec.complete and len(rec.marks) == 1
    with pytest.raises(RecordingError, match="no frames"):
        rec.frame_at(0)


def test_a_torn_last_line_is_skipped_and_a_corrupt_middle_line_is_an_error(tmp_path, caplog):
    out = tmp_path / "rec"
    with Recorder(out, start_time=0.0) as recorder:
        recorder.add(_frame(10), t=0.0)
        recorder.add(_frame(90), t=1.0)
    index = out / INDEX_NAME
    good = index.read_bytes()
    index.write_bytes(good + b'{"kind": "frame", "ind')
    rec = Recording.open(out)
    assert len(rec) == 2 and "torn last line" in caplog.text
    lines = good.split(b"\n")
    lines[1] = b"{not json"
    index.write_bytes(b"\n".join(lines))
    with pytest.raises(RecordingError, match="line 2 is not JSON"):
        Recording.open(out)


def test_bad_paths_and_unreadable_videos_are_recording_errors(tmp_path):
    with pytest.raises(RecordingError, match="no recording or video"):
        Recording.open(tmp_path / "missing")
    with pytest.raises(RecordingError, match="not a recording"):
        Recording.open(tmp_path)
    fake = tmp_path / "clip.mp4"
    fake.write_text("this is not a video\n" * 20)
    with pytest.raises(RecordingError, match="cannot read video") as info:
        Recording.open(fake)
    assert isinstance(info.value, GiraffeError) and "ffprobe" in str(info.value)
    with pytest.raises(RecordingError, match="cannot read video"):
        Recorder(tmp_path / "rec", source=VideoSource(fake))
    truncated = tmp_path / "truncated.mp4"
    _write_video(tmp_path / "ok.mp4", [_frame(v) for v in range(0, 200, 20)], fps=10)
    truncated.write_bytes((tmp_path / "ok.mp4").read_bytes()[:200])
    with pytest.raises(RecordingError):
        Recording.open(truncated)


# --------------------------------------------------------------------------------------------------
# video files
# --------------------------------------------------------------------------------------------------


def _write_video(path: Path, frames: list[Image.Image], fps: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_a_video_file_round_trips_as_a_recording(tmp_path):
    # 20 frames at 10 fps; the picture changes every second frame
    values = [(k // 2) * 24 for k in range(20)]
    frames = [Image.new("RGB", (64, 48), (v, v, 255 - v)) for v in values]  # luma steps of 0.772 * 24 = 18.5
    path = tmp_path / "clip.mp4"
    _write_video(path, frames, fps=10)
    rec = Recording.open(path, fps=10)
    assert rec.kind == "video" and len(rec) == 20 and rec.duration == pytest.approx(2.0, abs=1e-3)
    assert [f.t for f in rec] == pytest.approx([k / 10 for k in range(20)], abs=1e-6)
    assert [f.source_t for f in rec] == pytest.approx([k / 10 for k in range(20)], abs=1e-3)
    for index, image in rec.images():
        assert image.size == (64, 48)
        got = np.asarray(image).reshape(-1, 3).mean(axis=0)
        assert np.abs(got - np.array([values[index], values[index], 255 - values[index]])).max() <= 4, index
    scores = rec.scores()
    assert scores[0] == 1.0 and all(s == 0.0 for s in scores[1::2]) and all(s > 0.5 for s in scores[2::2])
    half = Recording.open(path, fps=5)
    assert len(half) == 10 and [f.t for f in half] == pytest.approx([k / 5 for k in range(10)])
    assert np.asarray(half.image(3)).mean(axis=(0, 1))[0] == pytest.approx(values[6], abs=4)
    # the same file through the recorder: unchanged frames are dropped, media times kept
    out = tmp_path / "rec"
    with Recorder(out, RecorderConfig(fps=10), source=VideoSource(path, fps=10)) as recorder:
        recorder.run()
    imported = Recording.open(out)
    assert len(imported) == 10 and [f.t for f in imported] == pytest.approx([k / 5 for k in range(10)])
    assert imported.start_time is None and imported.frames[0].wall_time is None
    assert imported.duration == pytest.approx(2.0, abs=1e-3) and imported.source["kind"] == "video"


# --------------------------------------------------------------------------------------------------
# the desktop under Xvfb
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_xvfb
def test_screen_recording_keeps_each_change_with_its_time_and_drops_the_rest(x_window, display, tmp_path):
    fps = 10
    at = (0.6, 1.3, 2.0)
    colors = [RED, GREEN, BLUE, WHITE]
    client = x_window(colors, at)
    out = tmp_path / "rec"
    recorder = Recorder(out, RecorderConfig(fps=fps), source=ScreenSource(monitor=1))
    ready = _go(client)
    marker = threading.Timer(1.0, lambda: recorder.mark("clicked", data={"button": 1}))  # from another thread
    marker.start()
    stats = recorder.run(duration_s=2.8)
    marker.join()
    recorder.close()
    closed = time.time()
    changes = [json.loads(client.stdout.readline())["changed"] for _ in at]
    rec = Recording.open(out)
    # red, green, (the mark keeps the next frame: still green), blue, white; the ~23 other grabs dropped
    assert [f.reason for f in rec] == ["first", "change", "mark", "change", "change"], [(f.t, f.score) for f in rec]
    assert [_window_pixel(rec.image(i)) for i in range(5)] == [_rgb(c) for c in (RED, GREEN, GREEN, BLUE, WHITE)]
    assert rec.image(0).size == SCREEN and rec.source["kind"] == "screen" and rec.source["display"] == display
    assert rec.frames[0].wall_time == pytest.approx(ready, abs=0.3)
    [mark] = rec.marks
    assert mark.label == "clicked" and mark.data == {"button": 1}
    assert mark.wall_time == pytest.approx(ready + 1.0, abs=0.3) and 0 <= rec.frames[2].t - mark.t <= 1 / fps + 0.3
    for frame, changed in zip([rec.frames[i] for i in (1, 3, 4)], changes):
        assert changed - 0.05 <= frame.wall_time <= changed + 1 / fps + 0.3, (frame, changed)
        assert frame.t == pytest.approx(frame.wall_time - rec.start_time, abs=1e-5)
        assert frame.score == pytest.approx(160 * 120 / (320 * 240), abs=0.02)  # the window's share of the screen
    assert stats.grabs >= 20 and stats.dropped == stats.grabs - 5  # ~28 grabs at 10 fps; unchanged ones dropped
    assert sum(f.dropped_before for f in rec) <= stats.dropped  # the drops after the last change are not attributed
    assert rec.complete and rec.duration == pytest.approx(closed - rec.start_time, abs=0.05)


@needs_xvfb
def test_region_capture_crops_the_screen(x_window):
    client = x_window([RED])
    _go(client)
    source = ScreenSource(region=(20, 20, 100, 60))
    source.open()
    try:
        image = source.grab().image
    finally:
        source.close()
    assert image.size == (100, 60)
    assert image.getpixel((30, 20)) == _rgb(RED)  # screen (50, 40): inside the window
    assert image.getpixel((5, 5)) == (0, 0, 0)  # screen (25, 25): the black root window (-br)
    whole = ScreenSource(monitor=0)
    whole.open()
    assert whole.size == SCREEN
    whole.close()


@needs_xvfb
def test_bad_monitors_and_regions_are_capture_errors(display):
    with pytest.raises(CaptureError, match="no monitor 5"):
        ScreenSource(monitor=5).open()
    with pytest.raises(CaptureError, match="outside the screen"):
        ScreenSource(region=(300, 0, 100, 100)).open()


def test_a_missing_or_wrong_display_is_a_capture_error(monkeypatch, tmp_path):
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(CaptureError, match="DISPLAY is not set") as info:
        ScreenSource().open()
    assert "Xvfb" in str(info.value)
    with pytest.raises(CaptureError, match="cannot open X display"):
        ScreenSource(display=":4242").open()
    from giraffe_cli import app

    result = CliRunner().invoke(app, ["record", "--display", ":4242", "--duration", "1", "--out",
                                      str(tmp_path / "rec")])
    assert result.exit_code == 2 and isinstance(reported_error(result), CaptureError)
    assert "cannot open X display" in reported_error(result).message
    assert not (tmp_path / "rec").exists()  # the source is opened before the directory is made


@needs_xvfb
def test_cli_records_a_region_as_json(display, tmp_path):
    from giraffe_cli import app

    out = tmp_path / "rec"
    result = CliRunner().invoke(app, ["record", "--region", "0,0,64,48", "--fps", "5", "--duration", "0.6",
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["frames"] == 1 and summary["grabbed"] >= 2 and summary["complete"]
    assert summary["source"]["region"] == [0, 0, 64, 48]
    assert Recording.open(out).image(0).size == (64, 48)
    bad = CliRunner().invoke(app, ["record", "--region", "1,2,3", "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and isinstance(reported_error(bad), typer.BadParameter)
    assert "4 integers" in str(reported_error(bad))


@pytest.mark.slow
@needs_xvfb
def test_cli_record_stops_cleanly_on_ctrl_c(xvfb, tmp_path):
    out = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, "-m", "giraffe_cli", "record", "--display", xvfb, "--fps", "5",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / INDEX_NAME).exists():  # imports (torch) take a few seconds
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    rec = Recording.open(out)
    assert rec.complete and len(rec) == 1 and rec.duration >= 0.9  # a still screen: one frame, then drops


# --------------------------------------------------------------------------------------------------
# a Playwright page
# --------------------------------------------------------------------------------------------------

PAGE = b"""<!doctype html><html><body style="margin:0;background:#ff0000;width:100vw;height:100vh">
<script>
function change(color, n) { document.body.style.background = color;
  requestAnimationFrame(() => fetch('/changed?n=' + n)); }
setTimeout(() => change('#00ff00', 1), 700);
setTimeout(() => change('#0000ff', 2), 1500);
</script></body></html>"""


@pytest.fixture()
def page_server():
    changes: dict[int, float] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/changed"):
                changes[int(self.path.rsplit("=", 1)[1])] = time.time()
                body, kind = b"ok", "text/plain"
            else:
                body, kind = PAGE, "text/html"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", changes
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.slow
def test_page_source_records_a_changing_page(page_server, tmp_path):
    pytest.importorskip("playwright", reason="playwright is not installed: pip install -e '.[agent]'")
    from giraffe_agent.envs.chromium import find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium: apt-get install chromium (or playwright install chromium)")
    url, changes = page_server
    fps = 5
    out = tmp_path / "rec"
    with Recorder(out, RecorderConfig(fps=fps), source=PageSource(url, viewport=(320, 240))) as recorder:
        stats = recorder.run(duration_s=2.6)
    rec = Recording.open(out)
    assert [rec.image(i).getpixel((160, 120)) for i in range(len(rec))] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    assert rec.source == {"kind": "page", "url": url, "viewport": [320, 240], "device_scale_factor": 1.0}
    assert stats.dropped >= 5 and rec.image(0).size == (320, 240)
    for frame, n in zip(rec.frames[1:], (1, 2)):
        # the page reports a change after the next animation frame: up to ~1/60 s after it was painted
        assert changes[n] - 0.1 <= frame.wall_time <= changes[n] + 1 / fps + 0.4, (frame, changes)


# --------------------------------------------------------------------------------------------------
# crash safety
# --------------------------------------------------------------------------------------------------

CRASH_SCRIPT = r'''
import sys
import numpy as np
from PIL import Image
from giraffe_agent.recording import Recorder, RecorderConfig

rng = np.random.default_rng(0)
recorder = Recorder(sys.argv[1], RecorderConfig(fps=50, mp4=True))
k = 0
while True:
    pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)  # noise: every frame changes, PNGs are big
    pixels[:16, :16] = k % 256  # the frame's number, for the reader to check
    print(f"grab {k}", flush=True)
    recorder.add(Image.fromarray(pixels))
    k += 1
'''


@pytest.mark.slow
def test_sigkill_loses_at_most_the_frame_being_written(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    out = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    grabbed = -1
    try:
        while grabbed < 12:
            line = proc.stdout.readline()
            assert line, "the recording subprocess died"
            grabbed = int(line.split()[1])
        time.sleep(0.137)  # somewhere inside a PNG write or an index append
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        grabbed = max([grabbed] + [int(line.split()[1]) for line in proc.stdout.read().splitlines()])
    finally:
        if proc.poll() is None:
            proc.kill()
    rec = Recording.open(out)
    assert not rec.complete
    assert len(rec) >= grabbed  # frames 0 .. grabbed-1 are all there; only frame `grabbed` may be lost
    assert [f.index for f in rec] == list(range(len(rec)))
    for index, image in rec.images():
        assert np.asarray(image)[:16, :16].min() == np.asarray(image)[:16, :16].max() == index % 256
    files = sorted(p.name for p in (out / "frames").iterdir())
    assert len([f for f in files if f.endswith(".tmp")]) <= 1
    assert len([f for f in files if f.endswith(".png")]) - len(rec) <= 1  # renamed, its index line not written
    with av.open(str(out / VIDEO_NAME)) as container:  # the fragmented MP4 stays readable
        decoded = sum(1 for _ in container.decode(video=0))
    assert len(rec) - MP4_GOP <= decoded <= len(rec) + 1
