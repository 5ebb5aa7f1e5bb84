"""Benchmark: training throughput, packed rows against padded batches, on an ETVLM-like length mix.

The same samples, the same tiny model (full fine-tuning, gradient checkpointing, chunked loss,
AdamW) and the same number of real tokens, fed two ways:

* **packed**: :func:`training.collator.pack_rows` into rows of at most ``--row-tokens`` tokens,
  one row per step (:class:`~training.collator.PackedCollator`), attention per sample
  (:mod:`training.attention`: one causal SDPA call per sample, ``--packed-attention segments``,
  the default) or transformers' dense block-diagonal mask (``--packed-attention sdpa``, the
  earlier path);
* **padded**: ``--batch`` samples per step in the mixture's order, right-padded to the longest
  (:class:`~training.collator.PaddedCollator`, attention mask): the usual baseline.

The mix scales the paper's ETVLM shares down to the tiny model's 4K context: 20% long text
(1.5K-3.5K tokens), 25% short visual (one image, 60-400 tokens), 25% interleaved (2-4 images,
300-1.2K tokens), 30% video (8-24 small frames with timestamps, 600-2.5K tokens). Lengths are
exact (the samples are tokenized by :class:`~training.data.examples.Encoder`).

Each mode runs in its own process (so peak memory is its own): one warm-up step, then every step
of one pass over the data; tokens per second counts REAL tokens (padding excluded). The two modes
run ``--repeats`` times, interleaved (packed, padded, packed, ...), so that on a shared machine
both see the same load; the run of median throughput of each is reported, and the ratio of each
back-to-back pair. Peak memory
is the process's peak resident set size (``ru_maxrss``) and the peak RSS increase during the
timed pass (psutil, sampled every 5 ms).

    python benchmarks/training.py                   # table + one JSON line
    python benchmarks/training.py --samples 48 --threads 1
    python benchmarks/training.py --threads 1 --packed-attention sdpa   # the dense-mask packed path
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where "training" would be this very
# file instead of the training package: drop the folder (nothing else is imported from it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

WORDS = ("screen", "button", "click", "the", "agent", "page", "video", "frame", "answer", "question", "long",
         "context", "token", "model", "shows", "a", "red", "blue", "form", "login")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def make_examples(count: int, seed: int = 0) -> list:
    """An ETVLM-like mix of ``count`` chats (see the module docstring)."""
    from giraffe_core.samples import screenshot
    from training.data.examples import Example

    rng = random.Random(seed)
    kinds = ["long_text"] * 20 + ["short_visual"] * 25 + ["interleaved"] * 25 + ["video"] * 30
    out = []
    for i in range(count):
        kind = kinds[int(i * 100 / count) % 100]
        if kind == "long_text":
            user: list[dict] = [{"type": "text", "text": _text(rng, rng.randint(300, 700))}]
        elif kind == "short_visual":
            w, h = rng.choice([(224, 168), (336, 224), (448, 336)])
            user = [{"type": "image", "image": screenshot(w, h, seed=i), "max_tokens": rng.randint(40, 300)},
                    {"type": "text", "text": _text(rng, 12)}]
        elif kind == "interleaved":
            user = []
            for k in range(rng.randint(2, 4)):
                image = screenshot(336, 224, seed=i * 7 + k)
                user += [{"type": "image", "image": image, "max_tokens": rng.randint(60, 240)},
                         {"type": "text", "text": _text(rng, 8)}]
        else:
            user = []
            for k in range(rng.randint(8, 24)):
                image = screenshot(224, 168, seed=i * 31 + k)
                user += [{"type": "text", "text": f"[t=00:00:{k:02d}]\n"},
                         {"type": "image", "image": image, "max_tokens": 80 if k % 4 == 0 else 26}]
            user.append({"type": "text", "text": _text(rng, 10)})
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": _text(rng, rng.randint(5, 60))}]
        out.append(Example(messages, f"bench:{i}", kind))
    rng.shuffle(out)
    return out


class _PeakRSS:
    """Samples the process's resident set size every 5 ms; ``peak`` in bytes."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _model(width: int) -> torch.nn.Module:
    """The tiny preset, or (``width`` > 128) the same model with a wider language model: hidden
    ``width``, MLP ``5.25 * width`` (Qwen2-VL-7B's ratio), head_dim 32, 4 layers."""
    from giraffe_core.engine import tiny_config, tiny_model

    config = tiny_config()
    if width != 128:
        text = config.text_config
        text.hidden_size, text.intermediate_size = width, int(5.25 * width)
        text.num_attention_heads, text.num_key_value_heads = width // 32, max(1, width // 64)
        config.vision_config.hidden_size = width  # the merger projects into the language model
    return tiny_model(config)


def run_mode(mode: str, samples: int, row_tokens: int, batch: int, width: int = 128,
             packed_attention: str = "segments", epochs: int = 1, vision_cache: bool = False) -> dict:
    """``epochs`` passes of ``mode`` (packed or padded) in this process; returns its numbers."""
    from giraffe_core.engine import load
    from training.attention import select_for_packing
    from training.collator import PackedCollator, PaddedCollator, pack_rows
    from training.config import TuneConfig
    from training.data.examples import Encoder
    from training.loss import ChunkedLossModel
    from training.params import prepare_model

    engine = load("tiny")
    encoder = Encoder(engine.processor, engine.tokens)
    encoded = encoder.encode_many(make_examples(samples))
    lengths = [s.num_tokens for s in encoded]
    pad = engine.processor.tokenizer.pad_token_id
    if mode == "packed":
        groups = pack_rows(lengths, row_tokens)
        collate = PackedCollator(engine.tokens, pad, max_length=row_tokens)
    else:
        groups = [list(range(i, min(i + batch, len(encoded)))) for i in range(0, len(encoded), batch)]
        collate = PaddedCollator(engine.tokens, pad)
    batches = [collate([encoded[i] for i in group]) for group in groups]
    model = _model(width).train()
    attention = "sdpa"
    if mode == "packed" and packed_attention == "segments":
        attention = select_for_packing(model)
    model = prepare_model(model, TuneConfig(method="full"), gradient_checkpointing=True)
    wrapper = ChunkedLossModel(model, chunk_tokens=1024)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(b: dict) -> None:
        labels = int((b["labels"][:, 1:] != -100).sum())
        (wrapper(**b) / max(1, labels)).backward()
        optimizer.step()
        optimizer.zero_grad()

    step(batches[0])  # warm-up
    cache = None
    if vision_cache:  # attached after the warm-up, so the first timed epoch starts empty
        from training.vision_cache import VisionCache

        cache = VisionCache(model.model.visual)
    epoch_seconds = []
    with _PeakRSS() as rss:
        for _ in range(epochs):
            began = time.perf_counter()
            for b in batches:
                step(b)
            epoch_seconds.append(round(time.perf_counter() - began, 3))
    seconds = sum(epoch_seconds)
    real = sum(lengths) * epochs
    processed = sum(int(b["input_ids"].numel()) for b in batches) * epochs
    return {"mode": mode, "attention": attention, "width": width, "samples": samples, "steps": len(batches) * epochs,
            "real_tokens": real,
            "processed_tokens": processed, "efficiency": round(real / processed, 4), "seconds": round(seconds, 3),
            "tokens_per_s": round(real / seconds, 1), "peak_rss_mib": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_increase_mib": round((rss.peak - rss.base) / 2**20, 1),
            "max_tokens_per_step": max(int(b["input_ids"].numel()) for b in batches),
            "epochs": epochs, "epoch_seconds": epoch_seconds, "vision_cache": vision_cache,
            "cache_stats": vars(cache.stats) if cache else None}


def main() -> None:
    """Run both modes (each in a child process) and print a table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=48, help="samples in the mix")
    parser.add_argument("--row-tokens", type=int, default=4096, help="packed row length (the stage length)")
    parser.add_argument("--batch", type=int, default=4, help="samples per padded batch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--width", type=int, default=128, help="language-model hidden size (128: the tiny preset)")
    parser.add_argument("--packed-attention", choices=["segments", "sdpa"], default="segments",
                        help="packed rows: per-sample SDPA calls (training.attention) or the dense block-diagonal mask")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode, interleaved (median reported)")
    parser.add_argument("--vision-cache-study", action="store_true",
                        help="instead: packed rows, --epochs passes, without and with the vision-output cache")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the data (--vision-cache-study)")
    parser.add_argument("--vision-cache", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["packed", "padded"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode:
        epochs = args.epochs if args.vision_cache_study else 1
        print(json.dumps(run_mode(args.mode, args.samples, args.row_tokens, args.batch, args.width,
                                    args.packed_attention, epochs, args.vision_cache)))
        return
    if args.vision_cache_study:
        _cache_study(args)
        return
    runs: dict[str, list[dict]] = {"packed": [], "padded": []}
    for _ in range(args.repeats):  # interleaved, so both modes see the same load
        for mode in runs:
            runs[mode].append(_child(args, mode))
    packed, padded = (_median_run(runs[m]) for m in ("packed", "padded"))
    _print_table(packed, padded)
    ratio = packed["tokens_per_s"] / padded["tokens_per_s"]
    pairs = [p["tokens_per_s"] / q["tokens_per_s"] for p, q in zip(runs["packed"], runs["padded"], strict=True)]
    print(f"packed / padded throughput (medians over {args.repeats} runs): {ratio:.2f}x; "
          f"per run {min(pairs):.2f}-{max(pairs):.2f}x")
    print(json.dumps({"benchmark": "training", "torch": torch.__version__, "python": platform.python_version(),
                      "threads": args.threads or torch.get_num_threads(), "width": args.width,
                      "row_tokens": args.row_tokens, "packed_attention": args.packed_attention,
                      "batch": args.batch, "repeats": args.repeats, "ratio": round(ratio, 3),
                      "ratio_per_run": [round(r, 3) for r in pairs],
                      "seconds_per_run": {m: [r["seconds"] for r in runs[m]] for m in runs},
                      "results": [packed, padded]}))


def _child(args: argparse.Namespace, mode: str, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--mode", mode, "--samples", str(args.samples), "--row-tokens",
           str(args.row_tokens), "--batch", str(args.batch), "--width", str(args.width),
           "--packed-attention", args.packed_attention, "--epochs", str(args.epochs), *extra]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cache_study(args: argparse.Namespace) -> None:
    """Packed rows over ``--epochs`` passes, without and with the vision cache, interleaved."""
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        runs["off"].append(_child(args, "packed", "--vision-cache-study"))
        runs["on"].append(_child(args, "packed", "--vision-cache-study", "--vision-cache"))
    print("| vision cache | epoch seconds (median run) | mean step s, epoch 1 | mean step s, epochs 2+ | total s |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, rs in runs.items():
        r = sorted(rs, key=lambda x: x["seconds"])[len(rs) // 2]
        per_epoch = r["steps"] // r["epochs"]
        later = sum(r["epoch_seconds"][1:]) / max(1, (r["epochs"] - 1) * per_epoch)
        first = r["epoch_seconds"][0] / per_epoch
        summary[name] = {"epoch_seconds": r["epoch_seconds"], "step_s_epoch1": round(first, 3),
                         "step_s_later": round(later, 3), "total_s": r["seconds"], "cache_stats": r["cache_stats"]}
        print(f"| {name} | {', '.join(f'{x:.1f}' for x in r['epoch_seconds'])} | "
              f"{summary[name]['step_s_epoch1']:.3f} | {later:.3f} | {r['seconds']:.1f} |")
    print(json.dumps({"benchmark": "training-vision-cache", "torch": torch.__version__, "threads": args.threads
                      or torch.get_num_threads(), "width": args.width, "epochs": args.epochs, "repeats": args.repeats,
                      "summary": summary, "totals": {k: [r["seconds"] for r in v] for k, v in runs.items()}}))


def _median_run(runs: list[dict]) -> dict:
    """The run of median throughput (the upper median for an even count)."""
    return sorted(runs, key=lambda r: r["tokens_per_s"])[len(runs) // 2]


def _print_table(packed: dict, padded: dict) -> None:
    print("| mode | attention | steps | real tokens | processed tokens | efficiency | seconds | real tokens/s "
          "| peak RSS MiB | RSS increase MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in (packed, padded):
        print(f"| {r['mode']} | {r['attention']} | {r['steps']} | {r['real_tokens']} | {r['processed_tokens']} "
              f"| {r['efficiency']:.2f} | {r['seconds']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mib']:.0f} | "
              f"{r['peak_rss_increase_mib']:.0f} |")


if __name__ == "__main__":
    main()
