"""The local backend: a Giraffe :class:`~giraffe_core.engine.Engine` in this process.

With ``session=True`` (the default) every step goes through one
:class:`~giraffe_core.engine.session.Session`, which keeps the KV cache of the previous step and
prefills only what changed. The backend hands the session the step's
:class:`~giraffe_core.memory.RenderedContext` itself, so the exact layout the memory computed (tokens,
positions, image keys) is the one the model reads and the one the session compares with its cache.
With ``session=False`` each step is a fresh :meth:`Engine.generate` on the rendered messages (the
same layout, recomputed).
"""

from __future__ import annotations

import logging

from giraffe_agent.backends.base import BackendRequest, Completion
from giraffe_core.engine.engine import Engine
from giraffe_core.engine.session import Session

__all__ = ["LocalBackend"]

logger = logging.getLogger(__name__)


class LocalBackend:
    """Runs the step's context on a local engine.

    Args:
        engine: a loaded :class:`~giraffe_core.engine.Engine` (``giraffe_core.load(...)``).
        session: reuse the KV cache across steps (:class:`~giraffe_core.engine.session.Session`).
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature (with ``do_sample``).
        top_p: nucleus sampling mass (with ``do_sample``).
        seed: seed of the sampler, for reproducible sampled runs.

    Attributes:
        name: ``"local:<engine name>"``.
        session: the :class:`Session` in use, or ``None``.
    """

    def __init__(self, engine: Engine, *, session: bool = True, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int | None = None) -> None:
        self.engine = engine
        self.name = f"local:{engine.name}"
        self.session: Session | None = Session(engine) if session else None
        self.do_sample = do_sample
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed

    def reset(self) -> None:
        """Forget the cached context (start of a new episode)."""
        if self.session is not None:
            self.session.reset()

    def complete(self, request: BackendRequest) -> Completion:
        """Generate the reply to ``request.context``, at most ``request.max_new_tokens`` tokens.

        Raises:
            InputError: the context plus ``max_new_tokens`` is over the engine's context length.
        """
        sampling = {"max_new_tokens": request.max_new_tokens, "do_sample": self.do_sample,
                    "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        if self.session is not None:
            generation = self.session.generate(request.context, **sampling)
            stats = generation.stats
            reused = stats.reused_tokens if stats is not None else 0
            logger.debug("step %d attempt %d: %d prompt tokens, %d reused, %d generated", request.step,
                         request.attempt, generation.prompt_tokens, reused, generation.completion_tokens)
            return Completion(generation.text, generation.prompt_tokens, generation.completion_tokens, reused)
        generation = self.engine.generate(request.context.messages, **sampling)
        return Completion(generation.text, generation.prompt_tokens, generation.completion_tokens, 0)
