"""The MiniWoB++ harness: any backend on tasks x seeds, through the agent SDK, scored by MiniWoB's reward.

Every episode is one :class:`giraffe_agent.loop.Agent` run on a :class:`giraffe_agent.envs.MiniWoBEnv`
(the task page served on loopback, seeded with ``Math.seedrandom(seed)`` as MiniWoB's own driver
does), with the backend the :class:`Backends` makes for it: a local engine
(:func:`engine_backends`), an OpenAI-compatible endpoint (:func:`endpoint_backends`) or the
scripted DOM-reading demonstrators (:func:`demonstrator_backends`). The score is MiniWoB's raw
reward read from the page when the run ends (+1 solved, -1 wrong, 0 unfinished); an episode is a
success when it is above 0. Success rate per task and overall, with Wilson 95 % intervals.

Output directory::

    episodes.jsonl        ledger: a header (budgets, agent settings, backend), then one line per
                          finished episode (an :class:`EpisodeResult`)
    runs/TASK/seed-N/     the episode's run directory (meta, trajectory, frames, report.html)
    runs/TASK/superseded/ earlier attempts of episodes that were run again
    results.json          a :class:`MiniWoBReport`
    success.png           success rate per task and overall

Resumable: a rerun into the same directory skips the episodes the ledger holds (episodes that
ended on an error are run again unless ``retry_errors`` is off); tasks and seeds may be added
between runs, but other settings may not (an :class:`~evals.errors.EvalError`). Robust: an
episode that raises (a browser that does not start, an endpoint that fails, a bug in a script)
is recorded as a failure with its error, and the evaluation goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evals.plots import plot_bars, plot_or_warn
from evals.results import RESULTS_FILE, Ledger, write_text_atomic
from evals.runner import ProgressFn
from evals.scoring import wilson_interval
from giraffe_agent.backends import Backend, LocalBackend, OpenAIBackend, ScriptedBackend
from giraffe_agent.demonstrators import MINIWOB_DEMONSTRATED_TASKS, DemoStyle, UnknownTaskError, miniwob_demonstrator
from giraffe_agent.envs import MINIWOB_VIEWPORT, BrowserConfig, MiniWoBEnv, MiniWoBServer, SharedBrowser
from giraffe_agent.loop import Agent, AgentConfig
from giraffe_agent.safety import SafetyPolicy
from giraffe_agent.trajectory import set_aside
from giraffe_core.engine.engine import Engine

__all__ = [
    "Backends",
    "EPISODES_FILE",
    "EpisodeResult",
    "MiniWoBConfig",
    "MiniWoBReport",
    "SUCCESS_PLOT",
    "TASK_TEXT",
    "TaskResult",
    "demonstrator_backends",
    "endpoint_backends",
    "engine_backends",
    "run_miniwob",
]

logger = logging.getLogger(__name__)

EPISODES_FILE = "episodes.jsonl"
SUCCESS_PLOT = "success.png"
#: the task text of every episode: MiniWoB++ shows its instruction at the top of the task area
TASK_TEXT = "Solve the task shown at the top of the screen."


class MiniWoBConfig(BaseModel):
    """Which episodes to run and their budgets (steps, seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: tuple[str, ...] = Field(MINIWOB_DEMONSTRATED_TASKS, description="MiniWoB++ task names")
    seeds: tuple[int, ...] = Field(tuple(range(5)), description="episode seeds of every task")
    max_steps: int = Field(10, ge=1, description="most actions per episode")
    max_seconds: float = Field(300.0, gt=0, description="most wall-clock seconds per episode")
    episode_seconds: float = Field(600.0, gt=0, description="MiniWoB's own episode time limit")
    max_new_tokens: int = Field(256, ge=1, description="most tokens per model reply")
    write_reports: bool = Field(True, description="write each run's report.html")
    retry_errors: bool = Field(True, description="run episodes that ended on an error again on resume")
    task_text: Literal["screen", "instruction"] = Field(
        "screen", description="the agent's task: 'screen' (read the instruction from the screenshot: "
                              "TASK_TEXT) or 'instruction' (the page's utterance as text, as MiniWoB++ gives it)")
    agent: AgentConfig | None = Field(None, description="loop settings (system prompt, memory); max_new_tokens and "
                                                        "write_report above take precedence")

    @model_validator(mode="after")
    def _check(self) -> MiniWoBConfig:
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct and at least one, got {self.tasks}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
        return self


@dataclass(frozen=True)
class Backends:
    """Makes the backend of every episode.

    Attributes:
        name: the backend's name in results and in the resumable ledger.
        make: ``(task, seed) -> Backend``, called once per episode.
        capture_elements: observations carry the page's DOM (scripted demonstrators only).
        processor, tokens: what the agent renders and counts tokens with (``None``: the local
            engine's, else the tiny preset's).
    """

    name: str
    make: Callable[[str, int], Backend]
    capture_elements: bool = False
    processor: Any = None
    tokens: Any = None


def engine_backends(engine: Engine) -> Backends:
    """A fresh :class:`~giraffe_agent.backends.LocalBackend` (its own KV cache) on ``engine`` per episode."""
    return Backends(name=f"local:{engine.name}", make=lambda task, seed: LocalBackend(engine),
                    processor=engine.processor, tokens=engine.tokens)


def endpoint_backends(base_url: str, model: str, **kwargs: Any) -> Backends:
    """An :class:`~giraffe_agent.backends.OpenAIBackend` per episode (``kwargs`` go to it)."""
    return Backends(name=f"openai:{model}", make=lambda task, seed: OpenAIBackend(base_url, model, **kwargs))


def demonstrator_backends(tasks: Sequence[str] | None = None, *, style: DemoStyle = "json") -> Backends:
    """The scripted DOM-reading demonstrators (:mod:`giraffe_agent.demonstrators`) as backends.

    Raises:
        UnknownTaskError: a task in ``tasks`` has no demonstrator.
    """
    for task in tasks or ():
        if task not in MINIWOB_DEMONSTRATED_TASKS:
            raise UnknownTaskError(f"no MiniWoB++ demonstrator for task {task!r}",
                                   hint=f"demonstrated tasks: {', '.join(MINIWOB_DEMONSTRATED_TASKS)}")
    return Backends(name=f"demonstrator:{style}", capture_elements=True,
                    make=lambda task, seed: ScriptedBackend(miniwob_demonstrator(task, style=style),
                                                            name=f"demo-{style}"))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EpisodeResult(_Model):
    """One episode.

    Attributes:
        id: ``TASK/seed-N``; task, seed: the episode.
        status: how the agent run ended (:data:`giraffe_agent.loop.Status`), ``"error"`` when it raised.
        reward: MiniWoB's raw reward at the end (``None`` when the episode never started).
        success: ``reward > 0``.
        steps: actions taken; prompt_tokens: summed over model calls.
        utterance: the task's instruction as the page gave it.
        run_dir: the run directory, relative to the evaluation's output directory.
        error: what went wrong, when something did.
        seconds: wall time of the episode, seconds.
    """

    id: str
    task: str
    seed: int
    status: str
    reward: float | None = None
    success: bool = False
    steps: int = 0
    prompt_tokens: int = 0
    utterance: str | None = None
    run_dir: str
    error: str | None = None
    seconds: float = 0.0


class TaskResult(_Model):
    """Success over a task's episodes (or all of them, ``task == "overall"``)."""

    task: str
    episodes: int
    successes: int
    success_rate: float | None
    ci95: tuple[float, float] | None
    mean_reward: float | None
    errors: int


class MiniWoBReport(_Model):
    """``results.json`` of the MiniWoB++ harness."""

    eval: str = "miniwob"
    format_version: int = 1
    backend: str
    config: dict[str, Any]
    overall: TaskResult
    tasks: list[TaskResult]
    episodes: list[EpisodeResult]
    started_at: float
    finished_at: float = Field(default_factory=time.time)
    seconds: float = 0.0

    def task(self, name: str) -> TaskResult:
        """The row of task ``name``."""
        return next(t for t in self.tasks if t.task == name)


def _summary(task: str, episodes: Sequence[EpisodeResult]) -> TaskResult:
    successes = sum(e.success for e in episodes)
    rewards = [e.reward for e in episodes if e.reward is not None]
    return TaskResult(task=task, episodes=len(episodes), successes=successes,
                      success_rate=successes / len(episodes) if episodes else None,
                      ci95=wilson_interval(successes, len(episodes)),
                      mean_reward=sum(rewards) / len(rewards) if rewards else None,
                      errors=sum(e.error is not None for e in episodes))


async def _episode(task: str, seed: int, server: MiniWoBServer, backends: Backends, config: MiniWoBConfig,
                   out: Path, shared: SharedBrowser) -> EpisodeResult:
    ident, rel = f"{task}/seed-{seed}", f"runs/{task}/seed-{seed}"
    run_dir = out / rel
    set_aside(run_dir, run_dir.parent / "superseded")  # an earlier attempt: runs/TASK/superseded/seed-N-K
    began = time.perf_counter()
    env: MiniWoBEnv | None = None
    try:
        browser = BrowserConfig(viewport_css=MINIWOB_VIEWPORT, capture_elements=backends.capture_elements)
        env = MiniWoBEnv(task, seed, server, episode_seconds=config.episode_seconds, config=browser,
                         shared=shared)
        loop = (config.agent or AgentConfig()).model_copy(
            update={"max_new_tokens": config.max_new_tokens, "write_report": config.write_reports})
        agent = Agent(TASK_TEXT if config.task_text == "screen" else None, env, backends.make(task, seed),
                      out_dir=run_dir, config=loop,
                      safety=SafetyPolicy(max_steps=config.max_steps, max_seconds=config.max_seconds),
                      processor=backends.processor, tokens=backends.tokens)
        result = await agent.run_async()
    except Exception as exc:  # never let one episode end the evaluation
        logger.warning("%s: %s: %s", ident, type(exc).__name__, exc)
        return EpisodeResult(id=ident, task=task, seed=seed, status="error", run_dir=rel,
                             utterance=getattr(env, "utterance", None), error=f"{type(exc).__name__}: {exc}",
                             seconds=round(time.perf_counter() - began, 3))
    reward = result.info.get("reward")
    return EpisodeResult(id=ident, task=task, seed=seed, status=result.status,
                         reward=None if reward is None else float(reward),
                         success=reward is not None and float(reward) > 0, steps=result.steps,
                         prompt_tokens=result.prompt_tokens, utterance=env.utterance, run_dir=rel, error=result.error,
                         seconds=round(time.perf_counter() - began, 3))


def run_miniwob(backends: Backends, config: MiniWoBConfig | None = None, *, out_dir: str | Path,
                progress: ProgressFn | None = None, server: MiniWoBServer | None = None) -> MiniWoBReport:
    """Run every (task, seed) episode not yet done in ``out_dir``; write and return the report.

    Args:
        backends: makes each episode's backend (:func:`engine_backends`, :func:`endpoint_backends`,
            :func:`demonstrator_backends`).
        config: tasks, seeds and budgets.
        out_dir: the evaluation's directory (created; resumed when it holds a ledger).
        progress: called after every episode with ``(done, total, "TASK/seed-N")``.
        server: serves the task pages (default: a :class:`MiniWoBServer` for this call).

    Raises:
        InputError: an unknown task name (before any episode runs).
        MissingExtraError: the MiniWoB++ pages are not installed.
        EvalError: ``out_dir`` holds episodes run with other settings or another backend.
    """
    config = config or MiniWoBConfig()
    out = Path(out_dir)
    began, started = time.perf_counter(), time.time()
    header = {"eval": "miniwob", "backend": backends.name,
              "config": config.model_dump(mode="json", exclude={"tasks", "seeds", "retry_errors", "write_reports"})}
    own_server = server is None
    server = server or MiniWoBServer()
    try:
        for task in config.tasks:
            server.url(task)  # an unknown task fails here, before any episode
        ledger = Ledger(out / EPISODES_FILE, header)
        episodes: list[EpisodeResult] = []
        total = len(config.tasks) * len(config.seeds)

        async def run_all() -> None:  # one Chromium for every episode, a fresh browser context each
            async with SharedBrowser() as shared:
                for task in config.tasks:
                    for seed in config.seeds:
                        stored = ledger.done.get(f"{task}/seed-{seed}")
                        if stored is not None and (stored.get("error") is None or not config.retry_errors):
                            episode = EpisodeResult.model_validate(stored)
                        else:
                            episode = await _episode(task, seed, server, backends, config, out, shared)
                            ledger.append(episode.model_dump(mode="json"))
                        episodes.append(episode)
                        if progress is not None:
                            progress(len(episodes), total, episode.id)

        asyncio.run(run_all())
    finally:
        if own_server:
            server.close()
    report = MiniWoBReport(backend=backends.name, config=config.model_dump(mode="json"),
                           overall=_summary("overall", episodes),
                           tasks=[_summary(t, [e for e in episodes if e.task == t]) for t in config.tasks],
                           episodes=episodes, started_at=started, seconds=round(time.perf_counter() - began, 3))
    write_text_atomic(out / RESULTS_FILE, report.model_dump_json(indent=2) + "\n")
    bars = [(t.task, t.success_rate, t.ci95) for t in [*report.tasks, report.overall]]
    plot_or_warn(lambda: plot_bars(out / SUCCESS_PLOT, bars, title=f"MiniWoB++: {backends.name}",
                                   ylabel="success rate (%)"))
    logger.info("miniwob: %s, success %d/%d", backends.name, report.overall.successes, report.overall.episodes)
    return report
