"""Backends without a model: a script of outputs, or the outputs recorded in a run.

* :class:`ScriptedBackend` returns raw model text from a list (in order) or from a function of the
  request. A function may read ``request.observation.elements`` (the page's DOM elements, CSS px)
  and ``request.transform`` to compute model-space coordinates, so demonstrators emit the same
  model-style text a model would, and that text goes through the loop's parser and act path.
* :class:`ReplayBackend` returns the raw outputs recorded in a run directory's trajectory, step by
  step and attempt by attempt, so a replay re-executes the recorded actions without a model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from giraffe_agent.backends.base import BackendRequest, Completion
from giraffe_agent.backends.openai import BackendError

__all__ = ["ReplayBackend", "ScriptedBackend"]


class ScriptedBackend:
    """Raw outputs from a script.

    Args:
        script: a sequence of raw outputs, returned one per call in order (running out raises
            :class:`BackendError`), or a callable ``(BackendRequest) -> str`` called for every step
            and attempt.
        name: the backend's name in trajectories.

    Example::

        def click_submit(request):
            button = next(e for e in request.observation.elements if e.text == "Submit")
            x, y = request.transform.from_css(*button.center_css)
            return f'{{"action": "click", "x": {x:.0f}, "y": {y:.0f}}}'

        backend = ScriptedBackend(click_submit)
    """

    def __init__(self, script: Sequence[str] | Callable[[BackendRequest], str], *, name: str = "scripted") -> None:
        self.name = name
        if callable(script):
            self._function: Callable[[BackendRequest], str] | None = script
            self._outputs: list[str] = []
        else:
            if isinstance(script, str):
                raise BackendError("a script is a list of raw outputs or a callable, not one string",
                                   hint="wrap it: ScriptedBackend([text])")
            self._function = None
            self._outputs = list(script)
            bad = [i for i, text in enumerate(self._outputs) if not isinstance(text, str)]
            if bad:
                raise BackendError(f"script entries {bad[:5]} are not strings; a script holds raw model outputs")
        self.calls = 0

    @property
    def remaining(self) -> int | None:
        """Outputs left in a list script (``None`` for a callable)."""
        return None if self._function is not None else len(self._outputs) - self.calls

    def complete(self, request: BackendRequest) -> Completion:
        """The next scripted output (or the callable's output for ``request``).

        Raises:
            BackendError: the list is used up, or the callable returned something other than a string.
        """
        if self._function is not None:
            text = self._function(request)
            if not isinstance(text, str):
                raise BackendError(f"the script function returned a {type(text).__name__} at step {request.step}, "
                                   "not the model's raw text (a str)")
        else:
            if self.calls >= len(self._outputs):
                raise BackendError(f"the script ran out: all {len(self._outputs)} outputs were used before step "
                                   f"{request.step} attempt {request.attempt}",
                                   hint="add outputs to the script or lower the loop's max_steps")
            text = self._outputs[self.calls]
        self.calls += 1
        return Completion(text)


class ReplayBackend:
    """Replays the raw model outputs recorded in a run directory.

    The output for step ``s``, attempt ``a`` is the ``raw_output`` recorded for that step and
    attempt, so the loop parses and executes the same actions again (against a fresh
    environment). Outputs are replayed as recorded, i.e. after redaction: a secret the model
    wrote out literally is replayed as its redaction mark (with the safety module's
    ``Secrets.redact``, the ``{{secret:NAME}}`` placeholder, which typing fills in again).

    Args:
        run_dir: a run directory written by :class:`~giraffe_agent.trajectory.RunWriter`.

    Attributes:
        outputs: ``{(step, attempt): raw output}``; ``meta``: the recorded run's meta.

    Raises:
        TrajectoryError: ``run_dir`` is not a readable run directory.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        from giraffe_agent.trajectory import read_run  # the trajectory module imports this package's base

        run = read_run(run_dir)
        self.run_dir = Path(run_dir)
        self.meta = run.meta
        self.name = f"replay:{run.meta.backend}"
        self.outputs: dict[tuple[int, int], str] = {(r.step, r.attempt): r.raw_output for r in run.steps}
        self.steps = len({step for step, _ in self.outputs})

    def complete(self, request: BackendRequest) -> Completion:
        """The recorded output of ``(request.step, request.attempt)``.

        Raises:
            BackendError: the recording has no output for that step and attempt (the replay has
                diverged from the recording, or runs past its end).
        """
        text = self.outputs.get((request.step, request.attempt))
        if text is None:
            recorded = sorted(a for s, a in self.outputs if s == request.step)
            detail = (f"step {request.step} was recorded with attempts {recorded}" if recorded else
                      f"the recording has {self.steps} steps")
            raise BackendError(f"nothing recorded for step {request.step} attempt {request.attempt} in "
                               f"{self.run_dir}: {detail}",
                               hint="the replay diverged from the recording (a page that changed?) or ran past it")
        return Completion(text)
