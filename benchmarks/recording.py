"""Benchmark: screen capture, de-duplication and hybrid-resolution preprocessing at 1920x1080.

1. Capture: frames per second of ``mss`` on an Xvfb screen of 1920x1080 (started here on a free
   display unless ``--display`` names one), raw and as ``ScreenSource.grab`` returns them (PIL RGB
   with a timestamp).
2. De-duplication: frames per second of the change metric (grayscale thumbnail + change score)
   on 1920x1080 screenshots, and of a full ``Recorder.add`` on an unchanged frame (dropped) and on
   a changed one (written as PNG, level 1, with fsync).
3. Preprocessing: frames per second of Giraffe's hybrid-resolution path (``plan_groups`` with
   (L, m, s) = (4, 240, 3), then ``encode_images``: resize to the planned size + the image
   processor) against transformers' ``Qwen2VLImageProcessorPil`` on the same frames at its default
   settings (every frame resized to its pixel cap, ~1,300 tokens at 1080p), and against the same
   processor asked for the same two tiers (it resizes itself). Outputs are checked (visual tokens
   per frame) before timing; the three are timed in turn, and the median of ``--repeats`` runs
   is reported (with the best).

    python benchmarks/recording.py                     # ~1 minute on 2 cores
    python benchmarks/recording.py --frames 16 --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table

from giraffe_agent.recording import Recorder, RecorderConfig, ScreenSource, change_score, thumbnail
from giraffe_core import GroupScheme, layout_chat, plan_groups
from giraffe_core.engine import tiny_processor
from giraffe_core.frames import encode_images
from giraffe_core.positions import VisionTokenIds
from giraffe_core.resolution import VisionGeometry
from giraffe_core.samples import screenshot

WIDTH, HEIGHT = 1920, 1080


def start_xvfb() -> tuple[subprocess.Popen, str]:
    """Xvfb with one 1920x1080x24 screen on a free display; returns the process and ":N"."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise SystemExit("Xvfb is not installed (apt-get install -y xvfb), or pass --display")
    read, write = os.pipe()
    proc = subprocess.Popen([xvfb, "-displayfd", str(write), "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten",
                             "tcp", "-noreset"], pass_fds=[write], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    number = b""
    while not number.endswith(b"\n"):  # Xvfb writes the number and the newline separately, then is ready
        chunk = os.read(read, 16)
        if not chunk:
            raise SystemExit("Xvfb did not start")
        number += chunk
    os.close(read)
    return proc, f":{number.decode().strip()}"


def rate(fn: Callable[[], None], count: int, repeats: int) -> tuple[float, float]:
    """Median and best frames per second of ``count`` calls of ``fn``, over ``repeats`` runs."""
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(count):
            fn()
        runs.append(count / (time.perf_counter() - began))
    return statistics.median(runs), max(runs)


def interleaved(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, float]]:
    """Median and best seconds of each function, timed in turn (A B C A B C...) so that a change in
    machine load hits all of them alike; one warm-up call each."""
    for fn in fns:
        fn()
    runs: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, runs):
            began = time.perf_counter()
            fn()
            out.append(time.perf_counter() - began)
    return [(statistics.median(r), min(r)) for r in runs]


def capture(display: str, grabs: int, repeats: int) -> list[dict]:
    source = ScreenSource(monitor=1, display=display)
    source.open()
    try:
        assert source.size == (WIDTH, HEIGHT), source.size
        sct, box = source._sct, source._box
        raw = rate(lambda: sct.grab(box), grabs, repeats)
        pil = rate(source.grab, grabs, repeats)
    finally:
        source.close()
    return [{"case": "capture: mss grab (raw BGRA)", "fps": raw[0], "best_fps": raw[1]},
            {"case": "capture: ScreenSource.grab (PIL RGB)", "fps": pil[0], "best_fps": pil[1]}]


def dedup(frames: list[Image.Image], repeats: int) -> list[dict]:
    thumbs = [thumbnail(f) for f in frames]
    state = {"i": 0}

    def metric() -> None:
        i = state["i"] = (state["i"] + 1) % len(frames)
        change_score(thumbs[i - 1], thumbnail(frames[i]))

    out = []
    fps = rate(metric, len(frames), repeats)
    out.append({"case": "de-dup: thumbnail + change score", "fps": fps[0], "best_fps": fps[1]})
    with tempfile.TemporaryDirectory() as tmp:
        recorder = Recorder(Path(tmp) / "same", start_time=0.0)
        recorder.add(frames[0], t=0.0)
        clock = {"t": 0.0}

        def same() -> None:
            clock["t"] += 0.5
            assert recorder.add(frames[0], t=clock["t"]) is None

        fps = rate(same, len(frames), repeats)
        out.append({"case": "Recorder.add, unchanged (dropped)", "fps": fps[0], "best_fps": fps[1]})
        recorder.close()
        changed = Recorder(Path(tmp) / "changed", RecorderConfig(), start_time=0.0)
        state["t"] = 0.0

        def kept() -> None:
            state["t"] += 0.5
            i = state["i"] = (state["i"] + 1) % len(frames)
            assert changed.add(frames[i], t=state["t"]) is not None

        fps = rate(kept, len(frames), repeats)
        out.append({"case": "Recorder.add, changed (PNG written, fsync)", "fps": fps[0], "best_fps": fps[1]})
        changed.close()
    return out


def preprocessing(frames: list[Image.Image], repeats: int) -> list[dict]:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = tiny_processor()  # Qwen2VLImageProcessorPil with Qwen2-VL's defaults, and a chat template
    tokens = VisionTokenIds(image_token_id=processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"),
                            video_token_id=processor.tokenizer.convert_tokens_to_ids("<|video_pad|>"))
    geometry = VisionGeometry.from_processor(processor)
    scheme = GroupScheme()
    plan = plan_groups([f.size for f in frames], geometry, scheme)
    content = [{"type": "image", "image": f, "max_tokens": p.max_tokens, "tier": p.tier}
               for f, p in zip(frames, plan.frames)]
    layout = layout_chat(processor, [{"role": "user", "content": content}], tokens)
    n = len(frames)

    def ours() -> None:
        plan_groups([f.size for f in frames], geometry, scheme)
        encode_images(processor, layout)

    reference = Qwen2VLImageProcessorPil()

    def default() -> object:
        return reference(images=frames, return_tensors="pt")

    high = [f for f, p in zip(frames, plan.frames) if p.tier == "high"]
    low = [f for f, p in zip(frames, plan.frames) if p.tier == "low"]
    side = geometry.token_side_px

    def tiers() -> None:
        reference(images=high, size={"shortest_edge": 56 * 56, "longest_edge": scheme.high_tokens * side * side},
                  return_tensors="pt")
        reference(images=low, size={"shortest_edge": 56 * 56, "longest_edge": scheme.low_tokens * side * side},
                  return_tensors="pt")

    # outputs first: ours equals the plan; the reference's default and tiered grids
    _, grid = encode_images(processor, layout)
    ours_tokens = int(grid.prod(-1).sum()) // 4
    assert ours_tokens == plan.visual_tokens
    default_tokens = int(default()["image_grid_thw"].prod(-1).sum()) // 4
    tier_high = reference(images=high[:1], size={"shortest_edge": 3136, "longest_edge": 240 * 784}, return_tensors="pt")
    tier_low = reference(images=low[:1], size={"shortest_edge": 3136, "longest_edge": 80 * 784}, return_tensors="pt")
    assert int(tier_high["image_grid_thw"].prod()) // 4 == plan.frames[0].tokens
    assert int(tier_low["image_grid_thw"].prod()) // 4 == plan.frames[1].tokens
    t_ours, t_default, t_tiers = interleaved([ours, default, tiers], repeats)
    return [
        {"case": "preprocess: giraffe plan_groups + encode_images (4,240,3)", "fps": n / t_ours[0],
         "best_fps": n / t_ours[1], "tokens_per_frame": ours_tokens / n},
        {"case": "preprocess: Qwen2VLImageProcessorPil, defaults", "fps": n / t_default[0],
         "best_fps": n / t_default[1], "tokens_per_frame": default_tokens / n},
        {"case": "preprocess: Qwen2VLImageProcessorPil, same two tiers", "fps": n / t_tiers[0],
         "best_fps": n / t_tiers[1], "tokens_per_frame": ours_tokens / n},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--display", help="an X display of 1920x1080 to capture (default: start Xvfb)")
    parser.add_argument("--grabs", type=int, default=60, help="grabs per capture run")
    parser.add_argument("--frames", type=int, default=32, help="1920x1080 frames for de-dup and preprocessing")
    parser.add_argument("--repeats", type=int, default=7, help="runs per measurement (median reported)")
    args = parser.parse_args()
    console = Console()

    frames = [screenshot(WIDTH, HEIGHT, title=f"Dashboard {i}", seed=i) for i in range(args.frames)]
    proc = None
    display = args.display
    if display is None:
        proc, display = start_xvfb()
    try:
        rows = capture(display, args.grabs, args.repeats)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    rows += dedup(frames, args.repeats)
    rows += preprocessing(frames, args.repeats)
    ours = rows[-3]["fps"]
    for row in rows[-3:]:
        row["giraffe_speedup"] = ours / row["fps"]

    table = Table(title=f"recording benchmark, {WIDTH}x{HEIGHT} frames")
    for col in ("case", "frames/s", "best frames/s", "tokens/frame", "giraffe speedup"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for row in rows:
        table.add_row(row["case"], f"{row['fps']:.1f}", f"{row['best_fps']:.1f}",
                      f"{row['tokens_per_frame']:.0f}" if "tokens_per_frame" in row else "",
                      f"{row['giraffe_speedup']:.2f}x" if "giraffe_speedup" in row else "")
    console.print(table)
    versions = {name: md.version(name) for name in ("torch", "transformers", "pillow", "numpy", "mss", "av")}
    print(json.dumps({
        "benchmark": "recording", "size": [WIDTH, HEIGHT], "frames": args.frames, "grabs": args.grabs,
        "repeats": args.repeats, "python": platform.python_version(), **versions, "cpus": os.cpu_count(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "results": [{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()} for row in rows],
    }))


if __name__ == "__main__":
    main()
