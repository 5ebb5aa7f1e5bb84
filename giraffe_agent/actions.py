"""Typed agent actions: what a model may ask the environment to do.

Every action is a frozen pydantic model with an ``action`` tag; :data:`Action` is their
discriminated union, so ``TypeAdapter(Action).validate_python({"action": "click", "x": 500,
"y": 300})`` gives a :class:`Click`. That JSON is also the canonical form a model is prompted to
emit (see :mod:`giraffe_agent.parser` for every other form we accept).

Positions are in the model's coordinate space, named by ``space``:

* ``"norm1000"``: 0-1000 on each axis of the screenshot the model saw (UI-TARS style, our default);
* ``"image_px"``: pixels of the resized image the model saw (Qwen2.5-VL style).

:class:`~giraffe_agent.coords.CoordinateTransform`, stored with every frame, turns them into CSS
pixels of the page. Units: positions in ``space`` units, ``Wait.seconds`` in seconds,
``Scroll.amount`` in wheel notches (100 CSS pixels each).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter

__all__ = [
    "ACTION_ADAPTER",
    "Action",
    "Back",
    "Click",
    "CoordinateSpace",
    "Done",
    "DoubleClick",
    "Drag",
    "Fail",
    "Goto",
    "KeyPress",
    "RightClick",
    "Scroll",
    "SelectOption",
    "TERMINAL_ACTIONS",
    "Type",
    "Wait",
    "ZoomBack",
    "action_to_json",
]

CoordinateSpace = Literal["norm1000", "image_px"]

def _compact(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


_Coord = Annotated[float, Field(ge=0, allow_inf_nan=False, description="position in `space` units"),
                   PlainSerializer(_compact, when_used="json")]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Positioned(_Base):
    x: _Coord
    y: _Coord
    space: CoordinateSpace = "norm1000"


class Click(_Positioned):
    """Left-click at (x, y)."""

    action: Literal["click"] = "click"


class DoubleClick(_Positioned):
    """Double-click at (x, y)."""

    action: Literal["double_click"] = "double_click"


class RightClick(_Positioned):
    """Right-click at (x, y)."""

    action: Literal["right_click"] = "right_click"


class Type(_Base):
    """Type ``text``; first click at (x, y) when given; press Enter after when ``submit``.

    ``text`` may name secrets as ``{{secret:NAME}}``; they are filled in only when typing and
    redacted everywhere else.
    """

    action: Literal["type"] = "type"
    text: str
    x: _Coord | None = None
    y: _Coord | None = None
    space: CoordinateSpace = "norm1000"
    submit: bool = False


class KeyPress(_Base):
    """Press a key or combination in Playwright's notation, e.g. ``"Enter"``, ``"Control+A"``."""

    action: Literal["key"] = "key"
    keys: str = Field(min_length=1, max_length=64)


class Scroll(_Base):
    """Scroll ``amount`` wheel notches (100 CSS px each) in ``direction``, at (x, y) when given."""

    action: Literal["scroll"] = "scroll"
    direction: Literal["up", "down", "left", "right"] = "down"
    amount: int = Field(3, ge=1, le=50)
    x: _Coord | None = None
    y: _Coord | None = None
    space: CoordinateSpace = "norm1000"


class Drag(_Positioned):
    """Press at (x, y), move to (to_x, to_y), release."""

    action: Literal["drag"] = "drag"
    to_x: _Coord
    to_y: _Coord


class Goto(_Base):
    """Open ``url`` (the safety policy decides whether it may)."""

    action: Literal["goto"] = "goto"
    url: str = Field(min_length=1, max_length=4096)


class Back(_Base):
    """Go back one page in the history."""

    action: Literal["back"] = "back"


class Wait(_Base):
    """Do nothing for ``seconds`` (0-60), then look again."""

    action: Literal["wait"] = "wait"
    seconds: float = Field(1.0, ge=0, le=60, allow_inf_nan=False)


class SelectOption(_Positioned):
    """Choose the option labelled (or valued) ``value`` in the <select> at (x, y)."""

    action: Literal["select"] = "select"
    value: str


class ZoomBack(_Base):
    """Bring the frame of an earlier ``step`` back at full resolution, optionally cropped to
    ``box`` = (x0, y0, x1, y1) in that frame's model coordinates."""

    action: Literal["zoom"] = "zoom"
    step: int = Field(ge=0)
    box: tuple[_Coord, _Coord, _Coord, _Coord] | None = None
    space: CoordinateSpace = "norm1000"


class Done(_Base):
    """The task is complete; ``text`` is the answer when the task asks a question."""

    action: Literal["done"] = "done"
    text: str | None = None


class Fail(_Base):
    """The task cannot be done; ``reason`` says why."""

    action: Literal["fail"] = "fail"
    reason: str = ""


Action = Annotated[
    Click | DoubleClick | RightClick | Type | KeyPress | Scroll | Drag | Goto | Back | Wait | SelectOption
    | ZoomBack | Done | Fail,
    Field(discriminator="action"),
]
#: validates any action from a dict or JSON (``ACTION_ADAPTER.validate_json('{"action": "back"}')``)
ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)
#: actions that end an episode
TERMINAL_ACTIONS = (Done, Fail)


def action_to_json(action: _Base) -> str:
    """The canonical JSON of an action, tag first and defaults omitted, as models are prompted to emit it."""
    data = action.model_dump(mode="json", exclude_defaults=True)
    return json.dumps({"action": action.action, **{k: v for k, v in data.items() if k != "action"}})  # type: ignore[attr-defined]
