"""The agent loop: task, observe, memory, model, parse, approve, act, record.

Each step adds the newest screenshot to the timeline memory (with what the environment reported,
such as blocked requests), renders the context within its token budget, asks the backend for the
model's text, parses it into an action (a malformed reply is fed back to the model and retried a
bounded number of times), asks the approval hook when the safety policy says the action is risky,
executes it, and appends the step to the run directory (crash-safe). The run ends when the model
answers (``done``) or gives up (``fail``), when the environment ends the episode itself, when the
step or time budget is spent, when the same action repeats on an unchanged screen (a loop), or
when parsing keeps failing. ``zoom`` is handled here: it brings an earlier frame back into the
memory at full resolution instead of touching the environment.

The core is asynchronous (:meth:`Agent.run_async`); :meth:`Agent.run` is the synchronous entry.

Secrets: every text that enters the memory (and so reaches the model: system prompt, task,
events, the model's own replies, parse feedback, action results, frame captions) and every text
the loop logs or returns in :class:`AgentResult` passes through ``Secrets.redact`` first, like
everything :class:`~giraffe_agent.trajectory.RunWriter` writes; a reply is parsed from the raw
text, so an action the model wrote with a value still types it. Screens are masked by the
environment (:class:`~giraffe_agent.envs.browser.BrowserEnv`) before the loop sees them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from giraffe_agent.actions import Action, CoordinateSpace, Done, Fail, ZoomBack, action_to_json
from giraffe_agent.backends.base import Backend, BackendRequest, Completion
from giraffe_agent.coords import CoordinateTransform
from giraffe_agent.envs.base import ActResult, Environment, Observation
from giraffe_agent.parser import ParsedAction, ParseError, parse_action
from giraffe_agent.prompts import system_prompt
from giraffe_agent.report import write_report
from giraffe_agent.safety import SafetyPolicy, Secrets
from giraffe_agent.trajectory import ParseInfo, RunMeta, RunResult, RunWriter, StepRecord, Timings
from giraffe_core.errors import ConfigError, GiraffeError, InputError
from giraffe_core.memory import FrameItem, MemoryConfig, RenderedContext, Role, TimelineMemory
from giraffe_core.resolution import frame_plan

__all__ = [
    "AGENT_CONFIG_FILE",
    "Agent",
    "AgentConfig",
    "AgentResult",
    "ApprovalHook",
    "MAX_AGENT_CONFIG_BYTES",
    "Status",
    "load_agent_config",
]

logger = logging.getLogger(__name__)

#: how a run ended
Status = Literal["done", "failed", "episode_over", "max_steps", "timeout", "loop", "parse_errors", "error"]
#: ``(action, observation) -> bool``: may this risky action run?
ApprovalHook = Callable[[Action, Observation], bool]


class AgentConfig(BaseModel):
    """How the loop runs. Budgets (steps, seconds) come from the :class:`SafetyPolicy`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_parse_retries: int = Field(2, ge=0, description="retries of a step after a malformed reply")
    max_new_tokens: int = Field(256, ge=1, description="most tokens per model reply")
    loop_repeats: int = Field(4, ge=2, description="the same action on an unchanged screen this many times = a loop")
    coordinate_space: CoordinateSpace = "norm1000"
    allow_zoom: bool = True
    system_prompt: str | None = Field(None, description="replaces the built-in system prompt")
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    write_report: bool = True


#: a model directory's own loop settings (system prompt, memory), used when it runs as an agent
AGENT_CONFIG_FILE = "agent_config.json"
#: the largest agent config file read (bytes)
MAX_AGENT_CONFIG_BYTES = 1 << 20


def load_agent_config(path: str | Path) -> AgentConfig | None:
    """The :class:`AgentConfig` in ``path``: a JSON file, or a model directory holding
    :data:`AGENT_CONFIG_FILE` (a model trained with its own system prompt and memory ships one).

    A model directory may come from someone else: its file may set prompts, memory and parsing
    (all :class:`AgentConfig` holds), never a binary, a flag, an allowlist, an endpoint or a path;
    a file that names anything else, is a link leading out of the directory, or is over
    :data:`MAX_AGENT_CONFIG_BYTES` is refused before it is parsed.

    Returns ``None`` for a directory without one (or a hub id, which is not a local path).

    Raises:
        ConfigError: the file is not valid JSON or not a valid :class:`AgentConfig`, is too large,
            or leads out of its model directory.
    """
    path = Path(path)
    if path.is_dir():
        directory, path = path, path / AGENT_CONFIG_FILE
        if path.exists() and not path.resolve().is_relative_to(directory.resolve()):
            raise ConfigError(f"{path} leads out of its model directory; it is not read",
                              hint="a model directory's agent config is a plain file inside it")
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_AGENT_CONFIG_BYTES:
        raise ConfigError(f"{path} is over {MAX_AGENT_CONFIG_BYTES} bytes; it is not read",
                          hint="an agent config holds a few AgentConfig fields as JSON")
    try:
        return AgentConfig.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(the file)"
        raise ConfigError(f"{path} is not a valid agent config: {where}: {first['msg']}",
                          hint="it holds AgentConfig fields as JSON (system_prompt, memory, max_new_tokens, "
                               "...), e.g. {\"system_prompt\": \"...\"}") from exc


@dataclass
class AgentResult:
    """How a run ended.

    Attributes:
        status: see :data:`Status`; ``answer``: the model's answer when it gave one.
        steps: actions taken (model calls that produced an action).
        run_dir: the run directory; ``trajectory``: its ``trajectory.jsonl``; ``report``: its
            ``report.html`` (``None`` when reports are off).
        prompt_tokens, completion_tokens, reused_tokens: sums over model calls.
        tokens_per_tier: prompt tokens per tier, summed over model calls.
        info: the environment's facts at the end (e.g. a task's reward).
        error: what went wrong when ``status`` is ``"error"``.
    """

    status: Status
    answer: str | None
    steps: int
    run_dir: Path
    trajectory: Path
    report: Path | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reused_tokens: int = 0
    tokens_per_tier: dict[str, int] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    error: str | None = None


def _default_processor(backend: Backend) -> tuple[Any, Any]:
    engine = getattr(backend, "engine", None)
    if engine is not None:
        return engine.processor, engine.tokens
    from giraffe_core.engine import tiny_config, tiny_processor
    from giraffe_core.positions import VisionTokenIds

    logger.info("backend %s has no local engine: rendering and counting tokens with the tiny preset's "
                "processor (pass processor= and tokens= of the served model for exact counts)", backend.name)
    return tiny_processor(), VisionTokenIds.from_config(tiny_config())


class Agent:
    """A web (or desktop) agent over an environment and a backend.

    Args:
        task: what to do, in words; ``None``: the environment's own instruction, read after it
            starts (its ``instruction`` attribute, e.g. a MiniWoB++ task's utterance).
        env: the environment (e.g. :class:`~giraffe_agent.envs.browser.BrowserEnv`), not yet started.
        backend: what produces the model's text (local engine, OpenAI-compatible endpoint, script).
        out_dir: the run directory to create (trajectory, frames, report).
        config: loop settings; ``safety``: allowlist, budgets, risky actions; ``secrets``: values
            typed by name and redacted from every file of the run; ``approve``: asked before a risky
            action runs (without a hook, risky actions are refused).
        processor, tokens: the served model's processor and placeholder ids for rendering and
            exact token counts (default: the local backend's engine, else the tiny preset's).
        start_url: recorded in the run's metadata (default: ``env.start_url`` when it has one).
    """

    def __init__(self, task: str | None, env: Environment, backend: Backend, *, out_dir: str | Path,
                 config: AgentConfig | None = None, safety: SafetyPolicy | None = None,
                 secrets: Secrets | None = None, approve: ApprovalHook | None = None,
                 processor: Any = None, tokens: Any = None, start_url: str | None = None) -> None:
        self.task = task
        self.env = env
        self.backend = backend
        self.out_dir = Path(out_dir)
        self.config = config or AgentConfig()
        self.safety = safety or getattr(env, "safety", None) or SafetyPolicy()
        self.secrets = secrets or getattr(env, "secrets", None) or Secrets()
        self.approve = approve
        if processor is None or tokens is None:
            processor, tokens = _default_processor(backend)
        self.processor, self.tokens = processor, tokens
        self.start_url = start_url or getattr(env, "start_url", None)

    def run(self) -> AgentResult:
        """Run the task to its end (synchronous; see :meth:`run_async`)."""
        return asyncio.run(self.run_async())

    async def run_async(self) -> AgentResult:
        """Run the task to its end; the environment is closed afterwards whatever happens.

        A :class:`~giraffe_core.errors.GiraffeError` during the run (the environment, the backend,
        the memory) ends it with status ``"error"``. Any other exception (a bug in a scripted
        backend, an approval hook or an environment) is recorded the same way in ``result.json``,
        then raised again.

        Raises:
            ConfigError: a local engine's context cannot hold ``max_new_tokens`` plus a prompt.
            TrajectoryError: ``out_dir`` already holds a run.
        """
        memory_config = self._memory_config()
        run = RunWriter.create(self.out_dir, redact=self.secrets.redact)
        memory = TimelineMemory(self.processor, self.tokens, memory_config, store=run.frames_dir)
        loop_config = self.config.model_copy(update={"memory": memory_config})
        self._meta = RunMeta(task=self.task or "", start_url=self.start_url, backend=self.backend.name,
                             model=getattr(getattr(self.backend, "engine", None), "name", None),
                             config={"loop": loop_config.model_dump(mode="json"),
                                     "safety": self.safety.model_dump(mode="json"),
                                     "env": self.env.describe() if hasattr(self.env, "describe") else {}})
        run.write_meta(self._meta)
        began = time.monotonic()
        records: list[StepRecord] = []
        status: Status = "error"
        answer: str | None = None
        error: str | None = None
        info: dict = {}
        unexpected: Exception | None = None
        try:
            try:
                status, answer, info = await self._episode(run, memory, records)
            except GiraffeError as exc:
                status, error = "error", self.secrets.redact(str(exc))
                logger.error("run ended on an error: %s", error)
            except Exception as exc:  # a bug in a backend, hook or environment: recorded, then raised
                status, error, unexpected = "error", self.secrets.redact(f"{type(exc).__name__}: {exc}"), exc
                logger.error("run ended on an unexpected %s", error)
            finally:
                await self.env.close()
            result = RunResult.from_steps(records, status=status, answer=answer, error=error,
                                          total_s=time.monotonic() - began, info=info)
            run.write_result(result)
        finally:  # also on KeyboardInterrupt or cancellation (then without result.json, like a crash)
            run.close()
        report = write_report(run.directory) if self.config.write_report else None
        if unexpected is not None:
            raise unexpected
        answer, info = self.secrets.redact(answer), self.secrets.redact(info)
        return AgentResult(status=status, answer=answer, steps=result.steps, run_dir=run.directory,
                           trajectory=run.directory / "trajectory.jsonl", report=report,
                           prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                           reused_tokens=result.reused_tokens, tokens_per_tier=result.tokens_per_tier,
                           info=info, error=error)

    def _memory_config(self) -> MemoryConfig:
        """The memory settings, with the budget capped at a local engine's context length.

        A local engine cannot read more than ``engine.context_length`` tokens, prompt and reply
        together. Its budget is lowered to that length and the reserve raised to ``max_new_tokens``
        when needed, so the memory demotes frames instead of the engine refusing the step.
        """
        config = self.config.memory
        limit = getattr(getattr(self.backend, "engine", None), "context_length", None)
        if not isinstance(limit, int):
            return config
        if config.budget_tokens - config.reserve_tokens + self.config.max_new_tokens <= limit:
            return config
        budget = min(config.budget_tokens, limit)
        reserve = max(config.reserve_tokens, self.config.max_new_tokens - (limit - budget))
        if reserve >= budget:
            raise ConfigError(f"the engine's context of {limit} tokens leaves no room for a prompt after "
                              f"{reserve} tokens reserved for the reply",
                              hint="load the model with a larger context_length or lower max_new_tokens")
        logger.info("memory budget %d tokens (reserve %d) to fit the engine's context of %d tokens",
                    budget, reserve, limit)
        return MemoryConfig(**{**config.model_dump(), "budget_tokens": budget, "reserve_tokens": reserve})

    async def _episode(self, run: RunWriter, memory: TimelineMemory,
                       records: list[StepRecord]) -> tuple[Status, str | None, dict]:
        config = self.config
        budget = self.safety.budget()
        say = self._say
        say(memory, "system", config.system_prompt or system_prompt(coordinate_space=config.coordinate_space,
                                                                     allow_zoom=config.allow_zoom))
        observation = await self.env.start()
        if self.task is None:  # the environment's own instruction (e.g. a MiniWoB++ utterance)
            instruction = getattr(self.env, "instruction", None)
            if not instruction:
                raise InputError(f"{type(self.env).__name__} gives no instruction to use as the task",
                                 hint="pass the task text to Agent(task=...)")
            self.task = str(instruction)
            run.write_meta(self._meta.model_copy(update={"task": self.task}))
        say(memory, "task", self.task, step=0)
        history: list[tuple[str, str]] = []  # (action json, frame digest) of executed actions
        step = 0
        new_frame = True
        while True:
            if observation.terminal:
                return "episode_over", None, observation.info
            exhausted = budget.exhausted()
            if exhausted is not None:
                logger.info("budget spent: %s", exhausted)
                return ("max_steps" if "step" in exhausted else "timeout"), None, observation.info
            if new_frame:
                for event in observation.events:
                    say(memory, "tool", event, step=step)
                redact = self.secrets.redact
                memory.add_frame(observation.image, step=step, url=redact(observation.url),
                                 title=redact(observation.title), source="browser")
            step_began = time.monotonic()
            asked = await self._ask(run, memory, records, observation, step)
            if asked is None:
                return "parse_errors", None, observation.info
            parsed, context, transform, completion, model_s, attempt = asked
            action = parsed.action
            memory.set_action(self.secrets.redact(action_to_json(action)), frame_id=self._current_frame(memory).id)
            record = dict(step=step, context=context, frames=memory.frames, action=action, observation=observation,
                          transform=transform, completion=completion, attempt=attempt)
            if isinstance(action, (Done, Fail)):
                records.append(self._append(run, record, completion.text, Timings(model_s=model_s),
                                            style=parsed.style))
                return ("done", action.text, observation.info) if isinstance(action, Done) else \
                    ("failed", None, observation.info)
            act_began = time.monotonic()
            result, new_frame = await self._execute(action, observation, memory, transform, step)
            act_s = time.monotonic() - act_began
            if result.message:
                say(memory, "tool" if result.ok else "error", result.message, step=step)
            if new_frame:
                observation = await self.env.observe()
            budget.record_step()
            records.append(self._append(run, {**record, "result": result}, completion.text,
                                        Timings(model_s=model_s, act_s=act_s, step_s=time.monotonic() - step_began),
                                        style=parsed.style))
            history.append((action_to_json(action), self._current_frame(memory).digest))
            if len(history) >= config.loop_repeats and len(set(history[-config.loop_repeats:])) == 1:
                logger.info("stopping: %s repeated %d times on an unchanged screen",
                            self.secrets.redact(history[-1][0]), config.loop_repeats)
                return "loop", None, observation.info
            step += 1

    async def _ask(self, run: RunWriter, memory: TimelineMemory, records: list[StepRecord],
                   observation: Observation, step: int) -> tuple[ParsedAction, RenderedContext,
                                                                 CoordinateTransform, Completion, float, int] | None:
        """Model call(s) for one step, retrying after malformed replies; ``None`` when they all fail."""
        for attempt in range(self.config.max_parse_retries + 1):
            context = memory.render()
            transform = observation.transform(self._current_size(context, memory))
            request = BackendRequest(context=context, observation=observation, transform=transform, step=step,
                                     attempt=attempt, max_new_tokens=self.config.max_new_tokens)
            began = time.monotonic()
            completion = await asyncio.to_thread(self.backend.complete, request)
            model_s = time.monotonic() - began
            self._say(memory, "model", completion.text, step=step)
            try:
                parsed = parse_action(completion.text, default_space=self.config.coordinate_space)
            except ParseError as exc:
                self._say(memory, "error", exc.feedback, step=step)
                records.append(self._append(run, dict(step=step, attempt=attempt, context=context,
                                                      frames=memory.frames, observation=observation,
                                                      transform=transform, completion=completion),
                                            completion.text, Timings(model_s=model_s), parse_error=exc.feedback))
                continue
            return parsed, context, transform, completion, model_s, attempt
        return None

    def _say(self, memory: TimelineMemory, role: Role, text: str, *, step: int | None = None) -> None:
        """Add a text turn to the memory (and so to what the model reads), redacted."""
        memory.add_text(role, self.secrets.redact(text), step=step)

    @staticmethod
    def _current_frame(memory: TimelineMemory) -> FrameItem:
        """The current screen: the newest frame that is not a zoom-back."""
        return [f for f in memory.frames if f.zoom_of is None][-1]

    def _current_size(self, context: RenderedContext, memory: TimelineMemory) -> tuple[int, int]:
        """Size of the current screen as the model sees it in ``context``, pixels."""
        # by path, not by pixel digest: an unchanged screen gives every earlier frame the same
        # digest, and those may be shown at a lower tier (another size) before the current one
        path = self._current_frame(memory).path
        plan = context.layout.plan
        for part, frame in zip(context.layout.parts, plan.frames if plan is not None else ()):
            if part.get("image") == path:
                return frame.size
        raise GiraffeError("the rendered context does not show the current screen as an image",
                           hint="keep MemoryConfig.full_frames >= 1 so the newest frame is always shown")

    async def _execute(self, action: Action, observation: Observation, memory: TimelineMemory,
                       transform: CoordinateTransform, step: int) -> tuple[ActResult, bool]:
        """Run one action; returns its result and whether the screen must be observed again."""
        if isinstance(action, ZoomBack):
            return self._zoom(action, memory, step), False
        if self.safety.needs_approval(action, self.secrets):
            allowed = self.approve is not None and await asyncio.to_thread(self.approve, action, observation)
            if not allowed:
                return ActResult(False, f"{action.action} was not approved and did not run"), False
        return await self.env.act(action, transform), True

    @staticmethod
    def _zoom(action: ZoomBack, memory: TimelineMemory, step: int) -> ActResult:
        originals = [f for f in memory.frames if f.step == action.step and f.zoom_of is None]
        if not originals:
            return ActResult(False, f"there is no screen of step {action.step} to zoom into")
        frame = originals[-1]
        box = None
        if action.box is not None:
            if action.space == "norm1000":
                sx, sy = frame.width / 1000, frame.height / 1000
            else:  # pixels of that frame as a full-resolution image of the context
                shown = frame_plan((frame.width, frame.height), memory.full_max_tokens, memory.geometry).size
                sx, sy = frame.width / shown[0], frame.height / shown[1]
            x0, y0, x1, y1 = action.box
            box = (int(x0 * sx), int(y0 * sy), max(int(x1 * sx), int(x0 * sx) + 1),
                   max(int(y1 * sy), int(y0 * sy) + 1))
            box = (min(box[0], frame.width - 1), min(box[1], frame.height - 1),
                   min(box[2], frame.width), min(box[3], frame.height))
        try:
            memory.zoom(frame.id, box, step=step)
        except GiraffeError as exc:
            return ActResult(False, f"cannot zoom: {exc}")
        return ActResult(True, f"zoomed into the screen of step {action.step}")

    @staticmethod
    def _append(run: RunWriter, fields: dict, raw_output: str, timings: Timings, *, style: str | None = None,
                parse_error: str | None = None) -> StepRecord:
        parse = ParseInfo(ok=parse_error is None, style=style, error=parse_error)
        record = StepRecord.build(run.directory, raw_output=raw_output, parse=parse, timings=timings, **fields)
        run.append_step(record)
        return record
