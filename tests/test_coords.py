"""The one coordinate transform: hand-computed unit values, and golden clicks in a real Chromium.

Golden tests: a page on loopback holds 12 buttons of distinct pure colours at known CSS boxes and
5 small targets touching the viewport's edges and corners. At device scale factor 1 and 2 the
screenshot is taken through BrowserEnv and resized the way the model sees it (frame_plan sizes
for several token budgets: non-uniform scales, down to 112x56 pixels). Each target's centre is
found in the RESIZED image independently of the transform (the centroid of its colour; the small
targets from their CSS box by the test's own arithmetic), written in model space as a model
would (rounded norm1000 and image_px integers), clicked through env.act, and the page's click
log must name exactly that element.
"""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
from browser_fixtures import LoopbackServer, Reply, requires_browser
from PIL import Image
from pydantic import ValidationError

from giraffe_agent.actions import Click
from giraffe_agent.coords import CoordinateTransform
from giraffe_core.resolution import VisionGeometry, frame_plan

# ------------------------------------------------------------------ unit tests (no browser)


def test_to_css_norm1000_hand_values():
    t = CoordinateTransform(viewport_css=(1280, 800), device_scale_factor=1.0, image_px=(1260, 784))
    assert t.to_css(500, 500) == (640.0, 400.0)
    assert t.to_css(250, 100) == (320.0, 80.0)
    assert t.to_css(0, 0) == (0.0, 0.0)


def test_to_css_image_px_uses_each_axis_scale():
    # 112 x 56 image of a 1280 x 800 viewport: x scale 1280/112 = 11.428..., y scale 800/56 = 14.285...
    t = CoordinateTransform(viewport_css=(1280, 800), image_px=(112, 56))
    x, y = t.to_css(56, 28, "image_px")
    assert (x, y) == (640.0, 400.0)
    x, y = t.to_css(7, 14, "image_px")
    assert x == pytest.approx(80.0)          # 7 * 1280 / 112
    assert y == pytest.approx(200.0)         # 14 * 800 / 56


def test_to_css_clamps_inside_the_viewport():
    t = CoordinateTransform(viewport_css=(1280, 800), image_px=(588, 364))
    assert t.to_css(1000, 1000) == (1279.0, 799.0)
    assert t.to_css(5000, 0) == (1279.0, 0.0)
    assert t.to_css(-20, -3, "image_px") == (0.0, 0.0)
    assert t.to_css(588, 364, "image_px") == (1279.0, 799.0)


def test_from_css_inverts_to_css_inside_the_viewport():
    t = CoordinateTransform(viewport_css=(960, 600), device_scale_factor=2.0, image_px=(1260, 784))
    for css in [(0.0, 0.0), (480.0, 300.0), (123.25, 456.5), (959.0, 599.0)]:
        for space in ("norm1000", "image_px"):
            model = t.from_css(*css, space=space)
            assert t.to_css(*model, space=space) == pytest.approx(css)
    assert t.from_css(480, 300) == (500.0, 500.0)
    assert t.from_css(480, 300, "image_px") == (630.0, 392.0)


def test_to_screenshot_at_dpr_2_is_css_times_two():
    t = CoordinateTransform(viewport_css=(960, 600), device_scale_factor=2.0, image_px=(588, 364))
    assert t.screenshot_px == (1920, 1200)
    assert t.to_screenshot(500, 500) == (960.0, 600.0)
    assert t.to_screenshot(294, 91, "image_px") == pytest.approx((960.0, 300.0))  # 294/588*960*2, 91/364*600*2
    assert t.to_screenshot(1000, 1000) == (1918.0, 1198.0)  # clamped to the last CSS pixel, times 2


def test_transform_rejects_bad_geometry():
    with pytest.raises(ValidationError):
        CoordinateTransform(viewport_css=(1280, 800), device_scale_factor=0, image_px=(10, 10))


# ------------------------------------------------------------------ golden tests (real Chromium)

BUDGETS = (1280, 300, 64, 12)  # visual tokens: images of 1260x784 down to 112x56 pixels
EDGE = 20  # side of the edge targets, CSS px


def _colour(i: int, n: int) -> tuple[int, int, int]:
    """Pure hues (one channel 0, one 255): a blend with the white page never matches another hue."""
    r, g, b = colorsys.hsv_to_rgb(i / n, 1.0, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def targets(viewport: tuple[int, int]) -> list[dict]:
    """12 buttons on a 4 x 3 grid and 5 edge targets, with CSS boxes (left, top, width, height)."""
    w, h = viewport
    boxes = []
    for row in range(3):
        for col in range(4):
            left = round(w * (0.06 + 0.235 * col))
            top = round(h * (0.12 + 0.28 * row))
            boxes.append((f"b{row}{col}", (left, top, round(w * 0.12), round(h * 0.11)), True))
    boxes += [
        ("top_left", (0, 0, EDGE, EDGE), False),
        ("top_right", (w - EDGE, 0, EDGE, EDGE), False),
        ("bottom_left", (0, h - EDGE, EDGE, EDGE), False),
        ("bottom_right", (w - EDGE, h - EDGE, EDGE, EDGE), False),
        ("mid_right", (w - EDGE, h // 2 - EDGE // 2, EDGE, EDGE), False),
    ]
    return [{"id": name, "box": box, "big": big, "rgb": _colour(i, len(boxes))}
            for i, (name, box, big) in enumerate(boxes)]


def page_html(viewport: tuple[int, int]) -> str:
    rows = []
    for t in targets(viewport):
        left, top, width, height = t["box"]
        rgb = "rgb({}, {}, {})".format(*t["rgb"])
        rows.append(f'<button id="{t["id"]}" style="left:{left}px;top:{top}px;width:{width}px;'
                    f'height:{height}px;background:{rgb}"></button>')
    return ("<!doctype html><title>coords</title><style>html,body{margin:0;background:#fff;overflow:hidden}"
            "button{position:absolute;border:0;padding:0;margin:0;outline:none;appearance:none}</style>"
            + "".join(rows)
            + "<script>window.clicks=[];document.addEventListener('click',"
              "e=>clicks.push({id:e.target.id||e.target.tagName,x:e.clientX,y:e.clientY}),true);</script>")


def colour_centroid(image: Image.Image, rgb: tuple[int, int, int], tol: int = 40) -> tuple[float, float] | None:
    """Centre (continuous pixel coordinates: pixel i spans [i, i+1)) of the pixels close to ``rgb``."""
    px = np.asarray(image.convert("RGB")).astype(int)
    mask = (np.abs(px - np.array(rgb)) <= tol).all(axis=2)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5


def colour_bbox(image: Image.Image, rgb: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) exclusive bounds of the pixels exactly ``rgb``."""
    px = np.asarray(image.convert("RGB")).astype(int)
    ys, xs = np.nonzero((px == np.array(rgb)).all(axis=2))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


VIEWPORTS = {1.0: (1280, 800), 2.0: (960, 600)}


@pytest.fixture(scope="module")
def server():
    srv = LoopbackServer({f"/coords-{w}x{h}": Reply(page_html((w, h))) for w, h in VIEWPORTS.values()})
    yield srv
    srv.close()


@pytest.fixture(scope="module", params=sorted(VIEWPORTS), ids=lambda d: f"dpr{d:g}")
def env_obs(request, server):
    from giraffe_agent.envs.browser import BrowserConfig, SyncBrowserEnv

    dpr = request.param
    viewport = VIEWPORTS[dpr]
    env = SyncBrowserEnv(server.url(f"/coords-{viewport[0]}x{viewport[1]}"),
                         BrowserConfig(viewport_css=viewport, device_scale_factor=dpr))
    obs = env.start()
    yield env, obs, dpr, viewport
    env.close()


@requires_browser
def test_screenshot_geometry_is_css_times_dpr(env_obs):
    _env, obs, dpr, viewport = env_obs
    assert obs.viewport_css == viewport and obs.device_scale_factor == dpr
    assert obs.image.size == (round(viewport[0] * dpr), round(viewport[1] * dpr))
    assert obs.elements is None  # capture_elements is off by default
    for t in targets(viewport):
        if not t["big"]:
            continue
        left, top, width, height = t["box"]
        # pixel-exact: every button occupies exactly its CSS box times the device scale factor
        assert colour_bbox(obs.image, t["rgb"]) == (left * dpr, top * dpr, (left + width) * dpr, (top + height) * dpr)
        transform = obs.transform(obs.image.size)
        sx, sy = transform.to_screenshot(*transform.from_css(left + width / 2, top + height / 2))
        assert obs.image.getpixel((int(sx), int(sy))) == t["rgb"]


@requires_browser
@pytest.mark.parametrize("budget", BUDGETS)
def test_clicking_the_model_space_centre_hits_the_element(env_obs, budget):
    env, obs, _dpr, viewport = env_obs
    size = frame_plan(obs.image.size, budget, VisionGeometry()).size
    resized = obs.image.resize(size, Image.BICUBIC)  # what the model sees
    transform = obs.transform(size)
    sx, sy = size[0] / viewport[0], size[1] / viewport[1]  # resized pixels per CSS pixel, per axis
    assert sx != pytest.approx(sy, rel=1e-4) or budget == 1280  # the resize is not uniform (except the largest)
    for space in ("norm1000", "image_px"):
        unit = (viewport[0] / 1000, viewport[1] / 1000) if space == "norm1000" else (1 / sx, 1 / sy)
        expected = []
        for t in targets(viewport):
            left, top, width, height = t["box"]
            css_centre = (left + width / 2, top + height / 2)
            # the test's own arithmetic: the box centre in resized-image pixels
            centre = (css_centre[0] * sx, css_centre[1] * sy)
            if t["big"]:
                found = colour_centroid(resized, t["rgb"])
                assert found is not None, f"{t['id']} not visible at {size}"
                assert found[0] == pytest.approx(centre[0], abs=1.0) and found[1] == pytest.approx(centre[1], abs=1.0)
                centre = found  # click where the colour is, as seen in the resized image
            if space == "norm1000":
                x, y = round(centre[0] / size[0] * 1000), round(centre[1] / size[1] * 1000)
            else:
                x, y = round(centre[0]), round(centre[1])
            result = env.act(Click(x=x, y=y, space=space), transform)
            assert result.ok, result.message
            expected.append((t["id"], css_centre, (x, y), t["big"]))
        clicks = env.evaluate("() => window.clicks.splice(0)")
        assert [c["id"] for c in clicks] == [e[0] for e in expected], f"{space} at {size}: {clicks} vs {expected}"
        for click, (name, css_centre, model, big) in zip(clicks, expected):
            # where the page saw the click: the box centre, up to rounding to whole model units
            # (half a unit), the colour centroid's error (one resized pixel) and 1 CSS px
            for axis, coord in enumerate(("x", "y")):
                tolerance = 0.5 * unit[axis] + (1 / (sx, sy)[axis] if big else 0.0) + 1.0
                assert abs(click[coord] - css_centre[axis]) <= tolerance, (name, space, size, model, click)
