"""Painting masks (:mod:`giraffe_agent.masking`): boxes in CSS px become opaque device pixels.

References: the boxes' own arithmetic (CSS px times the device scale factor, padded by
MASK_PAD_CSS, rounded outwards) on a white image; pixels read back with Pillow.
"""

from __future__ import annotations

import math

from PIL import Image

from giraffe_agent.masking import MASK_COLOR, MASK_PAD_CSS, device_box, hide_all, paint_boxes

WHITE = (255, 255, 255)


def colors(image: Image.Image, box: tuple[int, int, int, int]) -> set[tuple[int, int, int]]:
    return {color for _, color in image.crop(box).getcolors(1 << 20)}


def test_a_box_is_painted_padded_and_rounded_outwards_at_the_device_scale():
    image = Image.new("RGB", (200, 100), WHITE)
    box = (10.3, 20.6, 30.2, 10.1)  # CSS px
    out = paint_boxes(image, [box], 2.0)
    x0, y0 = math.floor((10.3 - MASK_PAD_CSS) * 2), math.floor((20.6 - MASK_PAD_CSS) * 2)
    x1, y1 = math.ceil((10.3 + 30.2 + MASK_PAD_CSS) * 2), math.ceil((20.6 + 10.1 + MASK_PAD_CSS) * 2)
    assert device_box(box, 2.0, image.size) == (x0, y0, x1, y1)
    assert colors(out, (x0, y0, x1, y1)) == {MASK_COLOR}
    for outside in ((0, 0, 200, y0), (0, y1, 200, 100), (0, 0, x0, 100), (x1, 0, 200, 100)):
        assert colors(out, outside) == {WHITE}, outside
    assert colors(image, (0, 0, 200, 100)) == {WHITE}  # the input is left as it was


def test_boxes_off_the_image_empty_or_not_finite_paint_nothing_and_edges_are_clipped():
    image = Image.new("RGB", (100, 50), WHITE)
    for box in ((500, 500, 10, 10), (10, 10, 0, 5), (10, 10, float("nan"), 5), (-50, -50, 10, 10)):
        assert device_box(box, 1.0, image.size) is None, box
        assert colors(paint_boxes(image, [box], 1.0), (0, 0, 100, 50)) == {WHITE}
    assert device_box((90, 40, 50, 50), 1.0, image.size) == (88, 38, 100, 50)
    assert colors(hide_all(image), (0, 0, 100, 50)) == {MASK_COLOR} and hide_all(image).size == image.size
