"""Edges of giraffe_core.positions: the spatial merge size (its default, its fallback when a config has
none, and other sizes), ``next_position`` of packed rows whose last sample is tiny, ``start`` shapes,
fractional video time steps and every input guard.

Expected positions come from :func:`reference`, a per-token loop written from the rule in the module
docstring, never from ``rope_index``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

from giraffe_core.errors import GiraffeError, InputError
from giraffe_core.positions import VisionTokenIds, rope_index

IMG, VID = 100, 101


def reference(ids, images, videos, *, merge, mask=None, samples=None, start=0, steps=None):
    """(positions [3][B][L], next position per row), one token at a time.

    Padding gets 0 and does not move the position; the position restarts at ``start`` at the first
    real token after a change of sample id, so the next position is that of the row's last sample.
    """
    rows, length = len(ids), len(ids[0]) if ids else 0
    mask = mask or [[1] * length for _ in range(rows)]
    starts = [start] * rows if isinstance(start, int) else list(start) * (rows if len(start) == 1 else 1)
    blocks = iter([(g, 1.0) for g in images])
    video_blocks = iter(zip(videos, steps or [1.0] * len(videos)))
    pos = [[[0] * length for _ in range(rows)] for _ in range(3)]
    nexts = []
    for b in range(rows):
        p, i = starts[b], 0
        changed = False  # the sample id changed since the last real token (padding starts no sample)
        while i < length:
            changed |= samples is not None and i > 0 and samples[b][i] != samples[b][i - 1]
            if not mask[b][i]:
                i += 1
                continue
            if changed:
                p, changed = starts[b], False
            if ids[b][i] not in (IMG, VID):
                for axis in range(3):
                    pos[axis][b][i] = p
                p, i = p + 1, i + 1
                continue
            (t, h, w), step = next(blocks) if ids[b][i] == IMG else next(video_blocks)
            offsets = [(math.floor(ti * step), hi, wi) for ti in range(t) for hi in range(h // merge)
                       for wi in range(w // merge)]
            for k, off in enumerate(offsets):
                for axis in range(3):
                    pos[axis][b][i + k] = p + off[axis]
            p += max(max(off) for off in offsets) + 1
            i += len(offsets)
        nexts.append(p)
    return pos, nexts


def tokens_of(kind: str, grid: tuple[int, int, int], merge: int) -> list[int]:
    t, h, w = grid
    return [IMG if kind == "image" else VID] * (t * (h // merge) * (w // merge))


def check(ids, images=(), videos=(), *, merge=2, mask=None, samples=None, start=0, steps=None):
    got = rope_index(
        torch.tensor(ids, dtype=torch.long), [list(g) for g in images] or None, [list(g) for g in videos] or None,
        None if mask is None else torch.tensor(mask),
        tokens=VisionTokenIds(IMG, VID, spatial_merge_size=merge),
        video_time_steps=steps, sample_ids=None if samples is None else torch.tensor(samples),
        start=start if isinstance(start, int) else torch.tensor(start),
    )
    want, want_next = reference(ids, list(images), list(videos), merge=merge, mask=mask, samples=samples,
                                start=start, steps=steps)
    assert got.position_ids.tolist() == want
    assert got.next_position.tolist() == want_next
    return got


# ------------------------------------------------------------------------------ merge size


def test_the_default_merge_size_is_two():
    tokens = VisionTokenIds(image_token_id=IMG, video_token_id=VID)
    assert tokens.spatial_merge_size == 2 and tokens.tokens_per_second is None
    ids = [[1, *tokens_of("image", (1, 4, 8), 2), 2]]
    default = rope_index(torch.tensor(ids), [[1, 4, 8]], tokens=tokens)
    explicit = check(ids, [(1, 4, 8)], merge=2)
    assert torch.equal(default.position_ids, explicit.position_ids)


@pytest.mark.parametrize("config_class,tokens_per_second", [(Qwen2VLConfig, None), (Qwen2_5_VLConfig, 4),
                                                            (Qwen3VLConfig, None)])
def test_ids_from_transformers_default_configs(config_class, tokens_per_second):
    config = config_class()
    tokens = VisionTokenIds.from_config(config)
    assert tokens.image_token_id == config.image_token_id == 151655
    assert tokens.video_token_id == config.video_token_id == 151656
    assert tokens.spatial_merge_size == config.vision_config.spatial_merge_size == 2
    assert tokens.tokens_per_second == tokens_per_second


@pytest.mark.parametrize("merge", [1, 4])
def test_a_configs_merge_size_is_read(merge):
    config = Qwen2VLConfig(vision_config={"spatial_merge_size": merge})
    assert VisionTokenIds.from_config(config).spatial_merge_size == merge


def test_a_config_without_a_merge_size_falls_back_to_two():
    config = SimpleNamespace(vision_config=SimpleNamespace(), image_token_id="7", video_token_id=8.0)
    tokens = VisionTokenIds.from_config(config)
    assert tokens == VisionTokenIds(image_token_id=7, video_token_id=8, spatial_merge_size=2, tokens_per_second=None)
    assert isinstance(tokens.image_token_id, int) and isinstance(tokens.video_token_id, int)


@pytest.mark.parametrize("config", [Qwen2VLConfig().text_config, SimpleNamespace(image_token_id=1),
                                    SimpleNamespace(vision_config=SimpleNamespace()), object()],
                         ids=["text-config", "no-vision", "no-token-ids", "object"])
def test_a_config_that_is_not_vision_language_is_refused(config):
    with pytest.raises(InputError) as caught:
        VisionTokenIds.from_config(config)
    assert caught.value.hint and isinstance(caught.value, GiraffeError)


def test_token_ids_and_results_are_immutable():
    tokens = VisionTokenIds(IMG, VID)
    with pytest.raises(AttributeError):
        tokens.spatial_merge_size = 4  # type: ignore[misc]
    result = rope_index(torch.tensor([[1, 2]]), tokens=tokens)
    with pytest.raises(AttributeError):
        result.next_position = torch.tensor([0])  # type: ignore[misc]


@pytest.mark.parametrize("merge", [1, 2, 4])
def test_positions_use_the_merge_size(merge):
    ids = [[5, 6, *tokens_of("image", (1, 8, 4), merge), 7, *tokens_of("video", (3, 4, 8), merge), 8]]
    check(ids, [(1, 8, 4)], [(3, 4, 8)], merge=merge)


@pytest.mark.parametrize("merge,grid", [(2, (1, 3, 4)), (2, (1, 4, 5)), (4, (1, 4, 6)), (4, (2, 2, 4))])
def test_grids_must_be_multiples_of_the_merge_size(merge, grid):
    n = grid[0] * (grid[1] // merge) * (grid[2] // merge)
    with pytest.raises(InputError, match=f"multiples of the spatial merge size {merge}"):
        rope_index(torch.tensor([[IMG] * n]), [list(grid)], tokens=VisionTokenIds(IMG, VID, merge))


# ------------------------------------------------------------------------------ packed rows


#: rows of (token ids, sample ids, attention mask or None), the last sample of each tiny
PACKED = {
    "last-sample-one-token": ([[1, 2, 3, 4]], [[0, 0, 0, 1]], None),
    "first-and-last-one-token": ([[1, 2, 3, 4]], [[0, 1, 1, 2]], None),
    "every-token-its-own-sample": ([[1, 2, 3, 4]], [[0, 1, 2, 3]], None),
    "last-sample-id-seen-before": ([[1, 2, 3, 4]], [[0, 0, 1, 0]], None),
    "last-sample-one-token-then-padding": ([[1, 2, 3, 0, 0]], [[0, 0, 1, 1, 1]], [[1, 1, 1, 0, 0]]),
    "padding-between-samples": ([[1, 2, 0, 3]], [[0, 0, 1, 1]], [[1, 1, 0, 1]]),
    "last-sample-one-image": ([[1, 2, 3, IMG, IMG, IMG, IMG]], [[0, 0, 0, 1, 1, 1, 1]], None),
    "long-first-one-token-last-batch": ([[1, 2, 3, 4, 5, 6], [1, IMG, IMG, IMG, IMG, 9]],
                                        [[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1]], None),
    "left-padding-one-token-sample": ([[0, 0, 1, 2]], [[0, 0, 0, 1]], [[0, 0, 1, 1]]),
    "one-real-token-then-padding-of-another-id": ([[1, 0, 0]], [[0, 1, 1]], [[1, 0, 0]]),
    "one-real-token-per-row-then-padding": ([[1, 0, 0], [0, 0, 2]], [[0, 1, 1], [1, 1, 0]], [[1, 0, 0], [0, 0, 1]]),
}


@pytest.mark.parametrize("name", sorted(PACKED))
@pytest.mark.parametrize("start", [0, 5])
def test_next_position_of_packed_rows_counts_only_the_last_sample(name, start):
    ids, samples, mask = PACKED[name]
    images = [(1, 4, 4)] * sum(row.count(IMG) // 4 for row in ids)
    got = check(ids, images, mask=mask, samples=samples, start=start)
    if name == "last-sample-one-token":
        assert got.next_position.tolist() == [start + 1]


def test_next_position_without_samples_is_the_rows_end():
    got = check([[1, 2, *[IMG] * 4, 3], [1, 2, 3, 4, 5, 6, 7]], [(1, 4, 4)])
    assert got.next_position.tolist() == [2 + 2 + 1, 7]
    empty = rope_index(torch.zeros((2, 0), dtype=torch.long), tokens=VisionTokenIds(IMG, VID),
                       start=torch.tensor([3, 4]))
    assert empty.position_ids.shape == (3, 2, 0) and empty.next_position.tolist() == [3, 4]
    padded = check([[0, 0, 0]], mask=[[0, 0, 0]], start=9)
    assert padded.next_position.tolist() == [9]


# ------------------------------------------------------------------------------ start


@pytest.mark.parametrize("start", [0, 3, [4], [2, 6]])
def test_start_is_an_int_or_one_per_row(start):
    check([[1, 2, *[IMG] * 4], [*[IMG] * 4, 3, 4]], [(1, 4, 4), (1, 4, 4)], start=start)


@pytest.mark.parametrize("start", [[1, 2, 3], [[1], [2]], [[[1]]]])
def test_start_of_another_shape_is_refused(start):
    with pytest.raises(InputError, match="start must be"):
        rope_index(torch.ones((2, 3), dtype=torch.long), tokens=VisionTokenIds(IMG, VID), start=torch.tensor(start))


# ------------------------------------------------------------------------------ video time steps


@pytest.mark.parametrize("step", [0.5, 1 / 3, 1.0, 2.0, 2.5, 4.0])
def test_fractional_video_steps_floor_each_temporal_index(step):
    ids = [[1, *tokens_of("video", (5, 2, 4), 2), 2, *tokens_of("image", (1, 2, 2), 2), 3]]
    got = check(ids, [(1, 2, 2)], [(5, 2, 4)], steps=[step])
    # text 1, the video (t offsets up to floor(4 * step), h 0, w 1), text 1, the image 1, text 1
    assert got.next_position.tolist() == [1 + max(math.floor(4 * step), 1) + 1 + 1 + 1 + 1]


def test_a_step_per_video():
    ids = [[*tokens_of("video", (3, 2, 2), 2), 1, *tokens_of("video", (4, 2, 2), 2)]]
    check(ids, videos=[(3, 2, 2), (4, 2, 2)], steps=[2.0, 0.5])
    with pytest.raises(InputError, match="1 video_time_steps for 2 videos"):
        rope_index(torch.tensor(ids), None, [[3, 2, 2], [4, 2, 2]], tokens=VisionTokenIds(IMG, VID),
                   video_time_steps=[2.0])


# ------------------------------------------------------------------------------ guards


def _ok() -> dict:
    return {"input_ids": torch.tensor([[1, *[IMG] * 4, 2]]), "image_grid_thw": [[1, 4, 4]],
            "tokens": VisionTokenIds(IMG, VID)}


@pytest.mark.parametrize("change,message", [
    ({"input_ids": torch.tensor([1, IMG, IMG, IMG, IMG, 2])}, "input_ids must be"),
    ({"input_ids": torch.ones((1, 1, 6), dtype=torch.long)}, "input_ids must be"),
    ({"attention_mask": torch.ones((1, 5))}, "attention_mask shape"),
    ({"sample_ids": torch.zeros((2, 6))}, "sample_ids shape"),
    ({"image_grid_thw": [[1, 4, 4, 1]]}, "grid_thw must be"),
    ({"image_grid_thw": [1, 4, 4]}, "grid_thw must be"),
    ({"image_grid_thw": [[0, 4, 4]]}, "grid_thw must be"),
    ({"image_grid_thw": [[1, -4, 4]]}, "grid_thw must be"),
    ({"image_grid_thw": [[1, 4, 4], [1, 2, 2]]}, "placeholder tokens"),
    ({"image_grid_thw": None}, "placeholder tokens"),
    ({"video_grid_thw": [[1, 2, 2]]}, "placeholder tokens"),
    ({"input_ids": torch.tensor([[1, IMG, IMG, 2, IMG, IMG]])}, "not consecutive"),
    ({"sample_ids": torch.tensor([[0, 0, 0, 1, 1, 1]])}, "split across packed samples"),
    ({"attention_mask": torch.tensor([[1, 1, 1, 0, 1, 1]])}, "placeholder tokens"),
])
def test_every_input_guard(change, message):
    rope_index(**_ok())  # control: the unchanged input is fine
    with pytest.raises(InputError, match=message) as caught:
        rope_index(**{**_ok(), **change})
    assert isinstance(caught.value, GiraffeError)


def test_a_block_split_across_rows_is_refused():
    with pytest.raises(InputError, match="split across batch rows"):
        rope_index(torch.tensor([[1, 2, IMG, IMG], [IMG, IMG, 3, 4]]), [[1, 4, 4]], tokens=VisionTokenIds(IMG, VID))


@pytest.mark.parametrize("grids", [[], torch.zeros((0, 3), dtype=torch.long), None])
def test_no_grids_means_no_blocks(grids):
    got = rope_index(torch.tensor([[1, 2, 3]]), grids, grids, tokens=VisionTokenIds(IMG, VID))
    assert got.position_ids.tolist() == [[[0, 1, 2]]] * 3 and got.next_position.tolist() == [3]
