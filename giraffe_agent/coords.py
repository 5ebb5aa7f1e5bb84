"""The one coordinate transform: model coordinates -> CSS pixels of the page, per frame.

What the model sees is a screenshot of the viewport (``viewport_css`` CSS pixels, captured at
``device_scale_factor`` device pixels per CSS pixel, so ``screenshot_px = viewport_css * dpr``),
resized to ``image_px`` for the model (hybrid resolution: every frame may have its own size).
A model position is a fraction of that image on each axis:

* ``"norm1000"``: ``fraction = value / 1000``;
* ``"image_px"``: ``fraction = value / image_px`` (per axis).

and the fraction of the image is the same fraction of the viewport (the resize is a scale of the
whole screenshot; the two axes may scale slightly differently, because resized sides are rounded
to multiples of 28 pixels), so ``css = fraction * viewport_css``. Device pixels never enter the
formula: the device scale factor only says how sharp the screenshot is. A transform is stored with
every frame, so an action is always mapped with the geometry of the frame the model looked at.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from giraffe_agent.actions import CoordinateSpace
from giraffe_core.errors import InputError

__all__ = ["CoordinateTransform"]


class CoordinateTransform(BaseModel):
    """Geometry of one frame. Sizes are (width, height).

    Attributes:
        viewport_css: the page viewport, CSS pixels.
        device_scale_factor: device pixels per CSS pixel when the screenshot was taken.
        image_px: the image the model saw, pixels (after resizing).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    viewport_css: tuple[int, int]
    device_scale_factor: float = Field(1.0, gt=0)
    image_px: tuple[int, int]

    @property
    def screenshot_px(self) -> tuple[int, int]:
        """Size of the captured screenshot, device pixels."""
        return (round(self.viewport_css[0] * self.device_scale_factor),
                round(self.viewport_css[1] * self.device_scale_factor))

    def _extent(self, space: CoordinateSpace) -> tuple[float, float]:
        return (1000.0, 1000.0) if space == "norm1000" else (float(self.image_px[0]), float(self.image_px[1]))

    def to_css(self, x: float, y: float, space: CoordinateSpace = "norm1000") -> tuple[float, float]:
        """Model position -> CSS pixels of the viewport, clamped inside it.

        Raises:
            InputError: ``x`` or ``y`` is NaN or infinite (a NaN would pass the clamp unchanged).
        """
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InputError(f"a position must be finite numbers, got ({x}, {y})",
                             hint="actions validate their positions; build them with the action models or the parser")
        ex, ey = self._extent(space)
        width, height = self.viewport_css
        css_x = min(max(x / ex * width, 0.0), width - 1.0)
        css_y = min(max(y / ey * height, 0.0), height - 1.0)
        return css_x, css_y

    def from_css(self, css_x: float, css_y: float, space: CoordinateSpace = "norm1000") -> tuple[float, float]:
        """CSS pixels -> model position (the inverse of :meth:`to_css` inside the viewport)."""
        ex, ey = self._extent(space)
        return css_x / self.viewport_css[0] * ex, css_y / self.viewport_css[1] * ey

    def to_screenshot(self, x: float, y: float, space: CoordinateSpace = "norm1000") -> tuple[float, float]:
        """Model position -> device pixels of the full-resolution screenshot (for overlays)."""
        css_x, css_y = self.to_css(x, y, space)
        return css_x * self.device_scale_factor, css_y * self.device_scale_factor
