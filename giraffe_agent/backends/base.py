"""What a backend is: something that turns the step's context into the model's raw text.

Backends are synchronous (the agent loop runs them off its event loop). They receive a
:class:`BackendRequest` with the rendered timeline (the exact chat and token layout the model
must see) plus the current observation and its transform, which only scripted backends may use
to read the screen's DOM; model backends must use the rendered context alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from giraffe_agent.coords import CoordinateTransform
from giraffe_agent.envs.base import Observation
from giraffe_core.memory import RenderedContext

__all__ = ["Backend", "BackendRequest", "Completion"]


@dataclass(frozen=True)
class BackendRequest:
    """Everything a backend may look at for one step.

    Attributes:
        context: the rendered timeline (chat messages and exact token layout).
        observation: the newest observation (scripted backends only).
        transform: the coordinate transform of the newest frame as the model sees it.
        step: the agent step, from 0.
        attempt: 0 for the first try of a step, then 1, 2... after parse errors.
        max_new_tokens: the most tokens to generate.
    """

    context: RenderedContext
    observation: Observation
    transform: CoordinateTransform
    step: int
    attempt: int = 0
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Completion:
    """A backend's answer: the raw text, and token counts when the backend knows them."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reused_tokens: int | None = None


@runtime_checkable
class Backend(Protocol):
    """Produces the model's raw output for a step."""

    name: str

    def complete(self, request: BackendRequest) -> Completion:
        """The raw model text for ``request`` (parsing is the loop's job)."""
        ...
