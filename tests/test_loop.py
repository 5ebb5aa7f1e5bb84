"""The agent loop (:mod:`giraffe_agent.loop`) on a fake environment with scripted backends: no browser, no model.

References: the parser itself for the feedback a malformed reply must produce
(``parse_action(...)`` raising :class:`ParseError`), ``giraffe_core.resolution.frame_plan`` for the
size the model sees the current screen at, ``giraffe_core.frames.layout_chat`` for exact token
counts, the fake environment's own log of what reached it, and the bytes of every file of a run
directory for secrets. The crash test SIGKILLs a child process running the loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from giraffe_agent.actions import Action, Click, KeyPress, Type
from giraffe_agent.backends import BackendRequest, ScriptedBackend
from giraffe_agent.coords import CoordinateTransform
from giraffe_agent.envs.base import ActResult, Environment, Observation
from giraffe_agent.loop import Agent, AgentConfig, AgentResult
from giraffe_agent.parser import ParseError, parse_action
from giraffe_agent.report import write_report
from giraffe_agent.safety import SafetyPolicy, Secrets
from giraffe_agent.trajectory import context_messages, read_run
from giraffe_cli import app as cli_app
from giraffe_core.engine import tiny_config, tiny_processor
from giraffe_core.frames import layout_chat
from giraffe_core.memory import MemoryConfig
from giraffe_core.positions import VisionTokenIds
from giraffe_core.resolution import VisionGeometry, frame_plan
from giraffe_core.samples import screenshot

ROOT = Path(__file__).resolve().parents[1]
PROCESSOR = tiny_processor()
TOKENS = VisionTokenIds.from_config(tiny_config())
GEOMETRY = VisionGeometry.from_processor(PROCESSOR)
STATUSES = {"done", "failed", "episode_over", "max_steps", "timeout", "loop", "parse_errors", "error"}

VIEWPORT, DPR = (320, 200), 1.5
SCREEN_PX = (480, 300)  # VIEWPORT * DPR
FULL, LOW = 64, 16
MEMORY = MemoryConfig(budget_tokens=16384, reserve_tokens=256, full_max_tokens=FULL, low_max_tokens=LOW,
                      full_frames=2, low_frames=4, text_frames=8, block_frames=1)
CONFIG = AgentConfig(memory=MEMORY, write_report=False)
#: what the model sees of a full-resolution screen: 480x300 px resized to 280x168 px (60 tokens)
FULL_SIZE = frame_plan(SCREEN_PX, FULL, GEOMETRY).size


def click(x: float = 500, y: float = 500, **extra) -> str:
    return json.dumps({"action": "click", "x": x, "y": y, **extra})


DONE = '{"action": "done", "text": "finished"}'


class FakeEnv:
    """A 320x200 CSS px page at device scale 1.5 (480x300 px screenshots), implementing Environment.

    Every action that reaches it is logged with its transform (``acts``); typing fills secrets
    from ``secrets`` (``typed``). Each action changes the screen unless ``static``. ``events``
    maps an action count to events the observation after it reports (0: the first observation);
    after ``end_after`` actions the episode is over, with ``info``.
    """

    def __init__(self, *, static: bool = False, events: dict[int, list[str]] | None = None,
                 end_after: int | None = None, info: dict | None = None, secrets: Secrets | None = None) -> None:
        self.static = static
        self.events = events or {}
        self.end_after = end_after
        self.info = info or {}
        self.secrets = secrets or Secrets()
        self.acts: list[tuple[Action, CoordinateTransform]] = []
        self.typed: list[str] = []
        self.screen = 0
        self.started = self.closed = 0

    def describe(self) -> dict:
        return {"kind": "fake", "viewport": list(VIEWPORT)}

    def _observe(self) -> Observation:
        over = self.end_after is not None and len(self.acts) >= self.end_after
        return Observation(image=screenshot(*SCREEN_PX, title=f"Screen {self.screen}", seed=self.screen),
                           viewport_css=VIEWPORT, device_scale_factor=DPR, wall_time=time.time(),
                           url=f"http://127.0.0.1:9/screen/{self.screen}", title=f"Screen {self.screen}",
                           events=list(self.events.get(len(self.acts), [])), terminal=over,
                           info=dict(self.info) if over else {})

    async def start(self) -> Observation:
        self.started += 1
        return self._observe()

    async def act(self, action: Action, transform: CoordinateTransform) -> ActResult:
        self.acts.append((action, transform))
        if isinstance(action, Type):
            self.typed.append(self.secrets.fill(action.text))
        if not self.static:
            self.screen += 1
        return ActResult(True, f"did {action.action}")

    async def observe(self) -> Observation:
        await asyncio.sleep(0)
        return self._observe()

    async def close(self) -> None:
        self.closed += 1


class Script:
    """A scripted backend's function: the replies in order (strings or functions of the request),
    keeping every request it saw; ``delay_s`` sleeps before each reply."""

    def __init__(self, replies: list, delay_s: float = 0.0) -> None:
        self.replies = list(replies)
        self.requests: list[BackendRequest] = []
        self.delay_s = delay_s

    def __call__(self, request: BackendRequest) -> str:
        self.requests.append(request)
        if self.delay_s:
            time.sleep(self.delay_s)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]  # the last one repeats
        return reply(request) if callable(reply) else reply


def run_agent(tmp_path: Path, replies: list, env: FakeEnv | None = None, *, name: str = "run",
              delay_s: float = 0.0, config: AgentConfig = CONFIG, **kwargs) -> tuple[AgentResult, FakeEnv, Script]:
    env = env or FakeEnv()
    script = Script(replies, delay_s)
    agent = Agent("Press the button.", env, ScriptedBackend(script), out_dir=tmp_path / name, config=config,
                  processor=PROCESSOR, tokens=TOKENS, **kwargs)
    result = agent.run()
    assert result.status in STATUSES
    assert env.started == 1 and env.closed == 1  # closed whatever happened
    return result, env, script


def texts(request: BackendRequest) -> list[str]:
    """Every text of the request's context, in order (assistant turns are strings)."""
    out = []
    for message in request.context.messages:
        content = message["content"]
        if isinstance(content, str):
            out.append(content)
        else:
            out += [p["text"] for p in content if p.get("type") == "text"]
    return out


def test_the_fake_environment_implements_the_protocol():
    assert isinstance(FakeEnv(), Environment)


# --------------------------------------------------------------------------------------------------
# how runs end
# --------------------------------------------------------------------------------------------------


def test_done_with_an_answer_ends_the_run_and_is_recorded(tmp_path):
    result, env, script = run_agent(tmp_path, [click(), '{"action": "done", "text": "The total is 42"}'],
                                    config=CONFIG.model_copy(update={"write_report": True}))
    assert result.status == "done" and result.answer == "The total is 42" and result.steps == 2
    assert [type(a) for a, _ in env.acts] == [Click] and len(script.requests) == 2
    saved = read_run(result.run_dir)
    assert saved.result.status == "done" and saved.result.answer == "The total is 42" and saved.result.steps == 2
    assert [r.action["action"] for r in saved.steps] == ["click", "done"]
    assert saved.steps[-1].result is None  # done is not executed by the environment
    assert result.trajectory == result.run_dir / "trajectory.jsonl" and result.trajectory.is_file()
    assert result.report == result.run_dir / "report.html" and "The total is 42" in result.report.read_text()
    assert saved.meta.task == "Press the button." and saved.meta.backend == "scripted"
    assert saved.meta.config["env"] == {"kind": "fake", "viewport": [320, 200]}
    assert result.prompt_tokens == sum(r.context.token_count for r in saved.steps) == saved.result.prompt_tokens
    assert result.tokens_per_tier["full"] == sum(r.tokens.tiers["full"] for r in saved.steps) > 0


def test_fail_ends_the_run_as_failed(tmp_path):
    result, env, _ = run_agent(tmp_path, ['{"action": "fail", "reason": "the site is down"}'])
    assert result.status == "failed" and result.answer is None and env.acts == []
    saved = read_run(result.run_dir)
    assert saved.result.status == "failed" and saved.steps[0].action == {"action": "fail", "reason": "the site is down"}


def test_a_terminal_observation_ends_the_episode_with_the_environments_info(tmp_path):
    info = {"reward": 1.0, "reason": "solved"}
    result, env, script = run_agent(tmp_path, [click(100, 100), click(900, 900)], FakeEnv(end_after=2, info=info))
    assert result.status == "episode_over" and result.info == info and len(env.acts) == 2
    assert len(script.requests) == 2 and result.steps == 2
    assert read_run(result.run_dir).result.info == info and read_run(result.run_dir).result.status == "episode_over"
    # an episode over from the start asks the model nothing
    result, env, script = run_agent(tmp_path, [click()], FakeEnv(end_after=0, info=info), name="at-start")
    assert result.status == "episode_over" and result.steps == 0 and script.requests == [] and env.acts == []


# --------------------------------------------------------------------------------------------------
# malformed replies
# --------------------------------------------------------------------------------------------------


def feedback_for(reply: str) -> str:
    with pytest.raises(ParseError) as caught:
        parse_action(reply)
    return caught.value.feedback


def test_a_malformed_reply_is_fed_back_and_the_step_retried(tmp_path):
    bad = ["I will click the blue button", '{"action": "click", "x": 5000, "y": 1}']
    result, env, script = run_agent(tmp_path, [*bad, click(250, 750), DONE])
    assert result.status == "done" and len(script.requests) == 4
    assert [(r.step, r.attempt) for r in script.requests] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    # the retry's context ends with the bad reply as the model's turn, then the parser's feedback
    for attempt, reply in enumerate(bad, start=1):
        messages = script.requests[attempt].context.messages
        assert messages[-2] == {"role": "assistant", "content": reply}
        assert messages[-1]["role"] == "user"
        assert messages[-1]["content"] == [{"type": "text", "text": feedback_for(reply) + "\n"},
                                           {"type": "text", "text": "Current screen: step 0 (the last image).\n"}]
    # the same screen: no new frame was added for the retries
    assert [len(r.context.layout.plan.frames) for r in script.requests[:3]] == [1, 1, 1]
    # one trajectory line per model call, with attempt numbers; only the good one acted
    saved = read_run(result.run_dir).steps
    assert [(r.step, r.attempt, r.parse.ok) for r in saved] == [(0, 0, False), (0, 1, False), (0, 2, True),
                                                               (1, 0, True)]
    assert [r.parse.error for r in saved[:2]] == [feedback_for(b) for b in bad]
    assert [r.raw_output for r in saved] == [*bad, click(250, 750), DONE]
    assert saved[0].action is None and saved[0].result is None and saved[2].result.ok
    assert [(a.x, a.y) for a, _ in env.acts] == [(250, 750)]
    assert result.steps == 2


@pytest.mark.parametrize("retries", [0, 2])
def test_parse_errors_are_bounded(tmp_path, retries):
    config = CONFIG.model_copy(update={"max_parse_retries": retries})
    result, env, script = run_agent(tmp_path, ["no action here"], config=config)
    assert result.status == "parse_errors" and env.acts == []
    assert len(script.requests) == retries + 1
    saved = read_run(result.run_dir)
    assert [(r.step, r.attempt, r.parse.ok) for r in saved.steps] == [(0, a, False) for a in range(retries + 1)]
    assert saved.result.status == "parse_errors"


# --------------------------------------------------------------------------------------------------
# loops and budgets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("repeats", [2, 4])
def test_the_same_action_on_an_unchanged_screen_is_a_loop(tmp_path, repeats):
    config = CONFIG.model_copy(update={"loop_repeats": repeats})
    result, env, script = run_agent(tmp_path, [click(300, 300)], FakeEnv(static=True), config=config)
    assert result.status == "loop" and len(env.acts) == repeats == len(script.requests) == result.steps


def test_the_same_action_on_a_changing_screen_is_not_a_loop(tmp_path):
    result, env, _ = run_agent(tmp_path, [click(300, 300)] * 6 + [DONE])
    assert result.status == "done" and len(env.acts) == 6
    # and different actions on an unchanged screen are not one either
    replies = [click(100 + 10 * i, 300) for i in range(6)] + [DONE]
    result, env, _ = run_agent(tmp_path, replies, FakeEnv(static=True), name="static")
    assert result.status == "done" and len(env.acts) == 6


def test_the_step_budget_stops_the_run(tmp_path):
    replies = [click(100 * i, 500) for i in range(1, 10)]
    result, env, script = run_agent(tmp_path, replies, safety=SafetyPolicy(max_steps=3))
    assert result.status == "max_steps" and len(env.acts) == 3 == len(script.requests) == result.steps
    assert read_run(result.run_dir).result.status == "max_steps"


def test_the_time_budget_stops_a_slow_run(tmp_path):
    replies = [click(100 * i, 500) for i in range(1, 10)]
    began = time.monotonic()
    result, env, script = run_agent(tmp_path, replies, delay_s=0.4, safety=SafetyPolicy(max_seconds=1.0))
    assert result.status == "timeout" and 2 <= len(env.acts) <= 3 and len(script.requests) == len(env.acts)
    assert time.monotonic() - began < 10


# --------------------------------------------------------------------------------------------------
# approval, events, secrets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decision", [True, False, None])
def test_risky_actions_run_only_when_the_hook_approves(tmp_path, decision):
    asked: list[tuple[Action, Observation]] = []

    def hook(action: Action, observation: Observation) -> bool:
        asked.append((action, observation))
        return bool(decision)

    replies = [click(400, 600), '{"action": "key", "keys": "Tab"}', DONE]
    result, env, script = run_agent(tmp_path, replies, safety=SafetyPolicy(risky_actions=frozenset({"click"})),
                                    approve=hook if decision is not None else None)
    assert result.status == "done"
    # the key press is not risky: it runs without asking
    assert [type(a) for a, _ in env.acts] == ([Click, KeyPress] if decision else [KeyPress])
    assert [type(a) for a, _ in asked] == ([Click] if decision is not None else [])
    if asked:
        assert asked[0][1].url == "http://127.0.0.1:9/screen/0"  # the observation the model acted on
    saved = read_run(result.run_dir).steps
    refusal = "click was not approved and did not run"
    if decision:
        assert saved[0].result.ok and refusal not in texts(script.requests[1])
    else:  # refused, recorded, and the model is told
        assert not saved[0].result.ok and saved[0].result.message == refusal
        assert refusal + "\n" in texts(script.requests[1])


def test_environment_events_reach_the_model_before_the_next_frame(tmp_path):
    blocked = "blocked request to http://evil.example/x (not in allowed domains)"
    env = FakeEnv(events={0: ["a alert dialog said 'hi' and was dismissed"], 1: [blocked]})
    result, env, script = run_agent(tmp_path, [click(), DONE], env)
    first, second = (r.context.messages[-1]["content"] for r in script.requests)
    assert first[1]["text"] == "a alert dialog said 'hi' and was dismissed\n" and first[3]["type"] == "image"
    # the next context: ... the model's click, the action's result, the event, then the new frame
    messages = script.requests[1].context.messages
    assert messages[-2] == {"role": "assistant", "content": click()}
    kinds = [p.get("text", p.get("type")) for p in second]
    event_at = kinds.index(blocked + "\n")
    image_at = max(i for i, p in enumerate(second) if p.get("type") == "image")
    assert kinds[0] == "did click\n" and event_at < image_at and second[event_at + 1]["text"].startswith("[step 1")
    saved = read_run(result.run_dir).steps
    assert saved[1].events == [blocked] and saved[0].events == ["a alert dialog said 'hi' and was dismissed"]


def test_secrets_are_typed_by_the_environment_and_never_written(tmp_path):
    value = "hunter2-Sup3r/s3cret"
    secrets = Secrets(PW=value)
    asked = []
    replies = ['{"action": "type", "text": "{{secret:PW}}", "x": 500, "y": 400}',
               f'Thought: I typed {value} into the field.\n{{"action": "done", "text": "logged in as bob:{value}"}}']
    result, env, _ = run_agent(tmp_path, replies, FakeEnv(secrets=secrets), secrets=secrets,
                               approve=lambda a, o: asked.append(a) or True,
                               config=CONFIG.model_copy(update={"write_report": True}))
    assert result.status == "done"
    assert [a.action for a in asked] == ["type"]  # typing a secret needs approval by default
    assert env.acts[0][0].text == "{{secret:PW}}" and env.typed == [value]  # filled in by the env only
    saved = read_run(result.run_dir)
    assert saved.steps[0].action["text"] == "{{secret:PW}}"
    assert saved.result.answer == "logged in as bob:{{secret:PW}}"
    assert "{{secret:PW}}" in saved.steps[1].raw_output
    files = [p for p in result.run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"meta.json", "trajectory.jsonl", "result.json", "report.html"}
    for form in (value, value.replace("/", "%2F")):
        assert not [p for p in files if form.encode() in p.read_bytes()]
    # without the hook, a secret is not typed
    result, env, _ = run_agent(tmp_path, replies, FakeEnv(secrets=secrets), secrets=secrets, name="refused")
    assert env.typed == [] and read_run(result.run_dir).steps[0].result.ok is False


# --------------------------------------------------------------------------------------------------
# zoom-back and coordinates
# --------------------------------------------------------------------------------------------------


def test_zoom_back_shows_an_earlier_frame_without_acting_and_clicks_keep_the_screens_transform(tmp_path):
    centre = FULL_SIZE[0] / 2, FULL_SIZE[1] / 2  # the screen's centre in pixels of the image the model saw
    replies = [click(100, 100), '{"action": "zoom", "step": 0, "box": [0, 0, 500, 500]}',
               click(*centre, space="image_px"), DONE]
    result, env, script = run_agent(tmp_path, replies)
    assert result.status == "done"
    assert [type(a) for a, _ in env.acts] == [Click, Click]  # the zoom never reached the environment
    # the context after the zoom shows the top-left quarter of step 0's screen, captioned
    context = script.requests[2].context
    parts = context.messages[-1]["content"]
    caption_at = next(i for i, p in enumerate(parts) if p.get("text", "").startswith("[zoom of step 0"))
    zoom_part = parts[caption_at + 1]
    assert zoom_part["type"] == "image" and "box (0,0)-(240,150) px" in parts[caption_at]["text"]
    zoom_plan = context.layout.plan.frames[-1]
    assert zoom_plan.source_size == (240, 150) and zoom_plan.size == frame_plan((240, 150), FULL, GEOMETRY).size
    assert "Current screen: step 1 (the last screenshot before the zoom).\n" in texts(script.requests[2])
    # the click after the zoom is mapped with the current screen's transform, not the zoom image's
    _, transform = env.acts[1]
    assert transform.image_px == FULL_SIZE != zoom_plan.size
    assert transform.to_css(*centre, "image_px") == (160.0, 100.0)
    saved = read_run(result.run_dir).steps
    assert saved[1].action["action"] == "zoom" and saved[1].result.ok
    assert saved[1].result.message == "zoomed into the screen of step 0"
    assert saved[2].transform == transform


@pytest.mark.parametrize("static", [False, True])
def test_actions_are_mapped_with_the_current_frames_planned_size(tmp_path, static):
    """An unchanged screen gives older frames the same pixels; they are shown at the low tier (another
    size) before the current one, which must still be the frame whose size maps the click."""
    memory = MEMORY.model_copy(update={"full_frames": 1, "low_frames": 8})
    config = CONFIG.model_copy(update={"memory": memory, "coordinate_space": "image_px"})
    replies = [click(20 + 30 * i, 40 + 20 * i) for i in range(5)] + [DONE]
    result, env, script = run_agent(tmp_path, replies, FakeEnv(static=static), config=config)
    assert result.status == "done" and len(env.acts) == 5
    low_size = frame_plan(SCREEN_PX, LOW, GEOMETRY).size
    assert low_size != FULL_SIZE
    for i, (action, transform) in enumerate(env.acts):
        assert transform == CoordinateTransform(viewport_css=VIEWPORT, device_scale_factor=DPR, image_px=FULL_SIZE)
        plan = script.requests[i].context.layout.plan
        assert plan.frames[-1].size == FULL_SIZE and [f.size for f in plan.frames[:-1]] == [low_size] * i
        assert action.space == "image_px"
        assert transform.to_css(action.x, action.y, "image_px") == pytest.approx(
            (action.x * VIEWPORT[0] / FULL_SIZE[0], action.y * VIEWPORT[1] / FULL_SIZE[1]))


# --------------------------------------------------------------------------------------------------
# errors, crashes, exact contexts
# --------------------------------------------------------------------------------------------------


def test_a_backend_error_ends_the_run_with_status_error(tmp_path):
    env = FakeEnv()
    result = Agent("t", env, ScriptedBackend([click()]), out_dir=tmp_path / "run", config=CONFIG,
                   processor=PROCESSOR, tokens=TOKENS).run()
    assert result.status == "error" and "the script ran out" in result.error and env.closed == 1
    saved = read_run(result.run_dir)
    assert saved.result.status == "error" and "the script ran out" in saved.result.error and len(saved.steps) == 1


def test_an_unexpected_exception_is_recorded_then_raised(tmp_path):
    env = FakeEnv()

    def broken(request: BackendRequest) -> str:
        if request.step == 1:
            raise RuntimeError("bug in the demonstrator")
        return click()

    agent = Agent("t", env, ScriptedBackend(broken), out_dir=tmp_path / "run", config=CONFIG,
                  processor=PROCESSOR, tokens=TOKENS)
    with pytest.raises(RuntimeError, match="bug in the demonstrator"):
        agent.run()
    assert env.closed == 1
    saved = read_run(tmp_path / "run")
    assert saved.result.status == "error" and "RuntimeError: bug in the demonstrator" in saved.result.error
    assert len(saved.steps) == 1


def test_the_stored_context_of_every_call_reproduces_its_tokens(tmp_path):
    replies = ["not an action", click(100, 200), '{"action": "zoom", "step": 0}', click(700, 800),
               click(300, 300), click(600, 100), DONE]
    result, _, script = run_agent(tmp_path, replies)
    saved = read_run(result.run_dir)
    assert len(saved.steps) == len(script.requests) == 7
    tiers = set()
    for record, request in zip(saved.steps, script.requests):
        assert (record.step, record.attempt) == (request.step, request.attempt)
        stored = record.context
        layout = layout_chat(PROCESSOR, context_messages(record, result.run_dir), TOKENS,
                             add_generation_prompt=stored.add_generation_prompt)
        assert layout.num_tokens == stored.token_count == record.tokens.prompt == request.context.token_count
        assert layout.input_ids.tolist() == request.context.layout.input_ids.tolist()
        assert [f.size for f in record.frames] == [f.size for f in layout.plan.frames]
        tiers |= {f.tier for f in record.frames}
    assert tiers == {"full", "low"}


class EngineScript(ScriptedBackend):
    """A scripted backend that says it runs on a local engine (as :class:`LocalBackend` does)."""

    def __init__(self, engine, script) -> None:
        super().__init__(script)
        self.engine = engine


STEPS = 14


def test_a_local_engines_context_length_caps_the_memory_budget(tiny_engine, tmp_path):
    """The tiny preset reads 4096 tokens; the default memory budget is 131072. Every prompt must
    leave room for the reply (``Engine.generate`` refuses ``prompt + max_new_tokens > context``)."""
    assert tiny_engine.context_length == 4096 and AgentConfig().memory.budget_tokens == 131072
    script = Script([click(100 + 10 * i, 500) for i in range(STEPS)] + [DONE])
    env = FakeEnv()
    result = Agent("Press the button.", env, EngineScript(tiny_engine, script), out_dir=tmp_path / "run").run()
    assert result.status == "done" and len(env.acts) == STEPS
    for request in script.requests:
        assert request.context.token_count + request.max_new_tokens <= tiny_engine.context_length
    assert max(r.context.token_count for r in script.requests) > 3000  # the budget was needed...
    assert sum(r.context.record.demoted_by_budget for r in script.requests) > 0  # ...and frames were demoted
    saved = read_run(result.run_dir)
    assert saved.meta.config["loop"]["memory"]["budget_tokens"] == 4096  # the budget the run had
    assert saved.meta.model == "tiny" and saved.meta.backend == "scripted"


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from test_loop import CONFIG, PROCESSOR, TOKENS, FakeEnv
from giraffe_agent import Agent, ScriptedBackend

def reply(request):
    print("asked", request.step, flush=True)
    time.sleep(60 if request.step == {kill_at} else 0.05)
    return '{{"action": "click", "x": %d, "y": 500}}' % (100 + 50 * request.step)

Agent("Press the button.", FakeEnv(), ScriptedBackend(reply), out_dir=sys.argv[1], config=CONFIG,
      processor=PROCESSOR, tokens=TOKENS).run()
"""


@pytest.mark.slow
def test_sigkill_mid_run_leaves_every_completed_step_readable(tmp_path):
    kill_at = 4
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(ROOT / "tests"), kill_at=kill_at))
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    asked = []
    try:
        deadline = time.monotonic() + 120
        while not asked or asked[-1] != kill_at:
            assert time.monotonic() < deadline and child.poll() is None, "the child stopped early"
            line = child.stdout.readline().split()
            if line and line[0] == "asked":
                asked.append(int(line[1]))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL and asked == list(range(kill_at + 1))
    # killed while the model was thinking about step 4: steps 0-3 were complete, all of them are there
    run = read_run(out)
    assert run.result is None and not (out / "result.json").exists()
    assert [(r.step, r.attempt, r.parse.ok) for r in run.steps] == [(s, 0, True) for s in range(kill_at)]
    assert [r.action["x"] for r in run.steps] == [100 + 50 * s for s in range(kill_at)]
    for record in run.steps:
        assert record.result.ok and (out / record.frame_path).is_file()
        layout = layout_chat(PROCESSOR, context_messages(record, out), TOKENS)
        assert layout.num_tokens == record.context.token_count
    report = write_report(out)
    assert report.is_file() and "incomplete: no result.json" in report.read_text()
    shown = CliRunner().invoke(cli_app, ["view", str(out), "--json"])
    assert shown.exit_code == 0, shown.output
    steps = [json.loads(line) for line in shown.output.splitlines() if line.startswith("{")]
    assert [(s["step"], s["ok"]) for s in steps] == [(s, True) for s in range(kill_at)]
