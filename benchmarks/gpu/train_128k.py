"""One 128K-token training step of a Qwen2-VL-7B-shaped model on one GPU: time and peak memory.

The model is built from Qwen2-VL-7B-Instruct's architecture (written out below; nothing is
downloaded) with random weights in bfloat16, extended to 131072 tokens with M-RoPE++
(``giraffe_core.apply_rope_extension``: factor 4 over its 32K), and trained the way
``training/configs/etvlm_qwen2vl_7b.yaml`` trains it: LoRA (peft) on the language model's
projections, vision tower and merger frozen, gradient checkpointing, the chunked cross-entropy
(:mod:`training.loss`), AdamW on the adapters. The sample is one sequence of ``--tokens`` tokens:
``--images`` image blocks of 576 visual tokens (a 1008x1792 frame, grid 1x36x64) spread through
random text, with the last ``--label-tokens`` tokens as targets (a long answer), collated by
:class:`training.collator.PackedCollator` (one sample: plain causal attention).

    python benchmarks/gpu/train_128k.py                      # 2 steps, prints a table and one JSON line
    python benchmarks/gpu/train_128k.py --tokens 65536 --steps 3

Needs a CUDA GPU with ~80 GB (H100 80GB or larger), torch with CUDA, transformers 5.24 and peft;
FlashAttention-2 is used when ``flash_attn`` is installed, else PyTorch SDPA (its flash kernel,
causal). Installs nothing and reaches no network. Run from the repository root (see README.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repository's packages, whether or not it was pip-installed

import torch  # noqa: E402

#: Qwen2-VL-7B-Instruct's config.json (architecture fields), written out so nothing is downloaded
QWEN2_VL_7B = {
    "text_config": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768,
                    "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": False,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0,
                                        "mrope_section": [16, 24, 24]},
                    "bos_token_id": 151643, "eos_token_id": 151645},
    "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "num_heads": 16, "mlp_ratio": 4,
                      "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
}
GRID = (1, 36, 64)  # one 1008x1792 frame: 36x64 patches, 18x32 = 576 visual tokens


def build_model(context: int, attn: str, *, layers: int = 28, vision_depth: int = 32,
                device: str = "cuda") -> torch.nn.Module:
    """Qwen2-VL-7B-shaped, random bf16 weights on ``device``, M-RoPE++ for ``context`` tokens
    (``layers`` / ``vision_depth`` below 28 / 32 only for dry runs)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    import giraffe_core

    spec = json.loads(json.dumps(QWEN2_VL_7B))
    spec["text_config"]["num_hidden_layers"] = layers
    spec["vision_config"]["depth"] = vision_depth
    config = Qwen2VLConfig(**spec)
    giraffe_core.apply_rope_extension(config, context, "mrope_plus_plus")
    config._attn_implementation = attn
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration(config).to(torch.bfloat16)
    return model


def build_batch(tokens: int, images: int, label_tokens: int, config: object,
                device: str = "cuda") -> dict[str, torch.Tensor]:
    """One sample of ``tokens`` tokens with ``images`` image blocks, collated by PackedCollator."""
    from giraffe_core.positions import VisionTokenIds
    from training.collator import PackedCollator
    from training.data.examples import EncodedSample

    ids = VisionTokenIds.from_config(config)
    per_image = GRID[0] * GRID[1] * GRID[2] // 4
    block = [config.vision_start_token_id] + [ids.image_token_id] * per_image + [config.vision_end_token_id]
    text_tokens = tokens - images * len(block)
    if text_tokens < label_tokens + images:
        raise SystemExit(f"{tokens} tokens cannot hold {images} images of {len(block)} tokens and "
                         f"{label_tokens} target tokens")
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(100, 150000, (text_tokens,), generator=generator).tolist()
    gap = (text_tokens - label_tokens) // max(1, images)
    sequence: list[int] = []
    for i in range(images):
        sequence += text[i * gap:(i + 1) * gap] + block
    sequence += text[images * gap:]
    input_ids = torch.tensor(sequence, dtype=torch.long)
    labels = torch.full_like(input_ids, -100)
    labels[-label_tokens:] = input_ids[-label_tokens:]
    patches = images * GRID[0] * GRID[1] * GRID[2]
    pixel_values = torch.randn(patches, 3 * 2 * 14 * 14, generator=generator)
    grid = torch.tensor([GRID] * images, dtype=torch.long)
    sample = EncodedSample(input_ids, labels, torch.zeros(3, len(input_ids), dtype=torch.long), pixel_values, grid)
    batch = PackedCollator(ids, 151643, max_length=tokens)([sample])
    return {k: (v.to(device, torch.bfloat16) if k == "pixel_values" else v.to(device)) for k, v in batch.items()}


def main() -> None:
    """Build, train ``--steps`` steps, print a table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=131072, help="sequence length, tokens")
    parser.add_argument("--images", type=int, default=16, help="image blocks of 576 visual tokens")
    parser.add_argument("--label-tokens", type=int, default=16384, help="target tokens at the end")
    parser.add_argument("--chunk", type=int, default=4096, help="target tokens per loss chunk")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="training steps (the first includes warm-up)")
    parser.add_argument("--attn", default="auto", help="flash_attention_2, sdpa, or auto")
    parser.add_argument("--layers", type=int, default=28, help="text layers (28: Qwen2-VL-7B; fewer: a dry run)")
    parser.add_argument("--vision-depth", type=int, default=32, help="vision blocks (32: Qwen2-VL-7B)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only for a dry run of a small --layers")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: this script measures a GPU training step (--device cpu for a dry run)")

    from giraffe_core.extras import is_available
    from training.config import TuneConfig
    from training.loss import ChunkedLossModel
    from training.params import parameter_report, prepare_model

    attn = args.attn if args.attn != "auto" else ("flash_attention_2" if cuda and is_available("flash_attn")
                                                  else "sdpa")
    began = time.perf_counter()
    model = build_model(args.tokens, attn, layers=args.layers, vision_depth=args.vision_depth, device=args.device)
    built_s = time.perf_counter() - began
    model = prepare_model(model, TuneConfig(method="lora", lora_r=args.lora_r, lora_alpha=2 * args.lora_r),
                          gradient_checkpointing=True)
    params = parameter_report(model)
    wrapper = ChunkedLossModel(model, chunk_tokens=args.chunk)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = build_batch(args.tokens, args.images, args.label_tokens, model.config, device=args.device)
    steps = []
    for step in range(args.steps):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        loss = wrapper(**batch) / args.label_tokens
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        steps.append({"step": step + 1, "seconds": round(time.perf_counter() - start, 3), "loss": round(loss.item(), 4),
                      "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                      "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None})
    print("| step | seconds | tokens/s | loss | peak allocated GiB | peak reserved GiB |")
    print("|---|---|---|---|---|---|")
    for s in steps:
        print(f"| {s['step']} | {s['seconds']:.2f} | {args.tokens / s['seconds']:.0f} | {s['loss']:.3f} | "
              f"{s['peak_allocated_gib']} | {s['peak_reserved_gib']} |")
    import transformers

    print(json.dumps({
        "benchmark": "train_128k", "gpu": torch.cuda.get_device_name(0) if cuda else args.device,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "layers": args.layers, "vision_depth": args.vision_depth,
        "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
        "python": platform.python_version(), "attn": attn, "tokens": args.tokens, "images": args.images,
        "visual_tokens": args.images * 576, "label_tokens": args.label_tokens, "chunk": args.chunk,
        "lora_r": args.lora_r, "trainable_params": sum(p["trainable"] for p in params.values()),
        "total_params": sum(p["total"] for p in params.values()), "build_s": round(built_s, 1), "steps": steps}))


if __name__ == "__main__":
    main()
