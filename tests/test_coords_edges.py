"""Edges of giraffe_agent.coords: defaults, immutability, the clamp on every side in both spaces, the
scale factor's role (none in CSS, only in screenshot pixels) and non-finite input (refused).

Expected values are the test's own arithmetic from the module docstring's formula
``css = value / extent * viewport``, clamped to ``[0, viewport - 1]``.
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from giraffe_agent.coords import CoordinateTransform
from giraffe_core.errors import GiraffeError, InputError

VIEWPORTS = [(1280, 800), (390, 844), (1, 1), (2, 3)]
IMAGES = [(1260, 784), (112, 56), (28, 28)]


def expected_css(value: float, extent: float, side: int) -> float:
    return min(max(value / extent * side, 0.0), side - 1.0)


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_the_default_scale_factor_is_one(viewport):
    transform = CoordinateTransform(viewport_css=viewport, image_px=(28, 28))
    assert transform.device_scale_factor == 1.0
    assert transform.screenshot_px == viewport
    assert transform.to_screenshot(500, 500) == transform.to_css(500, 500)


@pytest.mark.parametrize("dpr", [0.5, 1.25, 1.5, 2.0, 3.0])
@pytest.mark.parametrize("viewport", [(333, 201), (1280, 800), (7, 5)])
def test_screenshot_size_is_the_viewport_times_the_scale_rounded(viewport, dpr):
    transform = CoordinateTransform(viewport_css=viewport, device_scale_factor=dpr, image_px=(28, 28))
    assert transform.screenshot_px == (round(viewport[0] * dpr), round(viewport[1] * dpr))
    # the scale factor never changes where a click lands in CSS pixels
    plain = CoordinateTransform(viewport_css=viewport, image_px=(28, 28))
    for point in [(0, 0), (123, 456), (1000, 1000), (999.5, 0.5)]:
        assert transform.to_css(*point) == plain.to_css(*point)
        css = plain.to_css(*point)
        assert transform.to_screenshot(*point) == (css[0] * dpr, css[1] * dpr)


@pytest.mark.parametrize("field,value", [("viewport_css", (10, 10)), ("device_scale_factor", 3.0),
                                         ("image_px", (56, 56))])
def test_a_transform_cannot_be_changed(field, value):
    transform = CoordinateTransform(viewport_css=(1280, 800), image_px=(1260, 784))
    with pytest.raises(ValidationError):
        setattr(transform, field, value)
    assert transform == CoordinateTransform(viewport_css=(1280, 800), image_px=(1260, 784))
    assert hash(transform) == hash(CoordinateTransform(viewport_css=(1280, 800), image_px=(1260, 784)))
    assert transform.model_copy(update={field: value}) != transform  # control: a copy may differ


@pytest.mark.parametrize("fields", [
    {"device_scale_factor": 0},
    {"device_scale_factor": -1.0},
    {"viewport_css": (1280,)},
    {"image_px": "big"},
    {"dpr": 2.0},  # a misspelt field is refused, not ignored
])
def test_bad_geometry_is_refused(fields):
    with pytest.raises(ValidationError):
        CoordinateTransform(**{"viewport_css": (1280, 800), "image_px": (28, 28), **fields})


@pytest.mark.parametrize("viewport", VIEWPORTS)
@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("space", ["norm1000", "image_px"])
def test_every_edge_is_clamped_inside_the_viewport(viewport, image, space):
    transform = CoordinateTransform(viewport_css=viewport, image_px=image)
    extent = (1000.0, 1000.0) if space == "norm1000" else (float(image[0]), float(image[1]))
    for x in (-1e9, -1.0, 0.0, 0.4, extent[0] / 2, extent[0] - 0.5, extent[0], extent[0] + 1, 1e9, 1e308):
        for y in (0.0, extent[1] / 3, extent[1], -5.0, 1e12, -1e308):
            css = transform.to_css(x, y, space)
            assert css == (expected_css(x, extent[0], viewport[0]), expected_css(y, extent[1], viewport[1]))
            assert 0.0 <= css[0] <= viewport[0] - 1 and 0.0 <= css[1] <= viewport[1] - 1


@pytest.mark.parametrize("space", ["norm1000", "image_px"])
def test_the_axes_are_not_swapped(space):
    transform = CoordinateTransform(viewport_css=(1000, 500), image_px=(200, 100))
    x, y = (300, 800) if space == "norm1000" else (60, 80)
    assert transform.to_css(x, y, space) == (300.0, 400.0)
    assert transform.from_css(300.0, 400.0, space) == (x, y)


@pytest.mark.parametrize("space", ["norm1000", "image_px"])
@pytest.mark.parametrize("bad", [math.nan, -math.nan, math.inf, -math.inf])
def test_a_non_finite_position_is_refused(space, bad):
    """``max(nan, 0.0)`` is nan: without the check a NaN would pass the clamp and reach the page."""
    transform = CoordinateTransform(viewport_css=(1280, 800), device_scale_factor=2.0, image_px=(1260, 784))
    for x, y in ((bad, 10.0), (10.0, bad), (bad, bad)):
        with pytest.raises(InputError) as caught:
            transform.to_css(x, y, space)
        assert isinstance(caught.value, GiraffeError) and caught.value.hint
        with pytest.raises(InputError):
            transform.to_screenshot(x, y, space)
    assert transform.to_css(10.0, 10.0, space)  # control: a finite position maps


def test_the_default_space_is_norm1000():
    transform = CoordinateTransform(viewport_css=(1000, 1000), image_px=(500, 500))
    assert transform.to_css(250, 250) == transform.to_css(250, 250, "norm1000") == (250.0, 250.0)
    assert transform.to_css(250, 250, "image_px") == (500.0, 500.0)
    assert transform.from_css(500, 500) == (500.0, 500.0)
    assert transform.from_css(500, 500, "image_px") == (250.0, 250.0)
    assert transform.to_screenshot(250, 250) == (250.0, 250.0)
    assert transform.to_screenshot(250, 250, "image_px") == (500.0, 500.0)
