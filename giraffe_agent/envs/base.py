"""What every environment gives the agent and what it takes from it.

An environment is asynchronous (Playwright's async API is the core; synchronous wrappers sit on
top). It starts, returns an :class:`Observation` after every action once the screen has settled,
and executes actions mapped to CSS pixels with the :class:`~giraffe_agent.coords.CoordinateTransform`
of the frame the model looked at. ``zoom``, ``done`` and ``fail`` are handled by the agent loop,
never by an environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from PIL import Image

from giraffe_agent.actions import Action
from giraffe_agent.coords import CoordinateTransform

__all__ = ["ActResult", "Element", "Environment", "Observation"]


@dataclass(frozen=True)
class Element:
    """A visible DOM element, for scripted demonstrators and tests only (never shown to a model).

    Attributes:
        tag: lower-case tag name; ``text``: its visible text (trimmed); ``id``, ``classes``: attributes.
        box: (x, y, width, height) in CSS pixels of the viewport.
        value: current value of inputs, selects and textareas.
        focused: whether it has the keyboard focus (``document.activeElement``).
    """

    tag: str
    text: str
    box: tuple[float, float, float, float]
    id: str = ""
    classes: str = ""
    value: str | None = None
    focused: bool = False

    @property
    def center_css(self) -> tuple[float, float]:
        """Centre of the element, CSS pixels."""
        x, y, w, h = self.box
        return x + w / 2, y + h / 2


@dataclass
class Observation:
    """One look at the environment.

    Attributes:
        image: the screenshot at full resolution (device pixels).
        viewport_css: (width, height) of the viewport, CSS pixels.
        device_scale_factor: device pixels per CSS pixel.
        url, title: the page URL and title (or window title) when known.
        wall_time: when it was taken, seconds since the epoch.
        events: things the model should be told (blocked requests, refused downloads, dialogs).
        elements: visible DOM elements when the environment was asked for them (scripted
            demonstrators and tests only).
        terminal: the environment ended the episode by itself (e.g. a task page that scores
            itself); the agent loop stops.
        info: environment-specific facts about the episode (e.g. a task's reward), recorded in the
            trajectory, never shown to the model.
    """

    image: Image.Image
    viewport_css: tuple[int, int]
    device_scale_factor: float
    wall_time: float
    url: str | None = None
    title: str | None = None
    events: list[str] = field(default_factory=list)
    elements: list[Element] | None = None
    terminal: bool = False
    info: dict = field(default_factory=dict)

    def transform(self, image_px: tuple[int, int]) -> CoordinateTransform:
        """The transform for this frame once resized to ``image_px`` (width, height) pixels."""
        return CoordinateTransform(viewport_css=self.viewport_css, device_scale_factor=self.device_scale_factor,
                                   image_px=image_px)


@dataclass(frozen=True)
class ActResult:
    """What executing an action did: ``ok``, and a short ``message`` for the model and the log."""

    ok: bool
    message: str = ""


@runtime_checkable
class Environment(Protocol):
    """The interface the agent loop drives."""

    async def start(self) -> Observation:
        """Open the environment (e.g. the start URL) and return the first observation."""
        ...

    async def act(self, action: Action, transform: CoordinateTransform) -> ActResult:
        """Execute ``action``, mapping positions with ``transform``; never raises for a failed action."""
        ...

    async def observe(self) -> Observation:
        """Wait until the screen settles and take an observation."""
        ...

    async def close(self) -> None:
        """Release everything (browser, processes); safe to call twice."""
        ...
