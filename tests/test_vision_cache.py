"""The frozen vision tower's output cache (:mod:`training.vision_cache`) on the tiny preset.

Reference: the same tiny model's vision tower run without any cache (``get_image_features``), and
the language model's logits with the tower run every time.
"""

from __future__ import annotations

import pytest
import torch

from giraffe_core.engine import tiny_model
from giraffe_core.errors import InputError
from giraffe_core.extras import is_available
from giraffe_core.samples import screenshot
from training.vision_cache import VisionCache


@pytest.fixture(scope="module")
def images(tiny_engine):
    """Three images of different sizes: ``(pixel_values, grid_thw)`` each."""
    processor = tiny_engine.processor.image_processor
    out = []
    for seed, (w, h) in enumerate([(112, 84), (84, 140), (140, 112)]):
        batch = processor(images=[screenshot(w, h, seed=seed)], return_tensors="pt")
        out.append((batch["pixel_values"], batch["image_grid_thw"]))
    return out


def _frozen() -> torch.nn.Module:
    model = tiny_model().float().eval()
    for p in model.model.visual.parameters():
        p.requires_grad_(False)
    return model


def _features(model, chosen) -> torch.Tensor:
    pixels = torch.cat([p for p, _ in chosen])
    grid = torch.cat([g for _, g in chosen])
    return torch.cat(model.model.get_image_features(pixels, grid).pooler_output)


class _PatchCounter:
    """Counts the patch rows the tower actually encodes (its patch embedding's input)."""

    def __init__(self, model) -> None:
        self.rows = 0
        self.handle = model.model.visual.patch_embed.register_forward_hook(self._count)

    def _count(self, module, args, output) -> None:
        self.rows += args[0].shape[0]


def test_cached_outputs_equal_the_tower_and_skip_it(images):
    model, reference = _frozen(), _frozen()
    expected = _features(reference, images)
    cache = VisionCache(model.model.visual)
    counter = _PatchCounter(model)
    try:
        torch.testing.assert_close(_features(model, images), expected)
        encoded = counter.rows
        assert encoded == sum(int(g.prod()) for _, g in images) and cache.stats.misses == 3
        torch.testing.assert_close(_features(model, images), expected)
        assert counter.rows - encoded == 4  # only the 2 x 2-patch placeholder ran
        assert cache.stats.memory_hits == 3
        # a batch mixing a cached image and a new order: outputs in the batch's order
        mixed = [images[2], images[0]]
        torch.testing.assert_close(_features(model, mixed), _features(reference, mixed))
    finally:
        cache.close()


def test_logits_with_the_cache_equal_without(images, tiny_engine):
    model, reference = _frozen(), _frozen()
    cache = VisionCache(model.model.visual)
    pixels, grid = images[0]
    tokens = int(grid.prod()) // 4
    config = tiny_engine.model.config
    ids = torch.tensor([[1, 2, config.vision_start_token_id] + [config.image_token_id] * tokens
                        + [config.vision_end_token_id, 3, 4]])
    inputs = {"input_ids": ids, "pixel_values": pixels, "image_grid_thw": grid,
              "mm_token_type_ids": (ids == config.image_token_id).int()}
    try:
        want = reference(**inputs).logits
        for _ in range(2):  # a miss, then a hit
            torch.testing.assert_close(model(**inputs).logits, want)
        assert cache.stats.memory_hits == 1
    finally:
        cache.close()


def test_changed_weights_are_never_served_stale(images):
    """The attack: change the tower's weights in place after its outputs were cached. With the
    weights in the key the cache recomputes; with the key pinned (the safeguard off) it serves
    the stale outputs (the control, so the check can fail)."""
    for safeguard in (True, False):
        model = _frozen()
        cache = VisionCache(model.model.visual)
        try:
            if not safeguard:
                pinned = cache.weights_digest()
                cache.weights_digest = lambda pinned=pinned: pinned
            before = _features(model, images)
            with torch.no_grad():
                model.model.visual.merger.mlp[0].weight.mul_(1.5)
            after = _features(model, images)
            fresh = _features(_with_weights(model), images)
            assert torch.allclose(after, fresh) is safeguard
            assert not torch.allclose(before, fresh)
        finally:
            cache.close()


def _with_weights(model) -> torch.nn.Module:
    copy = _frozen()
    copy.load_state_dict(model.state_dict())
    return copy


def test_memory_bound_holds(images):
    model = _frozen()
    sizes = [_features(model, [image]).numel() * 4 for image in images]
    bound = max(sizes) + 8  # holds the largest image, never all three
    assert sum(sizes) > bound
    cache = VisionCache(model.model.visual, memory_bytes=bound)
    try:
        for _ in range(3):
            _features(model, images)
            assert 0 < cache._held <= bound and len(cache._memory) < 3
        assert cache.stats.evictions >= 1
    finally:
        cache.close()
    with pytest.raises(InputError):
        VisionCache(model.model.visual, memory_bytes=-1)


def test_disk_entries_serve_a_new_process_and_bad_files_are_recomputed(images, tmp_path):
    model, expected = _frozen(), _features(_frozen(), images)
    first = VisionCache(model.model.visual, directory=tmp_path)
    _features(model, images)
    first.close()
    entries = sorted(tmp_path.glob("*.safetensors"))
    assert len(entries) == 3
    # a foreign file under an entry's name (wrong shape): dropped and recomputed, never served
    from safetensors.torch import save_file

    save_file({"features": torch.zeros(1, 3)}, str(entries[0]))
    entries[1].write_bytes(b"not a safetensors file")
    again = _frozen()
    second = VisionCache(again.model.visual, directory=tmp_path)
    try:
        torch.testing.assert_close(_features(again, images), expected)
        assert second.stats.disk_hits == 1 and second.stats.misses == 2
    finally:
        second.close()


def test_disk_bound_holds(images, tmp_path):
    model = _frozen()
    one = _features(model, images[:1]).numel() * 4
    cache = VisionCache(model.model.visual, memory_bytes=0, directory=tmp_path, disk_bytes=2 * one + 512)
    try:
        _features(model, images)
        _features(model, images)
        assert cache.disk_usage() <= 2 * one + 512 and cache.stats.evictions >= 1
    finally:
        cache.close()


def test_a_trainable_tower_is_never_cached(images):
    model = tiny_model().float()
    cache = VisionCache(model.model.visual)
    counter = _PatchCounter(model)
    try:
        _features(model, images)
        _features(model, images)
        assert counter.rows == 2 * sum(int(g.prod()) for _, g in images)
        assert cache.stats.misses == cache.stats.memory_hits == 0
    finally:
        cache.close()


@pytest.mark.skipif(not (is_available("accelerate") and is_available("peft")), reason="the train extra is missing")
def test_trainer_caches_a_frozen_tower_and_not_a_trained_one(tmp_path):
    from test_trainer import colour_dataset, config_dict

    from training import Trainer, load_config

    data = colour_dataset(tmp_path / "data", 2)
    frozen = Trainer(load_config(config_dict(tmp_path / "a", data, stages=[{"length_tokens": 512, "steps": 3}],
                                             tune={"method": "full"})))
    frozen.fit()
    stats = frozen.vision_cache.stats
    assert stats.misses == 2 and stats.memory_hits == 4  # the same two images, steps 2 and 3 from memory
    assert len(list((tmp_path / "a" / "vision_cache").glob("*.safetensors"))) == 2
    trained = Trainer(load_config(config_dict(tmp_path / "b", data, stages=[{"length_tokens": 512, "steps": 1}],
                                              tune={"method": "full", "train_vision": True})))
    trained.setup()
    assert trained.vision_cache is None
