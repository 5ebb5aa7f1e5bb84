"""Tests for :mod:`giraffe_core.positions` (3-D M-RoPE position ids).

Every expected value here comes from an independent reference, never from ``rope_index`` itself:

* transformers' own ``Qwen2VLModel.get_rope_index`` / ``Qwen2_5_VLModel.get_rope_index`` (tiny random
  models) for text and images, where transformers and our rule agree;
* :func:`reference_positions`, a deliberately naive per-token Python loop written straight from the
  rule in the module docstring, for videos (transformers 5.24 differs after a video, see
  ``test_video_divergence_from_transformers_is_pinned``), packing, ``start`` and padding.

The only self-comparisons are the structural properties the brief asks for (packed == each sample
alone, two chunks == whole), and those are also checked against the reference.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from giraffe_core.errors import InputError
from giraffe_core.positions import PositionIds, VisionTokenIds, rope_index

IMG, VID, VSTART, VEND, PAD = 100, 101, 102, 103, 0
MERGE = 2
TOKENS_PER_SECOND = 2  # Qwen2.5-VL config value used below


# --------------------------------------------------------------------------------------------------
# tiny transformers models (only get_rope_index is used)
# --------------------------------------------------------------------------------------------------

_TEXT = {
    "vocab_size": 200,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": PAD,
    "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
}
_IDS = {
    "image_token_id": IMG,
    "video_token_id": VID,
    "vision_start_token_id": VSTART,
    "vision_end_token_id": VEND,
}


@pytest.fixture(scope="module")
def qwen2():
    from transformers import Qwen2VLConfig, Qwen2VLModel

    torch.manual_seed(0)
    config = Qwen2VLConfig(
        text_config=dict(_TEXT),
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "spatial_merge_size": MERGE,
        },
        **_IDS,
    )
    return Qwen2VLModel(config).eval()


@pytest.fixture(scope="module")
def qwen25():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config=dict(_TEXT),
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "out_hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "spatial_merge_size": MERGE,
            "tokens_per_second": TOKENS_PER_SECOND,
            "fullatt_block_indexes": [0],
        },
        **_IDS,
    )
    return Qwen2_5_VLModel(config).eval()


@pytest.fixture(scope="module")
def tok(qwen2) -> VisionTokenIds:
    return VisionTokenIds.from_config(qwen2.config)


# --------------------------------------------------------------------------------------------------
# building token sequences
# --------------------------------------------------------------------------------------------------


def image(h: int, w: int) -> tuple:
    """An image item with patch grid (1, h, w) (h, w multiples of the merge size)."""
    return ("image", (1, h, w), 1.0)


def video(t: int, h: int, w: int, step: float = 1.0) -> tuple:
    return ("video", (t, h, w), step)


def build(rows, *, pad: str | None = None, wrap: bool = True) -> dict:
    """Token ids, mask and grids for a batch.

    ``rows``: a list of rows, each a list of items: an ``int`` n is n text tokens, a tuple from
    :func:`image` / :func:`video` is one visual block (wrapped in vision_start/end when ``wrap``).
    ``pad``: ``"left"`` or ``"right"`` pads rows to the longest (otherwise rows must be equal length).
    """
    seqs, images, videos, steps = [], [], [], []
    for row in rows:
        seq = []
        for item in row:
            if isinstance(item, int):
                seq += [1 + (len(seq) + k) % 90 for k in range(item)]  # text ids in [1, 90], none special
            else:
                kind, (t, h, w), step = item
                n = t * (h // MERGE) * (w // MERGE)
                if wrap:
                    seq.append(VSTART)
                seq += [IMG if kind == "image" else VID] * n
                if wrap:
                    seq.append(VEND)
                (images if kind == "image" else videos).append([t, h, w])
                if kind == "video":
                    steps.append(step)
        seqs.append(seq)
    length = max(len(s) for s in seqs)
    if pad is None:
        assert all(len(s) == length for s in seqs), "rows of different length need pad='left'/'right'"
    ids = torch.full((len(seqs), length), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for b, s in enumerate(seqs):
        lo = length - len(s) if pad == "left" else 0
        ids[b, lo : lo + len(s)] = torch.tensor(s, dtype=torch.long)
        mask[b, lo : lo + len(s)] = 1
    mm = torch.zeros_like(ids, dtype=torch.int32)
    mm[ids == IMG] = 1
    mm[ids == VID] = 2
    mm[mask == 0] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask if pad is not None else None,
        "image_grid_thw": torch.tensor(images, dtype=torch.long).reshape(-1, 3),
        "video_grid_thw": torch.tensor(videos, dtype=torch.long).reshape(-1, 3),
        "video_steps": steps,
        "mm_token_type_ids": mm,
    }


def ours(batch: dict, tokens: VisionTokenIds, **kw) -> PositionIds:
    return rope_index(
        batch["input_ids"],
        batch["image_grid_thw"],
        batch["video_grid_thw"],
        batch["attention_mask"],
        tokens=tokens,
        video_time_steps=batch["video_steps"] if batch["video_steps"] else None,
        **kw,
    )


def hf_qwen2(model, batch: dict):
    grids = {k: (batch[k] if len(batch[k]) else None) for k in ("image_grid_thw", "video_grid_thw")}
    return model.get_rope_index(
        batch["input_ids"], batch["mm_token_type_ids"], attention_mask=batch["attention_mask"], **grids
    )


def hf_qwen25(model, batch: dict, seconds_per_grid=None):
    grids = {k: (batch[k] if len(batch[k]) else None) for k in ("image_grid_thw", "video_grid_thw")}
    spg = None if seconds_per_grid is None else torch.tensor(seconds_per_grid, dtype=torch.float32)
    return model.get_rope_index(
        batch["input_ids"],
        batch["mm_token_type_ids"],
        second_per_grid_ts=spg,
        attention_mask=batch["attention_mask"],
        **grids,
    )


def hf_next(batch: dict, deltas: torch.Tensor) -> torch.Tensor:
    """transformers returns rope delta = max + 1 - n_real_tokens; turn it into the next position."""
    mask = batch["attention_mask"]
    n = mask.sum(1) if mask is not None else torch.full((len(deltas),), batch["input_ids"].shape[1])
    return deltas.reshape(-1) + n


# --------------------------------------------------------------------------------------------------
# the independent reference: the rule, one token at a time
# --------------------------------------------------------------------------------------------------


def reference_positions(
    input_ids,
    image_grids,
    video_grids,
    attention_mask=None,
    *,
    video_steps=None,
    sample_ids=None,
    start=0,
    merge=MERGE,
):
    """Straight from the rule: text (p, p, p) then p += 1; a block (T, H, W) at p gives token
    (ti, hi, wi) the position (p + floor(ti * step), p + hi, p + wi), then p += max over the block's
    t, h, w offsets + 1. Padding gets 0 and does not move p; p restarts at ``start`` wherever the
    sample id changes. Returns (positions [3][B][L] as lists, next position per row)."""
    ids = [list(map(int, r)) for r in input_ids]
    n_rows, length = len(ids), len(ids[0]) if ids else 0
    mask = (
        [[1] * length for _ in ids] if attention_mask is None else [list(map(int, r)) for r in attention_mask]
    )
    sids = None if sample_ids is None else [list(map(int, r)) for r in sample_ids]
    starts = [int(start)] * n_rows if isinstance(start, int) else [int(s) for s in start]
    images = iter([list(map(int, g)) for g in image_grids])
    video_steps = [1.0] * len(video_grids) if video_steps is None else list(video_steps)
    videos = iter([(list(map(int, g)), float(s)) for g, s in zip(video_grids, video_steps)])
    pos = [[[0] * length for _ in range(n_rows)] for _ in range(3)]
    nexts = []
    for b in range(n_rows):
        p = starts[b]
        run, last_run = 0, 0  # run: index of the current sample (bumped at every id change)
        i = 0
        while i < length:
            if sids is not None and i > 0 and sids[b][i] != sids[b][i - 1]:
                run += 1
            if not mask[b][i]:
                i += 1
                continue
            if run != last_run:  # first real token of a new sample
                p, last_run = starts[b], run
            tid = ids[b][i]
            if tid not in (IMG, VID):
                for axis in range(3):
                    pos[axis][b][i] = p
                p += 1
                i += 1
                continue
            (t, h, w), step = (next(images), 1.0) if tid == IMG else next(videos)
            h, w = h // merge, w // merge
            k = i
            max_off = 0
            for ti in range(t):
                for hi in range(h):
                    for wi in range(w):
                        assert ids[b][k] == tid and mask[b][k], "reference: block not contiguous"
                        toff = math.floor(ti * step)
                        pos[0][b][k], pos[1][b][k], pos[2][b][k] = p + toff, p + hi, p + wi
                        max_off = max(max_off, toff, hi, wi)
                        k += 1
            p += max_off + 1
            i = k
        nexts.append(p)
    return pos, nexts


def check_against_reference(batch: dict, tokens: VisionTokenIds, **kw) -> PositionIds:
    got = ours(batch, tokens, **kw)
    ref_kw = {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    want, want_next = reference_positions(
        batch["input_ids"],
        batch["image_grid_thw"].tolist(),
        batch["video_grid_thw"].tolist(),
        batch["attention_mask"],
        video_steps=batch["video_steps"] or None,
        **ref_kw,
    )
    assert got.position_ids.tolist() == want
    assert got.next_position.tolist() == want_next
    return got


# --------------------------------------------------------------------------------------------------
# golden equality with transformers (Qwen2-VL): text and images
# --------------------------------------------------------------------------------------------------

GOLDEN_CASES = {
    "pure_text": {"rows": [[17]]},
    "one_image": {"rows": [[5, image(4, 6), 3]]},
    "several_images_different_grids": {
        "rows": [[3, image(4, 4), 2, image(8, 2), 1, image(2, 12), 4, image(6, 6), 2]]
    },
    "image_first_and_last": {"rows": [[image(6, 4), 2, image(4, 10)]], "wrap": False},
    "left_padding": {"rows": [[3, image(4, 6), 2], [1, image(2, 2), 4, image(8, 4), 6], [9]], "pad": "left"},
    "right_padding": {
        "rows": [[3, image(4, 6), 2], [1, image(2, 2), 4, image(8, 4), 6], [9]],
        "pad": "right",
    },
    # vision_end of one image, vision_start of the next and nothing else in between
    "adjacent_images": {"rows": [[2, image(4, 4), image(6, 2), image(2, 8), 1]]},
    "tall_and_wide": {"rows": [[1, image(20, 2), 1, image(2, 20), 1]]},
}


@pytest.mark.parametrize("name", list(GOLDEN_CASES))
def test_golden_qwen2vl(qwen2, tok, name):
    case = GOLDEN_CASES[name]
    batch = build(case["rows"], pad=case.get("pad"), wrap=case.get("wrap", True))
    want, deltas = hf_qwen2(qwen2, batch)
    got = ours(batch, tok)
    assert got.position_ids.shape == want.shape
    assert torch.equal(got.position_ids, want)
    assert torch.equal(got.next_position, hf_next(batch, deltas))
    check_against_reference(batch, tok)  # the reference agrees with transformers here too


def test_adjacent_images_separator_positions(qwen2, tok):
    """Spell out the adjacent-images case: <vs> 2x2 image <ve><vs> 1x3 image <ve>."""
    batch = build([[image(4, 4), image(2, 6)]])
    got = ours(batch, tok).position_ids[:, 0]
    # vs=0; image 1 at 1: t=1, h=1,1,2,2, w=1,2,1,2; ve=3; vs=4; image 2 at 5: t=5, h=5, w=5,6,7; ve=8
    assert got.tolist() == [
        [0, 1, 1, 1, 1, 3, 4, 5, 5, 5, 8],
        [0, 1, 1, 2, 2, 3, 4, 5, 5, 5, 8],
        [0, 1, 2, 1, 2, 3, 4, 5, 6, 7, 8],
    ]
    assert torch.equal(got, hf_qwen2(qwen2, batch)[0][:, 0])


def test_golden_qwen25vl_images(qwen25):
    tokens = VisionTokenIds.from_config(qwen25.config)
    assert tokens.tokens_per_second == TOKENS_PER_SECOND
    for pad in ("left", "right"):
        batch = build([[4, image(4, 6), 2, image(8, 2), 1], [image(2, 2), 7]], pad=pad)
        want, deltas = hf_qwen25(qwen25, batch)
        got = ours(batch, tokens)
        assert torch.equal(got.position_ids, want)
        assert torch.equal(got.next_position, hf_next(batch, deltas))


def test_from_config_reads_ids(qwen2):
    t = VisionTokenIds.from_config(qwen2.config)
    assert (t.image_token_id, t.video_token_id, t.spatial_merge_size) == (IMG, VID, MERGE)
    with pytest.raises(InputError, match="not a vision-language config"):
        VisionTokenIds.from_config(qwen2.config.text_config)


# --------------------------------------------------------------------------------------------------
# videos: our rule (reference) and the transformers 5.24 divergence
# --------------------------------------------------------------------------------------------------


def test_qwen2_video_long_temporal_extent_matches_reference(tok):
    # T = 12 temporal patches, LM grid 2x3: T > H, W, so the temporal axis decides the next position.
    batch = build([[3, video(12, 4, 6), 5, image(4, 4), 2, video(3, 8, 8), 4]])
    check_against_reference(batch, tok)


def test_video_divergence_from_transformers_is_pinned(qwen2, tok):
    """transformers 5.24 advances by max(H, W) / merge after a video, ignoring T; we use max(t, h, w) + 1.

    Sequence: 3 text, <vs> at position 3, video (T=8, LM grid 4x4) starting at p = 4, <ve>, 2 text.
    Ours: <ve> at 4 + max((8 - 1) * 1, 4 - 1, 4 - 1) + 1 = 12. transformers: 4 + max(8, 8) // 2 = 8,
    which collides with t positions 8..11 the video's later frames occupy. Qwen's training code, vLLM
    and transformers 4.x use our value; if transformers fixes this, the second assert will tell us.
    """
    batch = build([[3, video(8, 8, 8), 2]])
    vend = batch["input_ids"][0].tolist().index(VEND)
    got = ours(batch, tok).position_ids[:, 0]
    hf = hf_qwen2(qwen2, batch)[0][:, 0]
    assert got[:, vend].tolist() == [12, 12, 12]
    assert hf[:, vend].tolist() == [8, 8, 8]
    # everything up to and including the video agrees; only what follows it is shifted
    assert torch.equal(got[:, :vend], hf[:, :vend])
    assert torch.equal(got[:, vend:] - hf[:, vend:], torch.full_like(got[:, vend:], 4))
    check_against_reference(batch, tok)


def test_short_video_agrees_with_transformers(qwen2, tok):
    # (T - 1) * step <= max(H, W) - 1: the temporal axis is not the maximum, so both rules agree
    batch = build(
        [[2, video(2, 8, 6), 3, video(4, 4, 8), 1], [video(1, 2, 2), 9, image(4, 4), 1]], pad="left"
    )
    want, deltas = hf_qwen2(qwen2, batch)
    got = ours(batch, tok)
    assert torch.equal(got.position_ids, want)
    assert torch.equal(got.next_position, hf_next(batch, deltas))


@pytest.mark.parametrize("seconds_per_grid", [1.0, 0.5, 1 / 3])
def test_qwen25_video_time_steps(qwen25, seconds_per_grid):
    tokens = VisionTokenIds.from_config(qwen25.config)
    step = TOKENS_PER_SECOND * seconds_per_grid  # what the caller passes as video_time_steps
    rows = [[4, video(10, 4, 6, step), 3, image(4, 4), 2, video(3, 8, 4, step), 5]]
    batch = build(rows)
    check_against_reference(batch, tokens)

    # The video tokens' own positions (and everything before the first video) equal transformers'.
    got = ours(batch, tokens).position_ids
    hf, _ = hf_qwen25(qwen25, batch, seconds_per_grid=[seconds_per_grid] * 2)
    ids = batch["input_ids"][0]
    first_video = int((ids == VID).nonzero()[0])
    assert torch.equal(got[:, 0, :first_video], hf[:, 0, :first_video])
    # transformers shifts everything after a video by a constant; undo it per video block
    vid_idx = (ids == VID).nonzero().flatten()
    runs = torch.tensor_split(vid_idx, (torch.diff(vid_idx) != 1).nonzero().flatten() + 1)
    for run in runs:
        ours_v, hf_v = got[:, 0, run], hf[:, 0, run]
        # relative layout inside the block is identical on all three axes (t spacing included)
        assert torch.equal(ours_v - ours_v[:, :1], hf_v - hf_v[:, :1])
    # first video: no earlier video, so absolute positions are identical too
    assert torch.equal(got[:, 0, runs[0]], hf[:, 0, runs[0]])


def test_qwen25_video_tokens_equal_transformers_absolute(qwen25):
    """Video first in the row: no earlier shift, so absolute video positions must match exactly."""
    tokens = VisionTokenIds.from_config(qwen25.config)
    for spg in (1.0, 0.5):
        step = TOKENS_PER_SECOND * spg
        batch = build([[video(6, 6, 4, step), 2]], wrap=False)
        got = ours(batch, tokens).position_ids
        hf, _ = hf_qwen25(qwen25, batch, seconds_per_grid=[spg])
        is_vid = batch["input_ids"][0] == VID
        assert torch.equal(got[:, 0, is_vid], hf[:, 0, is_vid])
        # t positions are floor(ti * step): for step 2 they are 0, 2, 4, ...
        assert sorted(set(got[0, 0, is_vid].tolist())) == [math.floor(i * step) for i in range(6)]
        # and the text after starts at max((6 - 1) * step, 2, 1) + 1
        assert got[0, 0, -2].item() == math.floor(5 * step) + 1


# --------------------------------------------------------------------------------------------------
# mixed resolution and randomized layouts
# --------------------------------------------------------------------------------------------------


def test_hybrid_resolution_frames(qwen2, tok):
    """Groups of 1 high-resolution frame + 3 low-resolution ones, each frame its own block."""
    row = [6]
    for _ in range(5):
        row += [image(12, 16), 1, image(4, 8), 1, image(4, 8), 1, image(4, 8), 1]
    row += [8]
    batch = build([row, [*row[:17], 3]], pad="left")
    want, deltas = hf_qwen2(qwen2, batch)
    got = check_against_reference(batch, tok)
    assert torch.equal(got.position_ids, want)
    assert torch.equal(got.next_position, hf_next(batch, deltas))


def _random_row(rng: random.Random, videos: bool) -> list:
    row = []
    for _ in range(rng.randint(0, 7)):
        r = rng.random()
        if r < 0.35:
            row.append(rng.randint(1, 6))
        elif r < 0.7 or not videos:
            row.append(image(2 * rng.randint(1, 6), 2 * rng.randint(1, 6)))
        else:
            step = rng.choice([1.0, 1.0, 0.5, 2.0, 1.5, 0.25, 4.0])
            row.append(video(rng.randint(1, 9), 2 * rng.randint(1, 4), 2 * rng.randint(1, 4), step))
    return row or [1]


@pytest.mark.parametrize("seed", range(40))
def test_random_layouts_against_reference(tok, seed):
    rng = random.Random(seed)
    rows = [_random_row(rng, videos=True) for _ in range(rng.randint(1, 4))]
    pad = rng.choice(["left", "right"])
    batch = build(rows, pad=pad, wrap=rng.random() < 0.7)
    start = rng.choice([0, 0, 5, 1000])
    check_against_reference(batch, tok, start=start)


@pytest.mark.parametrize("seed", range(15))
def test_random_image_layouts_against_transformers(qwen2, tok, seed):
    rng = random.Random(1000 + seed)
    rows = [_random_row(rng, videos=False) for _ in range(rng.randint(1, 3))]
    batch = build(rows, pad=rng.choice(["left", "right"]))
    want, deltas = hf_qwen2(qwen2, batch)
    got = ours(batch, tok)
    assert torch.equal(got.position_ids, want)
    assert torch.equal(got.next_position, hf_next(batch, deltas))


# --------------------------------------------------------------------------------------------------
# packed samples (sample_ids)
# --------------------------------------------------------------------------------------------------

SAMPLES = [
    [3, image(4, 6), 2],
    [video(9, 4, 4, 0.5), 4],
    [1, image(2, 2), image(8, 4), 5, video(3, 2, 2)],
    [6],
]


def _packed(samples, start=0):
    alone = [build([s]) for s in samples]
    packed = build([[item for s in samples for item in s]])
    packed["sample_ids"] = torch.cat(
        [torch.full((a["input_ids"].shape[1],), k) for k, a in enumerate(alone)]
    )[None]
    return alone, packed


@pytest.mark.parametrize("start", [0, 7])
def test_packed_equals_each_sample_alone(tok, start):
    alone, packed = _packed(SAMPLES)
    got = check_against_reference(packed, tok, sample_ids=packed["sample_ids"], start=start)
    pieces = [check_against_reference(a, tok, start=start) for a in alone]
    assert torch.equal(got.position_ids, torch.cat([p.position_ids for p in pieces], dim=2))
    assert torch.equal(got.next_position, pieces[-1].next_position)
    # positions restart at every new sample
    starts = torch.nonzero(torch.diff(packed["sample_ids"][0]) != 0).flatten() + 1
    assert got.position_ids[:, 0, starts].tolist() == [[start] * len(starts)] * 3


def test_packed_batch_with_padding(tok):
    """Two packed rows, right padding (padding in its own sample -1); and a row whose sample ids repeat."""
    _, row0 = _packed(SAMPLES[:2])
    _, row1 = _packed(SAMPLES[2:])
    batch = build([SAMPLES[0] + SAMPLES[1], SAMPLES[2] + SAMPLES[3]], pad="right")
    sids = torch.full_like(batch["input_ids"], -1)
    sids[0, : row0["input_ids"].shape[1]] = row0["sample_ids"][0]
    sids[1, : row1["input_ids"].shape[1]] = row1["sample_ids"][0]
    got = check_against_reference(batch, tok, sample_ids=sids)
    assert got.next_position.tolist() == [
        ours(build([SAMPLES[1]]), tok).next_position.item(),
        ours(build([SAMPLES[3]]), tok).next_position.item(),
    ]


def test_packed_repeated_sample_id_restarts(tok):
    """Ids are compared with the neighbour, not globally: 0,0,...,1,...,0 is three samples, and the
    next position comes from the last run only (regression: it used to take the first run's max)."""
    batch = build([[20, image(4, 4), 3, 2]])
    n = batch["input_ids"].shape[1]
    sids = torch.tensor([[0] * 20 + [1] * (n - 22) + [0] * 2])
    got = check_against_reference(batch, tok, sample_ids=sids)
    assert got.next_position.tolist() == [2]
    assert got.position_ids[0, 0, -2:].tolist() == [0, 1]


# --------------------------------------------------------------------------------------------------
# appending a chunk after an existing context
# --------------------------------------------------------------------------------------------------

APPEND_ROWS = [
    ([12], [9]),
    ([2, image(4, 6), 1], [3, image(8, 2), 2]),
    ([video(7, 4, 4), 2], [image(2, 2), video(2, 6, 6, 2.0), 1]),
    ([5], [image(4, 4), 3]),
]


@pytest.mark.parametrize("first,second", APPEND_ROWS)
def test_append_two_chunks_equals_whole(tok, first, second):
    whole = check_against_reference(build([first + second]), tok)
    a = check_against_reference(build([first]), tok)
    b = check_against_reference(build([second]), tok, start=a.next_position)
    assert torch.equal(torch.cat([a.position_ids, b.position_ids], dim=2), whole.position_ids)
    assert torch.equal(b.next_position, whole.next_position)
    # next_position is max + 1 of the row
    for r in (a, b, whole):
        assert r.next_position.tolist() == (r.position_ids.amax(dim=(0, 2)) + 1).tolist()


def test_append_batch_with_padding_and_tensor_start(tok):
    """Chunk 1 left-padded, chunk 2 right-padded, start = chunk 1's (B,) next_position."""
    firsts = [r[0] for r in APPEND_ROWS]
    seconds = [r[1] for r in APPEND_ROWS]
    a = ours(build(firsts, pad="left"), tok)
    b2 = build(seconds, pad="right")
    b = ours(b2, tok, start=a.next_position)
    check_against_reference(b2, tok, start=a.next_position.tolist())
    for i, (f, s) in enumerate(zip(firsts, seconds)):
        whole = ours(build([f + s]), tok).position_ids[:, 0]
        n_first = build([f])["input_ids"].shape[1]
        n_second = int(b2["attention_mask"][i].sum())
        assert torch.equal(b.position_ids[:, i, :n_second], whole[:, n_first:])
        assert torch.equal(b.position_ids[:, i, n_second:], torch.zeros_like(b.position_ids[:, i, n_second:]))


def test_empty_chunk_and_all_padding_row(tok):
    r = rope_index(torch.zeros(2, 0, dtype=torch.long), tokens=tok, start=torch.tensor([3, 9]))
    assert r.position_ids.shape == (3, 2, 0)
    assert r.next_position.tolist() == [3, 9]
    r = rope_index(
        torch.ones(2, 4, dtype=torch.long),
        attention_mask=torch.tensor([[0] * 4, [1] * 4]),
        tokens=tok,
        start=5,
    )
    assert r.next_position.tolist() == [5, 9]
    assert r.position_ids[:, 0].tolist() == [[0] * 4] * 3


def test_empty_grid_lists_are_accepted(tok):
    r = rope_index(torch.arange(1, 6)[None], [], [], tokens=tok)
    assert r.position_ids[0, 0].tolist() == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


def test_error_placeholder_count_mismatch(tok):
    batch = build([[2, image(4, 4), 2]])
    with pytest.raises(
        InputError, match=r"4 image placeholder tokens but the 1 image grid\(s\) need 16"
    ) as e:
        rope_index(batch["input_ids"], [[1, 8, 8]], tokens=tok)
    assert "processor" in str(e.value)  # the hint says how to fix it
    assert isinstance(e.value, ValueError)
    with pytest.raises(InputError, match="0 video placeholder tokens but the 1 video grid"):
        rope_index(batch["input_ids"], batch["image_grid_thw"], [[2, 2, 2]], tokens=tok)
    with pytest.raises(InputError, match="4 image placeholder tokens but the 0 image grid"):
        rope_index(batch["input_ids"], tokens=tok)


def test_error_wrong_shapes(tok):
    ids = build([[2, image(4, 4), 2]])["input_ids"]
    grid = [[1, 4, 4]]
    with pytest.raises(InputError, match="input_ids must be"):
        rope_index(ids[0], grid, tokens=tok)
    with pytest.raises(InputError, match="attention_mask shape"):
        rope_index(ids, grid, attention_mask=torch.ones(1, 3), tokens=tok)
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        rope_index(ids, [1, 4, 4], tokens=tok)
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        rope_index(ids, [[4, 4]], tokens=tok)
    with pytest.raises(InputError, match="positive"):
        rope_index(ids, [[0, 4, 4]], tokens=tok)
    with pytest.raises(InputError, match="multiples of the spatial merge size"):
        rope_index(torch.tensor([[IMG] * 2]), [[1, 3, 4]], tokens=tok)
    with pytest.raises(InputError, match="sample_ids shape"):
        rope_index(ids, grid, sample_ids=torch.zeros(1, 2), tokens=tok)
    with pytest.raises(InputError, match="video_time_steps"):
        rope_index(ids, grid, video_time_steps=[1.0], tokens=tok)
    with pytest.raises(InputError, match="start must be"):
        rope_index(ids, grid, start=torch.tensor([1, 2, 3]), tokens=tok)


def test_error_block_split_across_rows(tok):
    # one 2x4 image (8 tokens): 4 placeholders at the end of row 0, 4 at the start of row 1
    ids = torch.tensor([[1, 2, IMG, IMG, IMG, IMG], [IMG, IMG, IMG, IMG, 3, 4]])
    with pytest.raises(InputError, match="split across batch rows"):
        rope_index(ids, [[1, 4, 8]], tokens=tok)


def test_error_block_not_contiguous(tok):
    # two 2x2 images (4 tokens each): the totals match (8) but text sits inside the first block
    ids = torch.tensor([[1, IMG, IMG, IMG, 5, IMG, IMG, IMG, IMG, IMG, 2]])
    with pytest.raises(InputError, match="not consecutive"):
        rope_index(ids, [[1, 4, 4], [1, 4, 4]], tokens=tok)
    # an image block interrupted by a video block
    ids = torch.tensor([[IMG, IMG, VID, VID, VID, VID, IMG, IMG]])
    with pytest.raises(InputError, match="not consecutive"):
        rope_index(ids, [[1, 4, 4]], [[1, 4, 4]], tokens=tok)
    # padding inside a block is not "in between" (transformers drops masked tokens the same way)
    mask = torch.tensor([[1, 1, 0, 1, 1, 1, 1, 1]])
    ids = torch.tensor([[IMG, IMG, PAD, IMG, IMG, 7, 7, 7]])
    r = rope_index(ids, [[1, 4, 4]], attention_mask=mask, tokens=tok)
    assert r.position_ids[2, 0].tolist() == [0, 1, 0, 0, 1, 2, 3, 4]


def test_error_block_split_across_samples(tok):
    ids = torch.tensor([[1, IMG, IMG, IMG, IMG, 2]])
    with pytest.raises(InputError, match="split across packed samples"):
        rope_index(ids, [[1, 4, 4]], sample_ids=torch.tensor([[0, 0, 0, 1, 1, 1]]), tokens=tok)
    # a sample that starts exactly at the block is fine
    r = rope_index(ids, [[1, 4, 4]], sample_ids=torch.tensor([[0, 1, 1, 1, 1, 1]]), tokens=tok)
    assert r.position_ids[:, 0, 1].tolist() == [0, 0, 0]
