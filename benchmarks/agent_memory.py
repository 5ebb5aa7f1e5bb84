"""Benchmark: a simulated agent episode, three ways, on the tiny preset.

Every step adds a 1280x800 screenshot and a scripted model reply to a timeline memory, renders
the context and brings the model up to date with it (the prefill that precedes every reply):

  (a) session  - Giraffe's memory (cache-aligned "blocks" policy) + a KV-cache Session:
                 only what changed since the last step is prefilled
  (b) full     - the same rendered contexts, re-prefilled in full every step
  (c) recent   - the common SDK baseline: the last 5 screenshots at full resolution plus a text
                 history, re-prefilled in full every step

Printed per variant: prefilled tokens per step, the cache-reuse ratio (reused / prompt tokens),
tokens held per tier, and total time; then a table and one JSON line.

    python benchmarks/agent_memory.py                 # 100 steps (several minutes on 2 cores)
    python benchmarks/agent_memory.py --steps 20      # quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

from giraffe_core import build_inputs, load
from giraffe_core.engine.session import Session
from giraffe_core.memory import MemoryConfig, TimelineMemory
from giraffe_core.samples import screenshot


def episode_frames(steps: int, width: int, height: int) -> list:
    return [screenshot(width, height, title=f"Shop - page {s % 7}", seed=s) for s in range(steps)]


def run(variant: str, engine, frames: list, config: MemoryConfig, log_every: int, console: Console) -> dict:
    """One episode; returns per-step numbers and totals."""
    with tempfile.TemporaryDirectory() as store:
        memory = TimelineMemory.for_engine(engine, config, store)
        memory.add_text("system", "You are a web agent. Reply with one JSON action.")
        memory.add_text("task", "Buy the cheapest blue shirt on the shop's site.", step=0)
        session = Session(engine) if variant == "session" else None
        per_step = []
        began = time.perf_counter()
        for step, frame in enumerate(frames):
            memory.add_frame(frame, step=step, url=f"http://127.0.0.1:8000/page/{step % 7}", title="Shop")
            t0 = time.perf_counter()
            rendered = memory.render()
            with torch.inference_mode():
                if session is not None:
                    _, stats = session.prefill(rendered)
                    prefilled, reused, encoded = stats.prefilled_tokens, stats.reused_tokens, stats.frames_encoded
                else:
                    inputs = build_inputs(engine.processor, rendered.messages, engine.tokens)
                    engine.model(**inputs.model_kwargs(), logits_to_keep=1)
                    prefilled, reused = inputs.num_tokens, 0
                    encoded = len(inputs.plan.frames) if inputs.plan else 0
            seconds = time.perf_counter() - t0
            reply = json.dumps({"action": "click", "x": 100 + 7 * step % 900, "y": 200 + 13 * step % 500})
            memory.add_text("model", reply, step=step)
            memory.set_action(reply)
            per_step.append({"step": step + 1, "prompt_tokens": rendered.token_count, "prefilled_tokens": prefilled,
                             "reused_tokens": reused, "frames_encoded": encoded, "seconds": round(seconds, 4),
                             "tokens_per_tier": rendered.record.tokens,
                             "frames_per_tier": rendered.record.frames_per_tier})
            if log_every and (step + 1) % log_every == 0:
                console.log(f"{variant:8s} step {step + 1:4d}: prompt {rendered.token_count:6d} tokens, "
                            f"prefilled {prefilled:6d}, {seconds:6.2f} s")
        total = time.perf_counter() - began
    prompt = sum(s["prompt_tokens"] for s in per_step)
    return {
        "variant": variant,
        "total_s": round(total, 2),
        "prefilled_tokens": sum(s["prefilled_tokens"] for s in per_step),
        "prompt_tokens": prompt,
        "reuse_ratio": round(sum(s["reused_tokens"] for s in per_step) / prompt, 4),
        "last": per_step[-1],
        "median_prefill_last10": statistics.median(s["prefilled_tokens"] for s in per_step[-10:]),
        "steps": per_step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--full-tokens", type=int, default=256, help="visual tokens of a full-resolution frame")
    parser.add_argument("--low-tokens", type=int, default=64, help="visual tokens of a low-resolution frame")
    parser.add_argument("--block", type=int, default=8, help="block_frames of the cache-aligned policy")
    parser.add_argument("--variants", default="session,full,recent")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--json", default=None, help="also write the full per-step results to this file")
    args = parser.parse_args()

    console = Console()
    engine = load("tiny", context_length=131072)
    frames = episode_frames(args.steps, args.width, args.height)
    blocks = MemoryConfig(full_max_tokens=args.full_tokens, low_max_tokens=args.low_tokens, full_frames=8,
                          low_frames=32, text_frames=512, block_frames=args.block)
    recent = MemoryConfig(policy="recent", full_max_tokens=args.full_tokens, full_frames=5)
    configs = {"session": blocks, "full": blocks, "recent": recent}
    results = {}
    for variant in args.variants.split(","):
        results[variant] = run(variant, engine, frames, configs[variant], args.log_every, console)

    table = Table(title=f"{args.steps}-step episode, {args.width}x{args.height} screenshots, tiny preset, CPU")
    for col in ("variant", "prompt @last", "prefilled @last", "median prefilled (last 10)", "reuse ratio",
                "full/low/text frames @last", "total s"):
        table.add_column(col, justify="right")
    for r in results.values():
        f = r["last"]["frames_per_tier"]
        table.add_row(r["variant"], str(r["last"]["prompt_tokens"]), str(r["last"]["prefilled_tokens"]),
                      str(r["median_prefill_last10"]), f"{r['reuse_ratio']:.3f}",
                      f"{f['full']}/{f['low']}/{f['text']}", f"{r['total_s']:.1f}")
    console.print(table)
    summary = {
        "benchmark": "agent_memory",
        "steps": args.steps,
        "frame_px": [args.width, args.height],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "results": {k: {kk: vv for kk, vv in v.items() if kk != "steps"} for k, v in results.items()},
    }
    if "session" in results and "full" in results:
        a, b = results["session"], results["full"]
        summary["prefill_ratio_last_step"] = round(b["last"]["prefilled_tokens"] / a["last"]["prefilled_tokens"], 1)
        summary["prefill_ratio_median_last10"] = round(b["median_prefill_last10"] / a["median_prefill_last10"], 1)
        summary["speedup_total"] = round(b["total_s"] / a["total_s"], 1)
        console.print(f"session vs full re-prefill: {summary['prefill_ratio_last_step']}x fewer tokens prefilled at "
                      f"the last step, {summary['prefill_ratio_median_last10']}x (median of the last 10 steps), "
                      f"{summary['speedup_total']}x faster over the episode")
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({**summary, "per_step": {k: v["steps"] for k, v in results.items()}}, handle)


if __name__ == "__main__":
    main()
