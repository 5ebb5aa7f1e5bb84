"""Tests for :mod:`giraffe_core.resolution` (hybrid-resolution planning, exact token accounting).

References used instead of the planner's own helpers:

* transformers' ``Qwen2VLImageProcessorPil`` run on an image of the frame's size, with the pixel
  bounds the budget implies: its ``image_grid_thw`` and ``pixel_values`` are what the vision tower
  really receives, so ``grid.prod() / merge**2`` is the number of visual tokens;
* hand-worked numbers: PAPER.md section 3 (``(L, m, s)`` arithmetic) and section 5 (a 1920x1080
  screenshot costs 1,222 tokens at ``max_pixels = 1280 * 28 * 28`` and 2,691 at Qwen2-VL's
  processor default ``16384 * 28 * 28``).
"""

from __future__ import annotations

import json
import math
import random

import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from giraffe_core.errors import ConfigError, InputError
from giraffe_core.resolution import (
    WRAPPER_TOKENS,
    GroupScheme,
    VisionGeometry,
    frame_plan,
    plan_groups,
    plan_tiers,
)

PX = 28  # pixels per visual token side in Qwen2-VL (patch 14 x merge 2)
QWEN2VL_CAP = 1280 * PX * PX  # the cap Qwen2-VL model cards recommend, and the tiny preset's max_pixels
QWEN2VL_DEFAULT_MAX = 16384 * PX * PX  # Qwen2VLImageProcessor's own default max_pixels (12,845,056)


@pytest.fixture(scope="module")
def geometry() -> VisionGeometry:
    return VisionGeometry()


# --------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------


def test_default_geometry_is_qwen2_vl():
    g = VisionGeometry()
    assert (g.patch_size, g.merge_size, g.temporal_patch_size) == (14, 2, 2)
    assert (g.min_pixels, g.max_pixels) == (56 * 56, QWEN2VL_CAP)
    assert g.token_side_px == PX


def test_geometry_from_processors():
    from giraffe_core.engine import tiny_processor

    assert VisionGeometry.from_processor(tiny_processor()) == VisionGeometry()
    # an image processor (not a full processor) with its own bounds, given either way transformers accepts
    for ip in (Qwen2VLImageProcessorPil(min_pixels=1000, max_pixels=50_000),
               Qwen2VLImageProcessorPil(size={"shortest_edge": 1000, "longest_edge": 50_000})):
        g = VisionGeometry.from_processor(ip)
        assert (g.min_pixels, g.max_pixels, g.patch_size, g.merge_size) == (1000, 50_000, 14, 2)


def test_geometry_rejects_inverted_bounds():
    with pytest.raises(ValueError, match="min_pixels"):
        VisionGeometry(min_pixels=10_000, max_pixels=5_000)


# --------------------------------------------------------------------------------------------------
# the group scheme (L, m, s)
# --------------------------------------------------------------------------------------------------


def test_default_scheme_is_papers():
    scheme = GroupScheme()
    assert (scheme.group_size, scheme.high_tokens, scheme.ratio) == (4, 240, 3.0)
    assert scheme.low_tokens == 80


@pytest.mark.parametrize(("L", "m", "s", "low"), [(4, 240, 3, 80), (3, 200, 3, 66), (2, 240, 2.5, 96),
                                                  (5, 100, 7, 14), (1, 64, 1, 64), (4, 2, 3, 1)])
def test_group_scheme_assigns_tiers_and_budgets(geometry, L, m, s, low):
    n = 11  # not a multiple of L: the last group is partial
    plan = plan_groups([(1280, 720)] * n, geometry, GroupScheme(group_size=L, high_tokens=m, ratio=s))
    assert [f.index for f in plan.frames] == list(range(n))
    assert [f.tier for f in plan.frames] == ["high" if i % L == 0 else "low" for i in range(n)]
    assert [f.max_tokens for f in plan.frames] == [m if i % L == 0 else low for i in range(n)]
    assert low == max(1, math.floor(m / s))
    assert all(f.tokens <= f.max_tokens for f in plan.frames)


def test_group_scheme_is_the_default(geometry):
    sizes = [(640, 360)] * 9
    assert plan_groups(sizes, geometry) == plan_groups(sizes, geometry, GroupScheme(group_size=4, high_tokens=240,
                                                                                    ratio=3))


@pytest.mark.parametrize("bad", [dict(group_size=0), dict(high_tokens=0), dict(ratio=0.5), dict(foo=1)])
def test_group_scheme_validation(bad):
    with pytest.raises(ValueError):
        GroupScheme(**bad)


def test_paper_default_averages_at_most_120_tokens_per_frame(geometry):
    """PAPER.md §3: (4, 240, 3) gives 120 tokens per frame on average, (1 + (L-1)/s) * N * m in all."""
    L, m, s = 4, 240, 3
    groups = 256  # 1024 frames, the paper's hybrid setting
    for size in [(1280, 720), (1920, 1080), (1080, 1920), (640, 480), (1024, 1024)]:
        plan = plan_groups([size] * (groups * L), geometry)
        budget = sum(f.max_tokens for f in plan.frames)
        assert budget == (1 + (L - 1) / s) * groups * m == 120 * groups * L
        average = plan.visual_tokens / len(plan.frames)
        # budgets are caps: smart_resize floors both sides, so a frame lands a little below its budget
        assert 100 <= average <= 120, (size, average)


def test_paper_formula_is_exact_when_frames_fit_budgets(geometry):
    """(L, m, s) = (4, 256, 4) on 448x448 frames: high = 16x16 = 256 tokens, low = 8x8 = 64 exactly."""
    L, m, s = 4, 256, 4
    scheme = GroupScheme(group_size=L, high_tokens=m, ratio=s)
    for groups in (1, 2, 7):
        plan = plan_groups([(448, 448)] * (groups * L), geometry, scheme)
        assert plan.visual_tokens == (1 + (L - 1) / s) * groups * m
        assert plan.visual_tokens < L * groups * m  # versus every frame at high resolution
        assert plan.tokens_by_tier() == {"high": groups * 256, "low": groups * (L - 1) * 64}
        assert {f.size for f in plan.frames if f.tier == "high"} == {(448, 448)}
        assert {f.size for f in plan.frames if f.tier == "low"} == {(224, 224)}
    # a trailing partial group: 9 frames = 3 high + 6 low
    plan = plan_groups([(448, 448)] * 9, geometry, scheme)
    assert plan.visual_tokens == 3 * 256 + 6 * 64


# --------------------------------------------------------------------------------------------------
# exact token accounting against transformers' image processor
# --------------------------------------------------------------------------------------------------


def _processor_grid(width: int, height: int, cap: int, min_pixels: int) -> tuple[tuple[int, int, int], int]:
    """What transformers' Qwen2-VL image processor makes of a ``width x height`` frame under these bounds."""
    ip = Qwen2VLImageProcessorPil(size={"shortest_edge": min_pixels, "longest_edge": cap})
    out = ip(images=[Image.new("RGB", (width, height), (120, 30, 200))], return_tensors="pt")
    grid = tuple(int(v) for v in out["image_grid_thw"][0])
    assert out["pixel_values"].shape[0] == grid[0] * grid[1] * grid[2]  # one row per patch
    return grid, out["pixel_values"].shape[0]


def test_planned_tokens_equal_what_the_processor_produces(geometry):
    rng = random.Random(20241217)
    budgets = [1, 3, 4, 10, 40, 80, 120, 240, 700, 1280, 5000]
    cases = [(rng.randint(20, 1600), rng.randint(20, 1600), rng.choice(budgets)) for _ in range(70)]
    cases += [(1920, 1080, 240), (1920, 1080, 80), (28, 1400, 16), (1000, 30, 5), (56, 56, 1280), (10, 10, 1280)]
    shrunk = 0
    for width, height, budget in cases:
        plan = frame_plan((width, height), budget, geometry)
        cap = min(budget * PX * PX, geometry.max_pixels)
        where = (width, height, budget)
        # what the model consumes: build_inputs resizes to plan.size, then the processor keeps it
        area = plan.size[0] * plan.size[1]
        grid, rows = _processor_grid(*plan.size, area, area)
        assert plan.grid_thw == grid, where
        assert plan.tokens == rows // 4, where  # merge 2x2 patches per token
        assert plan.size == (grid[2] * 14, grid[1] * 14), where
        assert plan.source_size == (width, height) and plan.max_tokens == budget
        # the processor resizing the raw frame under the same bounds agrees, unless its rounding
        # would break the budget (a side clamped at 28 px): then the plan shortens the other side
        raw_grid, raw_rows = _processor_grid(width, height, cap, min(geometry.min_pixels, cap))
        if raw_rows // 4 <= budget:
            assert plan.grid_thw == raw_grid, where
        else:
            shrunk += 1
            assert plan.tokens <= budget < raw_rows // 4, where
    assert 0 < shrunk < len(cases) // 4  # both branches ran


def test_default_budget_equals_the_tiny_processors_own_resize(geometry):
    """Without explicit bounds, the tiny preset's processor resizes exactly as a 1280-token budget does."""
    from giraffe_core.engine import tiny_processor

    ip = tiny_processor().image_processor
    rng = random.Random(7)
    for _ in range(15):
        width, height = rng.randint(30, 2600), rng.randint(30, 2600)
        out = ip(images=[Image.new("RGB", (width, height))], return_tensors="pt")
        plan = frame_plan((width, height), 1280, geometry)
        assert plan.grid_thw == tuple(int(v) for v in out["image_grid_thw"][0]), (width, height)
        assert plan.tokens == int(out["image_grid_thw"][0].prod()) // 4


def test_budget_is_respected(geometry):
    rng = random.Random(3)
    for _ in range(3000):
        width, height = rng.randint(56, 3000), rng.randint(56, 3000)
        if max(width, height) / min(width, height) > 60:
            continue
        budget = rng.randint(1, 2000)
        f = frame_plan((width, height), budget, geometry)
        w, h = f.size
        assert w % PX == 0 and h % PX == 0 and min(w, h) >= PX
        assert f.tokens == (w // PX) * (h // PX)
        assert f.grid_thw == (1, h // 14, w // 14)
        if min(w, h) > PX:  # a side at its 28 px minimum may push a thin frame over its budget
            assert f.tokens <= budget, (width, height, budget, f)
            assert w * h <= geometry.max_pixels


def test_processor_cap_beats_a_larger_budget():
    g = VisionGeometry(max_pixels=100 * PX * PX)
    f = frame_plan((1920, 1080), 240, g)
    assert f.tokens <= 100
    assert f.tokens == frame_plan((1920, 1080), 100, g).tokens


def test_budget_below_min_pixels_is_honoured(geometry):
    """One token is one 28x28 square, even though the processor's min_pixels is 56x56."""
    f = frame_plan((640, 640), 1, geometry)
    assert (f.size, f.grid_thw, f.tokens) == ((28, 28), (1, 2, 2), 1)
    assert frame_plan((640, 320), 2, geometry).size == (56, 28)


def test_tiny_frames_upscaled_within_budget(geometry):
    f = frame_plan((40, 41), 4, geometry)
    assert min(f.size) > PX
    assert f.tokens <= 4


def test_screenshot_1920x1080_token_arithmetic(geometry):
    """PAPER.md §5: ~1,222 tokens at max_pixels = 1280*28*28, ~2,691 at Qwen2-VL's default cap."""
    f = frame_plan((1920, 1080), 1280, geometry)
    assert f.size == (1316, 728)  # 47 x 26 tokens
    assert f.tokens == 47 * 26 == 1222
    plan = plan_tiers([(1920, 1080)], [1280], geometry)
    assert plan.prompt_tokens == 1224
    big = VisionGeometry(max_pixels=QWEN2VL_DEFAULT_MAX)
    f = frame_plan((1920, 1080), 16384, big)
    assert (f.size, f.tokens) == ((1932, 1092), 69 * 39) and f.tokens == 2691
    # the planner caps at the geometry's max_pixels even under a larger budget
    assert frame_plan((1920, 1080), 16384, geometry).tokens == 1222


# --------------------------------------------------------------------------------------------------
# plan_tiers, plan bookkeeping
# --------------------------------------------------------------------------------------------------


def test_plan_tiers_bookkeeping(geometry):
    sizes = [(1280, 720), (640, 480), (300, 900), (1280, 720)]
    budgets = [240, 80, 80, 40]
    plan = plan_tiers(sizes, budgets, geometry, tiers=["recent", "old", "old", "oldest"])
    tokens = [f.tokens for f in plan.frames]
    assert [f.tier for f in plan.frames] == ["recent", "old", "old", "oldest"]
    assert [f.max_tokens for f in plan.frames] == budgets
    assert plan.visual_tokens == sum(tokens)
    assert plan.prompt_tokens == sum(tokens) + 2 * len(sizes) and WRAPPER_TOKENS == 2
    assert plan.tokens_by_tier() == {"recent": tokens[0], "old": tokens[1] + tokens[2], "oldest": tokens[3]}
    assert sum(plan.tokens_by_tier().values()) == plan.visual_tokens
    rows = json.loads(json.dumps(plan.summary()))
    assert [r["tokens"] for r in rows] == tokens
    assert rows[2]["source_size"] == [300, 900] and rows[2]["grid_thw"][0] == 1
    # default tier names
    assert [f.tier for f in plan_tiers(sizes, budgets, geometry).frames] == ["t240", "t80", "t80", "t40"]
    assert plan_tiers([], [], geometry).prompt_tokens == 0


@pytest.mark.parametrize(("sizes", "budgets", "tiers"), [
    ([(100, 100), (100, 100)], [80], None),
    ([(100, 100)], [80, 80], None),
    ([(100, 100)], [80], ["a", "b"]),
])
def test_plan_tiers_rejects_mismatched_lengths(geometry, sizes, budgets, tiers):
    with pytest.raises(InputError, match="one budget"):
        plan_tiers(sizes, budgets, geometry, tiers=tiers)


@pytest.mark.parametrize("budget", [0, -1, -240])
def test_budget_below_one_is_a_config_error(geometry, budget):
    with pytest.raises(ConfigError, match="max_tokens"):
        plan_tiers([(100, 100), (200, 200)], [80, budget], geometry)
    with pytest.raises(ConfigError):
        frame_plan((100, 100), budget, geometry)


@pytest.mark.parametrize("size", [(0, 100), (100, 0), (-5, 100), (100,), (100, 100, 3), ()])
def test_bad_sizes_are_input_errors(geometry, size):
    with pytest.raises(InputError, match="frame 1"):
        plan_tiers([(100, 100), size], [80, 80], geometry)


def test_extreme_aspect_ratio_is_an_input_error(geometry):
    with pytest.raises(InputError, match="cannot be resized"):
        frame_plan((20_000, 50), 240, geometry)
    with pytest.raises(InputError):
        plan_groups([(640, 480), (50, 20_000)], geometry)


def test_errors_are_value_errors(geometry):
    """Callers catching ValueError keep working."""
    with pytest.raises(ValueError):
        plan_tiers([(100, 100)], [0], geometry)
    with pytest.raises(ValueError):
        plan_tiers([(0, 100)], [10], geometry)
