"""Screen-recording QA end to end, offline, on the tiny preset (about 15 s on 2 CPU cores).

1. Records a generated 10-minute "session" at 1 frame per second: a web page that changes every
   20 s, a burst of edits around 5:00 and an event mark. The recorder keeps only the frames that
   changed (de-duplication) and also writes an MP4.
2. Asks a question about it with the tiny model, uniform and change-weighted sampling, within a
   token budget, under the hybrid group scheme (L, m, s) = (4, 240, 3).
3. Asks the MP4 the same question, as a video file.

The tiny model has random weights, so its answers are noise; the frame choice, the resolution
plan, the exact token counts and the citation mapping are the real pipeline. With a real model,
pass ``--model DIR`` (a saved Qwen2-VL) or use ``ask(..., endpoint="http://127.0.0.1:8000/v1")``.

    python examples/screen_qa.py [--out DIR] [--budget 2500] [--model tiny]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from giraffe_agent.qa import ask, cite
from giraffe_agent.recording import VIDEO_NAME, Recorder, RecorderConfig, Recording
from giraffe_core import load
from giraffe_core.samples import screenshot


def make_recording(out: Path, seconds: int = 600) -> Recording:
    """A generated session: a new page every 20 s, a burst of edits at 300-307 s, a mark at 303.5 s.

    Frames are pushed with their time ``t`` (seconds since the start); a live source
    (``Recorder(out, source=ScreenSource(...)).run(60)``) stamps them with the wall clock instead.
    """
    with Recorder(out, RecorderConfig(fps=1.0, mp4=True), start_time=1_764_000_000.0) as recorder:
        for second in range(seconds):
            burst = 300 <= second <= 307
            page = second // 20
            title = f"Editing row {second}" if burst else f"Orders - page {page}"
            recorder.add(screenshot(1280, 800, title=title, seed=second if burst else page), t=float(second))
            if second == 303:
                recorder.mark("error dialog: 'payment failed'", t=303.5)
        recorder.close(t=float(seconds))
    return Recording.open(out)


def show(label: str, answer) -> None:
    tiers = answer.tokens_by_tier()
    print(f"\n== {label}: {len(answer.frames)} of {answer.recording['frames']} frames, "
          f"{answer.prompt_tokens} prompt tokens (budget {answer.budget_tokens}), visual tokens per tier {tiers}")
    print("   frames:", " ".join(f"{f.label}{'*' if f.tier == 'high' else ''}" for f in answer.frames))
    print(f"   answer ({answer.completion_tokens} tokens): {answer.text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where to write the recording (default: a temporary directory)")
    parser.add_argument("--budget", type=int, default=2500, help="prompt token budget")
    parser.add_argument("--model", default="tiny", help="'tiny' or a saved model directory")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="giraffe-screen-qa-")) / "session"
    recording = make_recording(out)
    print(f"recorded {recording}: kept {len(recording)} of 600 grabbed frames, marks {recording.marks}")

    engine = load(args.model, context_length=32768)
    question = "When did the payment error appear, and what was on the screen just before it?"
    for sampling in ("uniform", "change"):
        answer = ask(recording, question, engine=engine, budget_tokens=args.budget, sampling=sampling,
                     max_new_tokens=24)
        show(f"{sampling} sampling (* = high resolution)", answer)

    # how citations are read: a reply naming moments maps them to the nearest frames shown
    reply = "The error appeared at [t=00:05:03]; just before, at 4:50, the order list was open."
    for citation in cite(reply, answer.frames, duration=recording.duration):
        print(f"   {citation.text!r} -> frame {citation.frame} shown as {citation.label}")

    video = ask(out / VIDEO_NAME, question, engine=engine, budget_tokens=args.budget, fps=0.5, sampling="change",
                max_new_tokens=8)
    show(f"the MP4 as a video file ({VIDEO_NAME}, sampled at 0.5 fps, change-weighted)", video)
    print(f"\nrecording: {out}  (try: giraffe ask {out} \"{question}\" --budget {args.budget})")


if __name__ == "__main__":
    main()
