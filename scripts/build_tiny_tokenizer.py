"""Rebuild the tiny preset's tokenizer files (giraffe_core/engine/tiny_tokenizer/).

The tiny preset needs a tokenizer that works offline. This script trains a small byte-level BPE
with Qwen2's pre-tokenizer on a corpus written here (UI-agent vocabulary, numbers, plain English)
and writes ``vocab.json`` and ``merges.txt``. Special tokens are added at load time by
``giraffe_core.engine.tiny`` in Qwen2-VL's order. Run from the repository root:

    python scripts/build_tiny_tokenizer.py
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

VOCAB_SIZE = 1024
OUT = Path(__file__).resolve().parents[1] / "giraffe_core" / "engine" / "tiny_tokenizer"

WORDS = """
click double right type press key scroll drag goto back wait select option zoom answer done fail
button link text field input search submit login user password name email enter tab dialog menu
checkbox radio box list item page window title url browser screen frame step time second minute
the a an of to in on at for with from by is are was be this that it you your what which where when
yes no ok cancel close open save next previous first last left right up down top bottom center
describe image images video screenshot recording question answer assistant system task goal
red green blue yellow black white gray orange purple shape circle square triangle word object
""".split()  # noqa: SIM905  (a word list reads best as text)

SENTENCES = [
    "You are a helpful assistant.",
    "Describe the image.",
    "What happened at {n} seconds?",
    "Click the button labelled {w}.",
    "Type {w} into the text field and press Enter.",
    "Step {n} at {n}.{m}s on http://localhost:{p}/{w}.html",
    '{{"action": "click", "x": {n}, "y": {m}}}',
    '{{"action": "type", "text": "{w}"}}',
    '{{"action": "scroll", "direction": "down", "amount": {n}}}',
    '{{"action": "answer", "text": "{w}"}}',
    "click({n}, {m})",
    "<|box_start|>({n},{m}),({m},{n})<|box_end|>",
    "Frame {n} of {m}, time {n}.{m} s, url http://127.0.0.1:{p}/",
]


def corpus() -> list[str]:
    lines = []
    numbers = [str(n) for n in range(0, 1001, 7)]
    for i, (sentence, word) in enumerate(itertools.product(SENTENCES, WORDS)):
        n, m, p = numbers[i % len(numbers)], numbers[(i * 3) % len(numbers)], 8000 + i % 100
        lines.append(sentence.format(n=n, m=m, p=p, w=word))
    lines.append(" ".join(WORDS))
    return lines


def main() -> None:
    tokenizer = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False, indent=0) + "\n")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (OUT / "merges.txt").write_text("#version: giraffe tiny\n" + "\n".join(merges) + "\n")
    print(f"wrote {len(model['vocab'])} tokens and {len(merges)} merges to {OUT}")


if __name__ == "__main__":
    main()
