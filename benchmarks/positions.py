"""Benchmark: giraffe_core.positions.rope_index vs transformers' Qwen2VLModel.get_rope_index.

Sequences of ~128K tokens (131072) with 64, 512 and 2048 images (each wrapped in vision_start /
vision_end, text between images), plus a padded batch. Outputs are checked for equality before
anything is timed; each function gets one warm-up call, then the median of ``--repeats`` calls
(the two functions' calls interleaved, so that load from other processes hits both alike).

    python benchmarks/positions.py            # table + one JSON line
    python benchmarks/positions.py --repeats 3

Only ``get_rope_index`` of the tiny preset's Qwen2-VL model is timed (the weights play no part in it).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from giraffe_core.engine import tiny_config, tiny_model
from giraffe_core.positions import VisionTokenIds, rope_index

TINY = tiny_config()
IMG, VSTART, VEND = TINY.image_token_id, TINY.vision_start_token_id, TINY.vision_end_token_id
PAD = TINY.text_config.pad_token_id
MERGE = TINY.vision_config.spatial_merge_size
TOTAL = 131072

# LM grids (H, W after the 2x2 merge) chosen so that n_images * (H*W + 2 + gap) == 131072 exactly.
LAYOUTS = {  # n_images: (lm_h, lm_w)
    64: (40, 50),  # 2000 tokens per image, 46 text tokens between
    512: (12, 20),  # 240 tokens per image, 14 text tokens between
    2048: (6, 8),  # 48 tokens per image, 14 text tokens between
}


def tiny_qwen2vl():
    """The tiny preset's Qwen2VLModel; only its get_rope_index is timed (weights play no part)."""
    return tiny_model(TINY).model


def make_row(n_images: int, lm_h: int, lm_w: int, total: int) -> tuple[list[int], list[list[int]]]:
    """One row of exactly ``total`` tokens: [text gap, <vs>, image, <ve>] * n_images, text filler first."""
    per_image = lm_h * lm_w
    gap = total // n_images - per_image - 2
    assert gap >= 1, (n_images, lm_h, lm_w, total)
    seq: list[int] = []
    for i in range(n_images):
        seq += [1 + (i + k) % 90 for k in range(gap)] + [VSTART] + [IMG] * per_image + [VEND]
    seq = [7] * (total - len(seq)) + seq
    assert len(seq) == total
    grids = [[1, lm_h * MERGE, lm_w * MERGE]] * n_images
    return seq, grids


def make_case(n_images: int, lm_h: int, lm_w: int, total: int, batch: int = 1) -> dict:
    """``batch`` rows; with batch > 1 rows get different lengths and left padding."""
    rows, grids = [], []
    for b in range(batch):
        n_row = max(1, n_images - 4 * b)
        seq, g = make_row(n_row, lm_h, lm_w, total - b * (lm_h * lm_w + 64))
        rows.append(seq)
        grids += g
    length = max(len(r) for r in rows)
    ids = torch.full((batch, length), PAD, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, length - len(r) :] = torch.tensor(r)
        mask[b, length - len(r) :] = 1
    mm = ((ids == IMG) & (mask == 1)).to(torch.int32)
    return {
        "input_ids": ids,
        "attention_mask": mask if batch > 1 else None,
        "mm_token_type_ids": mm,
        "image_grid_thw": torch.tensor(grids, dtype=torch.long),
        "n_images": len(grids),
        "tokens": int(mask.sum()),
    }


def run_ours(case: dict, tokens: VisionTokenIds):
    return rope_index(case["input_ids"], case["image_grid_thw"], None, case["attention_mask"], tokens=tokens)


def run_hf(case: dict, model):
    return model.get_rope_index(
        case["input_ids"],
        case["mm_token_type_ids"],
        image_grid_thw=case["image_grid_thw"],
        attention_mask=case["attention_mask"],
    )


def median_times(fns, repeats: int) -> list[tuple[float, float]]:
    """(median, min) wall time of each function; calls are interleaved so background load hits all alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [(statistics.median(ts), min(ts)) for ts in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per function (median reported)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)"
    )
    parser.add_argument("--no-batch", action="store_true", help="skip the padded batch case")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = tiny_qwen2vl()
    tokens = VisionTokenIds.from_config(model.config)
    cases = [("single", n, *LAYOUTS[n], TOTAL, 1) for n in (64, 512, 2048)]
    if not args.no_batch:
        # 4 left-padded rows of up to 32K tokens (~128K in all), 116-128 images of 240 tokens per row
        cases.append(("batch4-leftpad", 128, *LAYOUTS[512], TOTAL // 4, 4))

    built = []
    with torch.inference_mode():
        # Check every case first (this also warms up the process: the first timings of a fresh
        # process on a small machine are visibly slower otherwise).
        for label, n_images, lm_h, lm_w, total, batch in cases:
            case = make_case(n_images, lm_h, lm_w, total, batch)
            got = run_ours(case, tokens)
            want, deltas = run_hf(case, model)
            mask = case["attention_mask"]
            n_real = mask.sum(1) if mask is not None else case["input_ids"].shape[1]
            if not torch.equal(got.position_ids, want) or not torch.equal(
                got.next_position, deltas.reshape(-1) + n_real
            ):
                raise SystemExit(
                    f"MISMATCH for {label} with {case['n_images']} images: outputs differ, not timing"
                )
            built.append((label, batch, case))

        results = []
        for label, batch, case in built:
            (t_hf, min_hf), (t_ours, min_ours) = median_times(
                [lambda c=case: run_hf(c, model), lambda c=case: run_ours(c, tokens)], args.repeats
            )
            results.append(
                {
                    "case": label,
                    "batch": batch,
                    "images": case["n_images"],
                    "tokens": case["tokens"],
                    "transformers_s": round(t_hf, 5),
                    "giraffe_s": round(t_ours, 5),
                    "speedup": round(t_hf / t_ours, 1),
                    "transformers_min_s": round(min_hf, 5),
                    "giraffe_min_s": round(min_ours, 5),
                }
            )

    headers = ["case", "batch", "images", "tokens", "transformers s", "giraffe s", "speedup"]
    keys = ["case", "batch", "images", "tokens", "transformers_s", "giraffe_s", "speedup"]
    try:
        from rich.console import Console
        from rich.table import Table

        title = (
            f"rope_index vs Qwen2VLModel.get_rope_index "
            f"(median of {args.repeats}, {torch.get_num_threads()} threads)"
        )
        table = Table(title=title)
        for h in headers:
            table.add_column(h, justify="left" if h == "case" else "right", no_wrap=True)
        for r in results:
            table.add_row(*(f"{r[k]}x" if k == "speedup" else str(r[k]) for k in keys))
        Console(width=120).print(table)
    except ImportError:
        print(" | ".join(headers))
        for r in results:
            print(" | ".join(str(r[k]) for k in keys))

    import transformers

    print(
        json.dumps(
            {
                "benchmark": "positions",
                "repeats": args.repeats,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
                "threads": torch.get_num_threads(),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
