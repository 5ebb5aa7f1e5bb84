"""Screen recording to disk, with keyframe de-duplication, and a reader for recordings and videos.

Sources (all :class:`FrameSource`): :class:`ScreenSource` (a desktop monitor or a region of it,
through ``mss``), :class:`PageSource` (a web page in headless Chromium through Playwright) and
:class:`VideoSource` (a video file through PyAV). :class:`Recorder` grabs a source at a fixed
frame rate, keeps a frame only when the screen changed, and streams what it keeps to disk;
:class:`Recording` opens what it wrote, or a video file directly.

Change metric (:func:`thumbnail`, :func:`change_score`): a frame is converted to 8-bit grayscale
(ITU-R 601-2 luma, PIL mode ``"L"``) and box-averaged by the integer factor
``ceil(max(width, height) / thumb_max_side)`` (8 for 1920x1080 at the default 256, giving a
240x135 thumbnail: one thumbnail pixel per 8x8 block). The change score of a frame is the fraction
of thumbnail pixels whose value differs by more than ``tolerance`` gray levels (default 8 of 255)
from the thumbnail of the last KEPT frame (1.0 when the sizes differ or there is none). A frame is
kept when its score is above ``threshold`` (default 0.001, i.e. 0.1 % of the screen: about 32
blocks of 8x8 pixels at 1920x1080, a short word of 16-pixel text). Averaging blocks absorbs codec
noise and anti-aliasing; comparing with the last kept frame, not the previous one, makes slow
changes (typing one character per frame) add up until they are kept.

On-disk format of a recording directory (version 1)::

    index.jsonl   append-only, one JSON object per line, flushed and fsynced per line:
                  {"kind": "start", "version": 1, "start_time", "source", "config", "created"}
                  {"kind": "frame", "index", "t", "wall_time", "file", "width", "height", "score",
                   "reason", "dropped_before"}
                  {"kind": "mark", "t", "wall_time", "label", "data"}
                  {"kind": "end", "t", "wall_time", "stats"}
    frames/       00000000.png (or .jpg), one file per kept frame, written atomically
    recording.mp4 optional: the kept frames as a variable-frame-rate H.264 video

``t`` is seconds since the recording started (the start line's ``start_time``, wall clock,
seconds since the epoch); ``wall_time`` is ``start_time + t`` (``null`` for a video without a
creation time). A frame file is written to a temporary name, fsynced and renamed before its
index line is appended, so the index only ever names complete files: a SIGKILL loses at most the
frame being written, and a torn last index line (a kill in the middle of ``write``) is skipped
by the reader. The MP4 is fragmented (``frag_keyframe+empty_moov``, one fragment per 12 kept
frames) and flushed per packet, so after a crash it is readable up to its last complete fragment
(it loses at most the last 12 kept frames); the frames and index are the source of truth.
Memory stays bounded: the recorder holds one frame and one thumbnail.
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from giraffe_core.errors import ConfigError, GiraffeError, InputError
from giraffe_core.extras import require

__all__ = [
    "CaptureError",
    "FORMAT_VERSION",
    "FrameRecord",
    "FrameSource",
    "Grab",
    "INDEX_NAME",
    "MP4_GOP",
    "Mark",
    "PageSource",
    "Recorder",
    "RecorderConfig",
    "RecorderStats",
    "Recording",
    "RecordingError",
    "ScreenSource",
    "VIDEO_NAME",
    "VideoSource",
    "change_score",
    "format_timestamp",
    "record",
    "thumbnail",
]

logger = logging.getLogger(__name__)

#: version of the on-disk format written by :class:`Recorder`
FORMAT_VERSION = 1
#: the append-only index of a recording directory
INDEX_NAME = "index.jsonl"
#: the optional MP4 of a recording directory
VIDEO_NAME = "recording.mp4"
FRAMES_DIR = "frames"
#: kept frames per MP4 fragment (one GOP): what a crash can cost the MP4 at most
MP4_GOP = 12


class CaptureError(GiraffeError, OSError):
    """A source cannot capture: no X display, a monitor or region off the screen, a browser that
    does not start or a page that does not load."""

    code = "capture-error"


class RecordingError(GiraffeError, OSError):
    """A recording or video cannot be read or written: not a recording, an unreadable video, a
    corrupt index, an output directory that already holds something, or an empty recording."""

    code = "recording-error"


# --------------------------------------------------------------------------------------------------
# the change metric
# --------------------------------------------------------------------------------------------------


def _as_image(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
        return Image.fromarray(image)
    raise InputError(f"a frame must be a PIL image or a uint8 (H, W[, 3|4]) array, got {type(image).__name__}",
                     hint="convert it with PIL.Image.fromarray(array.astype('uint8'))")


def thumbnail(image: Image.Image | np.ndarray, max_side: int = 256) -> np.ndarray:
    """The frame's change thumbnail: 8-bit grayscale (ITU-R 601-2 luma), box-averaged.

    Args:
        image: the frame (PIL image, or an ``(H, W[, C])`` uint8 array).
        max_side: the thumbnail's longer side is at most this many pixels; the frame is reduced
            by the integer factor ``ceil(max(width, height) / max_side)`` (each thumbnail pixel is
            the mean of a ``factor x factor`` block of the frame).

    Returns:
        ``(h, w)`` uint8 array.
    """
    gray = _as_image(image).convert("L")
    factor = max(1, math.ceil(max(gray.size) / max_side))
    if factor > 1:
        gray = gray.reduce(factor)
    return np.asarray(gray)


def change_score(previous: np.ndarray | None, current: np.ndarray, tolerance: int = 8) -> float:
    """Fraction (0-1) of thumbnail pixels that differ by more than ``tolerance`` gray levels.

    1.0 when there is no previous thumbnail or the two differ in size.
    """
    if previous is None or previous.shape != current.shape:
        return 1.0
    diff = np.maximum(previous, current) - np.minimum(previous, current)  # |a - b| without overflow
    return float(np.count_nonzero(diff > tolerance)) / diff.size


def format_timestamp(seconds: float, decimals: int = 0) -> str:
    """``HH:MM:SS`` (with ``decimals`` digits of fractions of a second) for ``seconds`` >= 0."""
    seconds = max(0.0, float(seconds))
    scale = 10**decimals
    units = math.floor(seconds * scale + 0.5)  # half up: 30.25 s -> 30.3
    whole, frac = divmod(units, scale)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{text}.{frac:0{decimals}d}" if decimals else text


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------


@dataclass
class Grab:
    """One captured frame.

    Attributes:
        image: the frame, RGB.
        wall_time: when it was captured, seconds since the epoch (live sources; for a video, the
            file's creation time plus ``t`` when known, else ``None``).
        t: media time of a video frame, seconds from the first frame (``None`` for live sources).
        source_t: for a video, the media time of the decoded frame shown at ``t``, seconds.
    """

    image: Image.Image
    wall_time: float | None = None
    t: float | None = None
    source_t: float | None = None


@runtime_checkable
class FrameSource(Protocol):
    """Something a :class:`Recorder` can grab frames from.

    ``live`` sources (screens, pages) are paced by the recorder at its frame rate in real time;
    other sources (files) are read as fast as they decode, each frame carrying its media time.
    :meth:`open`, :meth:`grab` and :meth:`close` are called from the same thread.
    """

    live: bool

    def open(self) -> None:
        """Acquire what capturing needs (display connection, browser, file)."""
        ...

    def grab(self) -> Grab | None:
        """The next frame; ``None`` when a non-live source has no more frames."""
        ...

    def close(self) -> None:
        """Release everything; safe to call twice."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for the recording's start line."""
        ...


def _is_linux() -> bool:
    return sys.platform.startswith("linux")


class ScreenSource:
    """A desktop monitor, or a region of the screen, captured with ``mss`` (the ``agent`` extra).

    Args:
        monitor: mss monitor number: 1 is the first monitor, 0 all monitors as one image.
        region: ``(x, y, width, height)`` in screen pixels (the virtual screen of all monitors);
            when given, ``monitor`` is ignored.
        display: X display on Linux (default ``$DISPLAY``).
        with_cursor: draw the mouse cursor into frames (Linux only).

    The mss connection is opened in :meth:`open` and must be used from that thread.
    """

    live = True

    def __init__(self, monitor: int = 1, region: Sequence[int] | None = None, *, display: str | None = None,
                 with_cursor: bool = False) -> None:
        if region is not None:
            if len(region) != 4 or any(int(v) != v for v in region) or region[2] < 1 or region[3] < 1:
                raise ConfigError(f"a region is (x, y, width, height) in whole pixels, width and height >= 1, "
                                  f"got {tuple(region)}")
            region = tuple(int(v) for v in region)
        if monitor < 0:
            raise ConfigError(f"monitor must be >= 0 (1: the first monitor, 0: all together), got {monitor}")
        self.monitor = monitor
        self.region: tuple[int, int, int, int] | None = region  # type: ignore[assignment]
        self.display = display
        self.with_cursor = with_cursor
        self._sct: Any = None
        self._box: dict[str, int] | None = None

    def open(self) -> None:
        """Connect to the display and check the monitor or region (nothing to do when open)."""
        if self._sct is not None:
            return
        mss = require("mss", extra="agent", purpose="capture the screen")
        kwargs: dict[str, Any] = {}
        display = self.display
        if _is_linux():
            display = display or os.environ.get("DISPLAY")
            if not display:
                raise CaptureError("no X display to capture: DISPLAY is not set",
                                   hint="run inside a desktop session, or start one with `Xvfb :99 &` and set "
                                        "DISPLAY=:99 (or pass display=':99' / --display :99)")
            kwargs.update(display=display, with_cursor=self.with_cursor)
        factory = getattr(mss, "MSS", None) or mss.mss
        try:
            self._sct = factory(**kwargs)
            monitors = self._sct.monitors
        except Exception as exc:  # mss raises ScreenShotError (or XError, a subclass) for a bad display
            self.close()
            raise CaptureError(f"cannot open X display {display!r} for capture: {exc}",
                               hint="check that the X server is running and DISPLAY names it "
                                    "(e.g. `Xvfb :99 &` then DISPLAY=:99)") from exc
        self.display = display
        if self.region is not None:
            x, y, w, h = self.region
            screen = monitors[0]
            if x < screen["left"] or y < screen["top"] or x + w > screen["left"] + screen["width"] or \
                    y + h > screen["top"] + screen["height"]:
                self.close()
                raise CaptureError(
                    f"region {self.region} is outside the screen ({screen['width']}x{screen['height']} px at "
                    f"{screen['left']},{screen['top']})", hint="give x, y, width, height inside the screen")
            self._box = {"left": x, "top": y, "width": w, "height": h}
        else:
            if self.monitor >= len(monitors):
                self.close()
                raise CaptureError(f"there is no monitor {self.monitor}: this display has {len(monitors) - 1}",
                                   hint="use 1 for the first monitor, 0 for all monitors as one image")
            mon = monitors[self.monitor]
            self._box = {k: int(mon[k]) for k in ("left", "top", "width", "height")}

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the captured area, pixels (known after :meth:`open`)."""
        return None if self._box is None else (self._box["width"], self._box["height"])

    def grab(self) -> Grab:
        """Capture the monitor or region; ``wall_time`` is the middle of the capture call."""
        if self._sct is None or self._box is None:
            self.open()
        start = time.time()
        try:
            shot = self._sct.grab(self._box)
        except Exception as exc:
            raise CaptureError(f"screen capture failed on display {self.display!r}: {exc}",
                               hint="the X server may have gone away; restart the recording") from exc
        end = time.time()
        image = Image.frombuffer("RGB", shot.size, shot.raw, "raw", "BGRX", 0, 1)  # unpacks: a copy
        return Grab(image, wall_time=(start + end) / 2)

    def close(self) -> None:
        """Close the display connection."""
        if self._sct is not None:
            try:
                self._sct.close()
            finally:
                self._sct = None

    def describe(self) -> dict[str, Any]:
        """Kind, display, monitor or region."""
        display = self.display or (os.environ.get("DISPLAY") if _is_linux() else None)
        return {"kind": "screen", "display": display, "monitor": None if self.region else self.monitor,
                "region": list(self.region) if self.region else None, "size": list(self.size) if self.size else None}


#: Chromium flags for headless capture (no GPU, no background traffic)
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync")


class PageSource:
    """A web page in headless Chromium, screenshotted through Playwright's sync API (``agent`` extra).

    Pass a ``url`` (a browser is launched: Playwright's Chromium or the system one, see
    :func:`giraffe_agent.envs.chromium.find_chromium`) or an already open sync Playwright ``page``
    (used as is, not closed). Each grab is one viewport screenshot (PNG), about 30-60 ms at
    1280x720, so frame rates above ~10 fps are not reached.

    Args:
        url: the page to open.
        page: an open ``playwright.sync_api.Page`` instead of ``url``.
        viewport: (width, height) CSS pixels of a launched page.
        device_scale_factor: device pixels per CSS pixel of a launched page.
        wait_until: Playwright load state to wait for after navigation.
        timeout_s: navigation timeout, seconds.
    """

    live = True

    def __init__(self, url: str | None = None, *, page: Any = None, viewport: tuple[int, int] = (1280, 720),
                 device_scale_factor: float = 1.0, wait_until: str = "load", timeout_s: float = 30.0) -> None:
        if (url is None) == (page is None):
            raise ConfigError("PageSource needs exactly one of url= or page=")
        if len(viewport) != 2 or min(viewport) < 1:
            raise ConfigError(f"viewport is (width, height) CSS pixels >= 1, got {viewport}")
        self.url = url
        self.viewport = (int(viewport[0]), int(viewport[1]))
        self.device_scale_factor = float(device_scale_factor)
        self.wait_until = wait_until
        self.timeout_s = timeout_s
        self._page = page
        self._owned = page is None
        self._pw: Any = None
        self._browser: Any = None

    def open(self) -> None:
        """Launch Chromium and load the page (nothing to do for a given ``page``)."""
        if self._page is not None:
            return
        require("playwright", extra="agent", purpose="record a web page")
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright

        from giraffe_agent.envs.chromium import find_chromium

        browser = find_chromium()
        if browser is None:
            raise CaptureError("no Chromium to record the page with",
                               hint="`playwright install chromium` or `apt-get install chromium`, or set "
                                    "GIRAFFE_CHROMIUM to a Chromium executable")
        try:
            self._pw = sync_playwright().start()
            self._browser = self._pw.chromium.launch(executable_path=browser.path, headless=True,
                                                     args=list(CHROMIUM_ARGS))
            context = self._browser.new_context(
                viewport={"width": self.viewport[0], "height": self.viewport[1]},
                device_scale_factor=self.device_scale_factor)
            self._page = context.new_page()
            self._page.goto(self.url, wait_until=self.wait_until, timeout=self.timeout_s * 1000)
        except PlaywrightError as exc:
            self.close()
            raise CaptureError(f"cannot open {self.url!r} in Chromium ({browser.path}): {exc.message}",
                               hint="check the URL is reachable from this machine") from exc

    def grab(self) -> Grab:
        """One viewport screenshot; ``wall_time`` is the middle of the screenshot call."""
        if self._page is None:
            self.open()
        from playwright.sync_api import Error as PlaywrightError

        start = time.time()
        try:
            png = self._page.screenshot(type="png")
        except PlaywrightError as exc:
            raise CaptureError(f"page screenshot failed: {exc.message}",
                               hint="the page or browser was closed; restart the recording") from exc
        end = time.time()
        image = Image.open(io.BytesIO(png)).convert("RGB")
        return Grab(image, wall_time=(start + end) / 2)

    def close(self) -> None:
        """Close the browser this source launched (a given page is left open)."""
        if self._owned:
            browser, pw = self._browser, self._pw
            self._browser = self._pw = self._page = None
            try:
                if browser is not None:
                    browser.close()
            finally:
                if pw is not None:
                    pw.stop()

    def describe(self) -> dict[str, Any]:
        """Kind, URL and viewport."""
        url = self.url
        if self._page is not None:
            try:
                url = self._page.url
            except Exception:  # a closed page still describes itself by the URL it was given
                url = self.url
        return {"kind": "page", "url": url, "viewport": list(self.viewport),
                "device_scale_factor": self.device_scale_factor}


# --------------------------------------------------------------------------------------------------
# video files (PyAV)
# --------------------------------------------------------------------------------------------------


def _require_av() -> Any:
    return require("av", extra="agent", purpose="read or write video files")


@dataclass(frozen=True)
class _VideoInfo:
    """What demuxing a video (no decoding) tells: frame times relative to the first frame."""

    times: list[float]  # seconds from the first frame, sorted
    end: float  # seconds: last frame time + its duration
    first_pts: int  # pts of the first frame, in the stream's time base
    width: int
    height: int
    codec: str
    creation_time: float | None


def _open_container(path: Path) -> Any:
    av = _require_av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise RecordingError(f"cannot read video {str(path)!r}: {exc}",
                             hint="is it a video file (MP4, MKV, WebM...)? check it with `ffprobe FILE`, or "
                                  "re-encode it") from exc
    if not container.streams.video:
        container.close()
        raise RecordingError(f"{str(path)!r} has no video stream", hint="pass a file with video in it")
    return container


def _creation_time(container: Any) -> float | None:
    value = container.metadata.get("creation_time")
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _probe_video(path: Path) -> _VideoInfo:
    """Demux (without decoding) the first video stream: frame times, size, codec, creation time."""
    av = _require_av()
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        base = stream.time_base
        pts: list[int] = []
        last = (-1, 0)  # (pts, duration) of the latest frame
        try:
            for packet in container.demux(stream):
                if packet.pts is not None:
                    pts.append(packet.pts)
                    if packet.pts > last[0]:
                        last = (packet.pts, packet.duration or 0)
        except (av.FFmpegError, OSError) as exc:
            if not pts:
                raise RecordingError(f"cannot read video {str(path)!r}: {exc}",
                                     hint="the file is corrupt or truncated; re-encode it") from exc
            logger.warning("video %s is damaged after %d frames (%s); reading what precedes it", path, len(pts), exc)
        if not pts:
            raise RecordingError(f"video {str(path)!r} has no frames", hint="pass a video with at least one frame")
        pts.sort()
        first = pts[0]
        times = [float((p - first) * base) for p in pts]
        if last[1]:
            step = float(last[1] * base)
        else:
            rate = stream.average_rate or stream.guessed_rate
            step = float(1 / rate) if rate else (times[-1] / max(1, len(times) - 1) or 1.0)
        ctx = stream.codec_context
        return _VideoInfo(times, times[-1] + step, first, int(ctx.width), int(ctx.height), ctx.name,
                          _creation_time(container))
    finally:
        container.close()


def _sample_times(end: float, fps: float) -> list[float]:
    """Sample times ``k / fps`` (seconds) with ``k / fps < end``."""
    count = max(1, math.ceil(end * fps - 1e-6))
    return [k / fps for k in range(count)]


def _decode_samples(path: Path, info: _VideoInfo, targets: Sequence[float], wanted: Iterable[int] | None = None,
                    *, seek_gap_s: float = 5.0) -> Iterator[tuple[int, Any, float]]:
    """Decode the frames on screen at the sample times ``targets`` (seconds from the first frame).

    The frame shown at time ``t`` is the last decoded frame whose time is ``<= t`` (the first
    frame for ``t`` before it). Yields ``(sample index, av.VideoFrame, frame time)`` in order for
    the samples in ``wanted`` (all by default); seeks ahead when the next wanted sample is more
    than ``seek_gap_s`` seconds past the decoding position.
    """
    av = _require_av()
    order = sorted(set(range(len(targets)) if wanted is None else wanted))
    if not order:
        return
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base = stream.time_base
        eps = 1e-6

        def frames_from(seek_pts: int | None) -> Iterator[tuple[Any, float]]:
            if seek_pts is not None:
                container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
            try:
                for fr in container.decode(stream):
                    if fr.pts is not None:
                        yield fr, float((fr.pts - info.first_pts) * base)
            except (av.FFmpegError, OSError) as exc:
                logger.warning("video %s: decoding stopped early: %s", path, exc)

        decoded = frames_from(None)
        previous: tuple[Any, float] | None = None
        pending: tuple[Any, float] | None = None  # a frame read past the current target
        for index in order:
            target = targets[index]
            if previous is not None and target - previous[1] > seek_gap_s:
                decoded = frames_from(info.first_pts + int(target / base))
                previous = pending = None
            while True:
                item = pending if pending is not None else next(decoded, None)
                pending = None
                if item is None:
                    break
                if item[1] > target + eps and previous is not None:
                    pending = item
                    break
                previous = item
            if previous is None:
                break
            yield index, previous[0], previous[1]
    finally:
        container.close()


class VideoSource:
    """A video file read through PyAV (the ``agent`` extra), sampled at ``fps``.

    Not live: a :class:`Recorder` reads it as fast as it decodes, and each frame's ``t`` is its
    sample time ``k / fps`` (seconds from the first frame), showing the last frame whose media
    time is ``<= t``. ``wall_time`` is the file's ``creation_time`` metadata plus ``t`` when the
    file has one, else ``None``.
    """

    live = False

    def __init__(self, path: str | os.PathLike, fps: float = 1.0) -> None:
        if not fps > 0:
            raise ConfigError(f"fps must be > 0, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.info: _VideoInfo | None = None
        self._frames: Iterator[tuple[int, Any, float]] | None = None
        self._targets: list[float] = []

    @property
    def start_time(self) -> float | None:
        """The video's creation time, seconds since the epoch, when its metadata has one."""
        if self.info is None:
            self.info = _probe_video(self.path)
        return self.info.creation_time

    def open(self) -> None:
        """Probe the file and start decoding (nothing to do when open)."""
        if self._frames is not None:
            return
        if self.info is None:
            self.info = _probe_video(self.path)
        self._targets = _sample_times(self.info.end, self.fps)
        self._frames = _decode_samples(self.path, self.info, self._targets)

    def grab(self) -> Grab | None:
        """The next sampled frame, or ``None`` at the end of the file."""
        if self._frames is None:
            self.open()
        assert self._frames is not None and self.info is not None
        item = next(self._frames, None)
        if item is None:
            return None
        index, frame, frame_t = item
        t = self._targets[index]
        start = self.info.creation_time
        return Grab(frame.to_image(), wall_time=None if start is None else start + t, t=t, source_t=frame_t)

    def close(self) -> None:
        """Stop decoding (closes the file)."""
        if self._frames is not None:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()
            self._frames = None

    def describe(self) -> dict[str, Any]:
        """Kind, path, sampling rate and the video's size."""
        info = self.info
        return {"kind": "video", "path": str(self.path.resolve()), "fps": self.fps,
                "size": [info.width, info.height] if info else None, "codec": info.codec if info else None}


class _Mp4Writer:
    """Kept frames as a fragmented, variable-frame-rate H.264 MP4 (PyAV)."""

    def __init__(self, path: Path, size: tuple[int, int]) -> None:
        av = _require_av()
        self.av = av
        # yuv420p needs even sides: the last odd column / row is cropped
        self.size = (max(2, size[0] - size[0] % 2), max(2, size[1] - size[1] % 2))
        # fragmented (a fragment per GOP) and flushed per packet: readable after a crash
        self.container = av.open(str(path), mode="w", options={
            "movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"})
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=1000)
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = Fraction(1, 1000)
        self.stream.codec_context.gop_size = MP4_GOP
        if codec == "libx264":
            # zerolatency: no lookahead or B-frames, so every frame is muxed as soon as it is added
            self.stream.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "20"}
        self.last_pts = -1
        self.resized_warned = False

    def add(self, image: Image.Image, t: float) -> None:
        if image.size != self.size:
            if image.width >= self.size[0] and image.height >= self.size[1] and \
                    image.width - self.size[0] <= 1 and image.height - self.size[1] <= 1:
                image = image.crop((0, 0, *self.size))
            else:
                if not self.resized_warned:
                    logger.warning("frame size %s differs from the MP4's %s; resizing frames for the MP4",
                                   image.size, self.size)
                    self.resized_warned = True
                image = image.resize(self.size, Image.Resampling.BILINEAR)
        frame = self.av.VideoFrame.from_image(image)
        frame.pts = max(self.last_pts + 1, round(t * 1000))
        frame.time_base = Fraction(1, 1000)
        self.last_pts = frame.pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()


# --------------------------------------------------------------------------------------------------
# the recorder
# --------------------------------------------------------------------------------------------------


class RecorderConfig(BaseModel):
    """How a :class:`Recorder` samples, de-duplicates and stores frames."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fps: float = Field(2.0, gt=0, le=120, description="grabs per second of a live source")
    threshold: float = Field(0.001, ge=0, le=1, description="keep a frame when its change score (fraction of "
                             "thumbnail pixels changed since the last kept frame) is above this")
    tolerance: int = Field(8, ge=0, le=254, description="gray levels (of 255) a thumbnail pixel may move unchanged")
    thumb_max_side: int = Field(256, ge=8, le=4096, description="longer side of the change thumbnail, pixels")
    dedup: bool = Field(True, description="False: keep every grabbed frame")
    max_gap_s: float | None = Field(None, gt=0, description="keep a frame at least this often, seconds, even "
                                    "when nothing changed (None: never)")
    image_format: Literal["png", "jpeg"] = Field("png", description="frame files: lossless PNG or JPEG")
    jpeg_quality: int = Field(90, ge=1, le=100)
    png_compress_level: int = Field(1, ge=0, le=9, description="zlib level: 1 is fast and ~as small on screens")
    mp4: bool = Field(False, description="also write the kept frames to recording.mp4 (PyAV)")
    fsync: bool = Field(True, description="fsync every frame file and index line (survives power loss)")


@dataclass(frozen=True)
class FrameRecord:
    """One frame of a recording.

    Attributes:
        index: position in the recording (0, 1, 2...).
        t: seconds since the recording started.
        wall_time: capture time, seconds since the epoch (``None`` when unknown).
        width, height: pixels.
        score: change score against the previous frame (0-1; 1.0 for the first; ``None`` for a
            video opened directly until :meth:`Recording.scores` computed it).
        file: the frame's image file, relative to the recording directory (``None`` for videos).
        reason: why it was kept: "first", "change", "mark", "gap", "all" (dedup off) or "sample"
            (a video opened directly).
        dropped_before: unchanged grabs dropped between the previous kept frame and this one.
        source_t: for videos, media time of the decoded frame shown, seconds.
    """

    index: int
    t: float
    wall_time: float | None
    width: int
    height: int
    score: float | None = None
    file: str | None = None
    reason: str = "change"
    dropped_before: int = 0
    source_t: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), pixels."""
        return self.width, self.height


@dataclass(frozen=True)
class Mark:
    """An event noted during a recording: ``label`` at ``t`` seconds (``wall_time``: epoch seconds)."""

    t: float
    wall_time: float | None
    label: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecorderStats:
    """Counters of a recorder.

    Attributes:
        grabs: frames grabbed (or added); kept, dropped: kept and de-duplicated among them.
        late: frame-rate ticks skipped because capturing fell behind.
        marks: event marks written.
        bytes_written: bytes of frame files written.
        elapsed_s: seconds since the recording started; last_score: change score of the last grab.
        grab_s, write_s: seconds spent capturing and writing frames.
    """

    grabs: int = 0
    kept: int = 0
    dropped: int = 0
    late: int = 0
    marks: int = 0
    bytes_written: int = 0
    elapsed_s: float = 0.0
    last_score: float = 0.0
    grab_s: float = 0.0
    write_s: float = 0.0


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n").encode()


class Recorder:
    """Streams a recording to a directory: de-duplicated frame files plus an append-only index.

    Use it with a source (``run`` grabs at ``config.fps`` until a duration, :meth:`stop`, or the
    end of a file) or without one (push frames with :meth:`add`, e.g. an agent's screenshots).
    :meth:`mark`, :meth:`stop` and :meth:`add` may be called from any thread. ``close`` (or the
    ``with`` block's end) writes the end line and finishes the MP4.

    Args:
        out: a directory that does not exist yet or is empty.
        config: frame rate, threshold, formats.
        source: what :meth:`run` grabs.
        start_time: the recording's origin, seconds since the epoch; default now (for a video
            source: the file's creation time when it has one, else unknown).

    Raises:
        RecordingError: ``out`` already holds files.
    """

    def __init__(self, out: str | os.PathLike, config: RecorderConfig | None = None, *,
                 source: FrameSource | None = None, start_time: float | None = None) -> None:
        self.config = config or RecorderConfig()
        self.source = source
        self.directory = Path(out)
        if self.directory.exists() and (not self.directory.is_dir() or any(self.directory.iterdir())):
            what = "a recording" if (self.directory / INDEX_NAME).exists() else "files"
            raise RecordingError(f"{self.directory} already holds {what}",
                                 hint="record into a new (or empty) directory; recordings are never overwritten")
        if start_time is None:
            start_time = time.time() if source is None or source.live else getattr(source, "start_time", None)
        self.start_time = start_time
        self._created = time.time()
        (self.directory / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._fd: int | None = os.open(self.directory / INDEX_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fsync_dir(self.directory)
        self.stats = RecorderStats()
        self._thumb: np.ndarray | None = None
        self._last_t: float | None = None
        self._last_kept_t: float | None = None
        self._force: str | None = None
        self._dropped_since_kept = 0
        self._mp4: _Mp4Writer | None = None
        self._closed = False
        self._write_line({"kind": "start", "version": FORMAT_VERSION, "start_time": start_time,
                          "source": source.describe() if source is not None else {"kind": "push"},
                          "config": self.config.model_dump(),
                          "created": datetime.fromtimestamp(self._created, timezone.utc).isoformat()})

    # ---- writing ----

    def _write_line(self, obj: dict[str, Any]) -> None:
        if self._fd is None:
            raise RecordingError(f"the recorder of {self.directory} is closed", hint="start a new Recorder")
        data = _json_line(obj)
        written = 0
        while written < len(data):  # one write in practice; loop for short writes
            written += os.write(self._fd, data[written:])
        if self.config.fsync:
            os.fsync(self._fd)

    def _write_frame(self, index: int, image: Image.Image) -> tuple[str, int]:
        ext = "png" if self.config.image_format == "png" else "jpg"
        rel = f"{FRAMES_DIR}/{index:08d}.{ext}"
        path = self.directory / rel
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as handle:
            if self.config.image_format == "png":
                image.save(handle, format="PNG", compress_level=self.config.png_compress_level)
            else:
                image.save(handle, format="JPEG", quality=self.config.jpeg_quality)
            handle.flush()
            if self.config.fsync:
                os.fsync(handle.fileno())
            size = handle.tell()
        os.replace(tmp, path)
        if self.config.fsync:
            _fsync_dir(path.parent)
        return rel, size

    def _times(self, t: float | None, wall_time: float | None) -> tuple[float, float | None]:
        if t is None:
            wall_time = time.time() if wall_time is None else wall_time
            if self.start_time is None:
                raise InputError("this recording has no start time, so frames need t= (seconds since the start)")
            return wall_time - self.start_time, wall_time
        if wall_time is None and self.start_time is not None:
            wall_time = self.start_time + t
        return float(t), wall_time

    def add(self, image: Image.Image | np.ndarray, *, t: float | None = None, wall_time: float | None = None,
            force: bool = False) -> FrameRecord | None:
        """Offer one frame; it is kept (written) when it changed enough, else dropped.

        Args:
            image: the frame (PIL image or ``(H, W, 3)`` uint8 array).
            t: seconds since the recording's start (default: from ``wall_time``).
            wall_time: capture time, seconds since the epoch (default: now).
            force: keep it whatever its change score.

        Returns:
            The kept frame's record, or ``None`` when it was dropped as unchanged.
        """
        image = _as_image(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        with self._lock:
            if self._closed:
                raise RecordingError(f"the recorder of {self.directory} is closed", hint="start a new Recorder")
            t, wall_time = self._times(t, wall_time)
            if self._last_t is not None and t < self._last_t:
                raise InputError(f"frames must come in time order: t={t:.3f}s after t={self._last_t:.3f}s")
            self._last_t = t
            cfg = self.config
            thumb = thumbnail(image, cfg.thumb_max_side)
            score = change_score(self._thumb, thumb, cfg.tolerance)
            self.stats.grabs += 1
            self.stats.last_score = score
            reason = None
            if self._thumb is None:
                reason = "first"
            elif force or self._force:
                reason = self._force or "mark"
            elif not cfg.dedup:
                reason = "all"
            elif score > cfg.threshold:
                reason = "change"
            elif cfg.max_gap_s is not None and self._last_kept_t is not None and t - self._last_kept_t >= cfg.max_gap_s:
                reason = "gap"
            if reason is None:
                self.stats.dropped += 1
                self._dropped_since_kept += 1
                return None
            began = time.perf_counter()
            index = self.stats.kept
            rel, size = self._write_frame(index, image)
            if cfg.mp4:
                if self._mp4 is None:
                    self._mp4 = _Mp4Writer(self.directory / VIDEO_NAME, image.size)
                self._mp4.add(image, t)
            record = FrameRecord(index=index, t=round(t, 6), wall_time=wall_time, width=image.width,
                                 height=image.height, score=round(score, 6), file=rel, reason=reason,
                                 dropped_before=self._dropped_since_kept)
            line = {"kind": "frame", **asdict(record)}
            line.pop("source_t")
            self._write_line(line)
            self.stats.kept += 1
            self.stats.bytes_written += size
            self.stats.write_s += time.perf_counter() - began
            self._dropped_since_kept = 0
            self._thumb = thumb
            self._last_kept_t = t
            self._force = None
            return record

    def mark(self, label: str, *, t: float | None = None, wall_time: float | None = None,
             data: dict[str, Any] | None = None, keep_next: bool = True) -> Mark:
        """Note that something happened at ``t`` (default: now); written to the index at once.

        Args:
            label: what happened, e.g. "deploy started".
            t, wall_time: when, as in :meth:`add` (default: now; pass ``t`` when the frames are
                pushed with their own ``t`` rather than the wall clock).
            data: extra JSON-ready details.
            keep_next: keep the next grabbed frame even if unchanged, so the screen at the event
                is in the recording.
        """
        if not isinstance(label, str) or not label.strip():
            raise InputError("a mark needs a non-empty label")
        with self._lock:
            t, wall_time = self._times(t, wall_time)
            try:
                json.dumps(data or {}, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InputError(f"mark data must be JSON-serialisable: {exc}") from exc
            mark = Mark(round(t, 6), wall_time, label, dict(data or {}))
            self._write_line({"kind": "mark", **asdict(mark)})
            self.stats.marks += 1
            if keep_next:
                self._force = "mark"
            return mark

    # ---- running a source ----

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current grab (thread-safe, signal-safe)."""
        self._stop.set()

    def run(self, duration_s: float | None = None, *, max_frames: int | None = None,
            on_grab: Callable[[RecorderStats, FrameRecord | None], None] | None = None) -> RecorderStats:
        """Grab ``source`` until ``duration_s`` seconds passed, :meth:`stop`, or a file ends.

        A live source is grabbed at ``config.fps``: ticks at ``k / fps`` seconds after the run
        started; when a grab and write take longer than a tick, the missed ticks are skipped
        (counted in ``stats.late``), never bunched. Opens the source in this thread and closes it
        at the end (the recorder stays open for more marks; ``close`` it).

        Args:
            duration_s: seconds of recording (wall clock for live sources, media time for files);
                ``None``: until :meth:`stop` or the end of the source.
            max_frames: stop after this many grabs.
            on_grab: called after every grab with the stats and the kept frame (or ``None``).
        """
        if self.source is None:
            raise ConfigError("this Recorder has no source to run", hint="pass source= or push frames with add()")
        if duration_s is not None and duration_s <= 0:
            raise ConfigError(f"duration_s must be > 0, got {duration_s}")
        source = self.source
        source.open()
        try:
            period = 1.0 / self.config.fps
            began = time.monotonic()
            tick = 0
            grabs = 0
            while not self._stop.is_set():
                if max_frames is not None and grabs >= max_frames:
                    break
                if source.live and duration_s is not None and time.monotonic() - began >= duration_s:
                    break
                grab_began = time.perf_counter()
                grab = source.grab()
                self.stats.grab_s += time.perf_counter() - grab_began
                if grab is None:
                    break
                if not source.live and duration_s is not None and grab.t is not None and grab.t >= duration_s:
                    break
                grabs += 1
                t = grab.t
                if t is None and grab.wall_time is not None and self.start_time is not None:
                    t = grab.wall_time - self.start_time
                    if self._last_t is not None and t < self._last_t:  # the wall clock was set back
                        logger.warning("the wall clock went back %.3f s; stamping the frame at the previous time",
                                       self._last_t - t)
                        t = self._last_t
                record = self.add(grab.image, t=t, wall_time=grab.wall_time)
                if self.start_time is not None:
                    self.stats.elapsed_s = time.time() - self.start_time if source.live else (grab.t or 0.0)
                if on_grab is not None:
                    on_grab(self.stats, record)
                if not source.live:
                    continue
                tick += 1
                now = time.monotonic() - began
                if now > tick * period:
                    skipped = math.floor(now / period) - tick + 1
                    self.stats.late += skipped
                    tick += skipped
                wait = tick * period - (time.monotonic() - began)
                if duration_s is not None:
                    wait = min(wait, duration_s - (time.monotonic() - began))
                if wait > 0:
                    self._stop.wait(wait)
        finally:
            source.close()
        return self.stats

    def close(self, *, t: float | None = None) -> RecorderStats:
        """Write the end line, finish the MP4 and close the index (idempotent).

        Args:
            t: the recording's end, seconds since its start (default: now for live sources and
                pushed frames, one sample period after the last frame of a file; never before
                the last frame).
        """
        with self._lock:
            if self._closed:
                return self.stats
            self._closed = True
            try:
                if self._mp4 is not None:
                    self._mp4.close()
            finally:
                now = time.time()
                last = self._last_t or 0.0
                if t is not None:
                    end_t = float(t)
                elif self.source is not None and not self.source.live:
                    fps = getattr(self.source, "fps", self.config.fps)
                    end_t = last + 1.0 / fps if self._last_t is not None else 0.0
                    info = getattr(self.source, "info", None)
                    if info is not None:
                        end_t = min(end_t, max(info.end, last))
                elif self.start_time is not None:
                    end_t = now - self.start_time
                else:
                    end_t = last
                self.stats.elapsed_s = max(end_t, last)
                self._write_line({"kind": "end", "t": round(max(end_t, last), 6),
                                  "wall_time": now if self.source is None or self.source.live else None,
                                  "stats": asdict(self.stats)})
                os.close(self._fd)  # type: ignore[arg-type]
                self._fd = None
        return self.stats

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record(source: FrameSource, out: str | os.PathLike, *, duration_s: float | None = None,
           config: RecorderConfig | None = None) -> Recording:
    """Record ``source`` into ``out`` for ``duration_s`` seconds (or to its end) and open the result."""
    with Recorder(out, config, source=source) as recorder:
        recorder.run(duration_s)
    return Recording.open(out)


# --------------------------------------------------------------------------------------------------
# the reader
# --------------------------------------------------------------------------------------------------


class Recording:
    """A recording directory written by :class:`Recorder`, or a video file opened as a recording.

    Open with :meth:`open`. ``frames`` (:class:`FrameRecord`, in time order), ``marks``,
    ``duration`` (seconds), ``start_time`` (epoch seconds or ``None``), ``source`` (the start
    line's description), ``complete`` (the end line is there: it was closed, not killed),
    ``kind`` ("directory" or "video"). Images are read on demand (:meth:`image`, :meth:`images`):
    nothing but the index is held in memory.
    """

    def __init__(self, path: Path, kind: Literal["directory", "video"], frames: list[FrameRecord],
                 marks: list[Mark], *, start_time: float | None, duration: float, source: dict[str, Any],
                 complete: bool, config: dict[str, Any] | None = None, fps: float | None = None) -> None:
        self.path = path
        self.kind = kind
        self.frames = frames
        self.marks = marks
        self.start_time = start_time
        self.duration = duration
        self.source = source
        self.complete = complete
        self.config = config or {}
        self.fps = fps
        self._times = [f.t for f in frames]
        self._scores: list[float] | None = None
        self._video: _VideoInfo | None = None
        if kind == "directory":
            self._scores = [1.0 if f.score is None else f.score for f in frames]

    def __repr__(self) -> str:
        return (f"Recording({str(self.path)!r}, kind={self.kind!r}, frames={len(self.frames)}, "
                f"duration={self.duration:.1f}s, marks={len(self.marks)})")

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[FrameRecord]:
        return iter(self.frames)

    def __getitem__(self, index: int) -> FrameRecord:
        return self.frames[index]

    @classmethod
    def open(cls, path: str | os.PathLike, *, fps: float = 1.0) -> Recording:
        """Open a recording directory, or a video file sampled at ``fps`` frames per second.

        Raises:
            RecordingError: nothing there, a directory without ``index.jsonl``, a corrupt index,
                or a file that is not a readable video.
        """
        p = Path(path).expanduser()
        if p.is_dir():
            return cls._open_directory(p)
        if p.is_file():
            if not fps > 0:
                raise ConfigError(f"fps must be > 0, got {fps}")
            return cls._open_video(p, float(fps))
        raise RecordingError(f"no recording or video at {str(p)!r}",
                             hint="pass a directory written by `giraffe record` or a video file")

    @classmethod
    def _open_directory(cls, path: Path) -> Recording:
        index = path / INDEX_NAME
        if not index.is_file():
            raise RecordingError(f"{path} is not a recording: it has no {INDEX_NAME}",
                                 hint="pass a directory written by `giraffe record` (or Recorder)")
        raw = index.read_bytes()
        lines = raw.split(b"\n")
        torn = lines[-1] != b""  # the last line has no newline: the writer died inside write()
        start: dict[str, Any] | None = None
        end: dict[str, Any] | None = None
        frames: list[FrameRecord] = []
        marks: list[Mark] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                if number == len(lines) and torn:
                    logger.warning("%s: skipping a torn last line (the recorder was killed while writing it)", index)
                    break
                raise RecordingError(f"{index} line {number} is not JSON: {exc}",
                                     hint="the index was edited or damaged; only its last line may be torn") from exc
            kind = obj.get("kind") if isinstance(obj, dict) else None
            try:
                if kind == "start":
                    start = obj
                elif kind == "frame":
                    frames.append(FrameRecord(
                        index=int(obj["index"]), t=float(obj["t"]), wall_time=obj.get("wall_time"),
                        width=int(obj["width"]), height=int(obj["height"]), score=obj.get("score"),
                        file=str(obj["file"]), reason=obj.get("reason", "change"),
                        dropped_before=int(obj.get("dropped_before", 0))))
                elif kind == "mark":
                    marks.append(Mark(float(obj["t"]), obj.get("wall_time"), str(obj["label"]), obj.get("data") or {}))
                elif kind == "end":
                    end = obj
                else:
                    raise KeyError("kind")
            except (KeyError, TypeError, ValueError) as exc:
                raise RecordingError(f"{index} line {number} is not a valid {kind or 'index'} entry: {exc}",
                                     hint="the index was edited or damaged") from exc
        if start is None:
            raise RecordingError(f"{index} has no start line", hint="the index is damaged; it cannot be read")
        if start.get("version") != FORMAT_VERSION:
            raise RecordingError(f"{index} is format version {start.get('version')}; this Giraffe reads "
                                 f"version {FORMAT_VERSION}", hint="upgrade giraffe")
        for i, frame in enumerate(frames):
            if frame.index != i:
                raise RecordingError(f"{index}: frame {i} is numbered {frame.index}", hint="the index is damaged")
        config = start.get("config") or {}
        fps = config.get("fps")
        if end is not None:
            duration = float(end["t"])
        elif frames:
            duration = frames[-1].t + (1.0 / fps if fps else 0.0)
        else:
            duration = 0.0
        if frames:
            duration = max(duration, frames[-1].t)
        return cls(path, "directory", frames, marks, start_time=start.get("start_time"), duration=duration,
                   source=start.get("source") or {}, complete=end is not None, config=config, fps=fps)

    @classmethod
    def _open_video(cls, path: Path, fps: float) -> Recording:
        info = _probe_video(path)
        targets = _sample_times(info.end, fps)
        frames = []
        for k, t in enumerate(targets):
            shown = bisect.bisect_right(info.times, t + 1e-6) - 1
            frames.append(FrameRecord(index=k, t=t, wall_time=None if info.creation_time is None else
                                      info.creation_time + t, width=info.width, height=info.height,
                                      file=None, reason="sample", source_t=info.times[max(0, shown)]))
        source = {"kind": "video", "path": str(path.resolve()), "fps": fps, "size": [info.width, info.height],
                  "codec": info.codec}
        recording = cls(path, "video", frames, [], start_time=info.creation_time, duration=info.end, source=source,
                        complete=True, fps=fps)
        recording._video = info
        return recording

    # ---- access ----

    def frame_at(self, t: float) -> FrameRecord:
        """The frame on screen at ``t`` seconds: the last one with ``frame.t <= t`` (the first before it)."""
        if not self.frames:
            raise RecordingError(f"{self.path} has no frames")
        return self.frames[max(0, bisect.bisect_right(self._times, t + 1e-9) - 1)]

    def _path(self, frame: FrameRecord) -> Path:
        assert frame.file is not None
        return self.path / frame.file

    def _read_file(self, frame: FrameRecord) -> Image.Image:
        path = self._path(frame)
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise RecordingError(f"frame {frame.index} of {self.path} cannot be read from {path}: {exc}",
                                 hint="the frame file was deleted or damaged") from exc

    def image(self, index: int) -> Image.Image:
        """Frame ``index`` at full resolution, RGB."""
        if not 0 <= index < len(self.frames):
            raise InputError(f"frame {index} is out of range: the recording has {len(self.frames)} frames")
        frames = self.images([index])
        try:
            return next(frames)[1]
        finally:
            frames.close()

    def images(self, indices: Iterable[int] | None = None) -> Iterator[tuple[int, Image.Image]]:
        """``(index, RGB image)`` for the frames in ``indices`` (all by default), in time order.

        One image is decoded at a time; for a video, one decoding pass (seeking over long gaps).
        """
        wanted = sorted(set(range(len(self.frames)) if indices is None else indices))
        for i in wanted:
            if not 0 <= i < len(self.frames):
                raise InputError(f"frame {i} is out of range: the recording has {len(self.frames)} frames")
        if self.kind == "directory":
            for i in wanted:
                yield i, self._read_file(self.frames[i])
            return
        if self._video is None:
            self._video = _probe_video(self.path)
        targets = [f.t for f in self.frames]
        for i, frame, _ in _decode_samples(self.path, self._video, targets, wanted):
            yield i, frame.to_image()

    def scores(self) -> list[float]:
        """Change score of every frame against the frame before it (0-1; 1.0 for the first).

        For a directory these are the recorder's scores (against the previous kept frame); for a
        video they are computed on first call with the recorder's metric (one decoding pass).
        """
        if self._scores is None:
            cfg = RecorderConfig()
            scores, previous = [], None
            for _, image in self.images():
                thumb = thumbnail(image, cfg.thumb_max_side)
                scores.append(change_score(previous, thumb, cfg.tolerance))
                previous = thumb
            if len(scores) < len(self.frames):  # decoding stopped early: the tail did not change
                scores += [0.0] * (len(self.frames) - len(scores))
            self._scores = scores
        return list(self._scores)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: path, kind, frames, marks, duration, start time, source."""
        return {"path": str(self.path), "kind": self.kind, "frames": len(self.frames), "marks": len(self.marks),
                "duration_s": round(self.duration, 3), "start_time": self.start_time, "complete": self.complete,
                "source": self.source}
