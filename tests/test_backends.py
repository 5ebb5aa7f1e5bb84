"""Backends (:mod:`giraffe_agent.backends`): scripted, replay, the local engine and OpenAI-compatible endpoints.

References: ``Engine.generate`` (transformers' own ``generate``) on the same rendered context for the
local and OpenAI backends' text; the memory's exact ``context.token_count`` for the server's
``prompt_tokens`` (which only match if frames arrive at their planned sizes); the recorded
trajectory for replays. The server is ``giraffe serve``'s app in uvicorn on a free 127.0.0.1 port.
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time

import pytest

from giraffe_agent.actions import ACTION_ADAPTER, Click
from giraffe_agent.backends import (
    Backend,
    BackendError,
    BackendRequest,
    Completion,
    LocalBackend,
    OpenAIBackend,
    ReplayBackend,
    ScriptedBackend,
)
from giraffe_agent.backends.openai import to_openai_messages
from giraffe_agent.envs.base import ActResult, Element, Observation
from giraffe_agent.trajectory import ParseInfo, RunMeta, RunWriter, StepRecord, TrajectoryError, read_run
from giraffe_core.engine import create_app, load
from giraffe_core.errors import MissingExtraError
from giraffe_core.frames import load_image
from giraffe_core.memory import MemoryConfig, TimelineMemory
from giraffe_core.samples import screenshot

uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve,dev]'")
pytest.importorskip("openai", reason="openai is not installed: pip install -e '.[agent]'")

NEW = 8  # tokens generated per step
#: full frames at 64 tokens (a 480x300 screenshot is resized to 280x168), low frames at 16
CONFIG = MemoryConfig(budget_tokens=8192, reserve_tokens=64, full_max_tokens=64, low_max_tokens=16,
                      full_frames=2, low_frames=4, text_frames=8, block_frames=1)


@pytest.fixture(scope="module")
def engine():
    return load("tiny", seed=3, context_length=16384)


def observe(step: int) -> Observation:
    """A 320x200 CSS px page at device scale 1.5 (a 480x300 px screenshot) with two buttons."""
    return Observation(
        image=screenshot(480, 300, title=f"Page {step}", seed=step), viewport_css=(320, 200),
        device_scale_factor=1.5, wall_time=100.0 + step, url=f"http://127.0.0.1:9/p{step}", title=f"Page {step}",
        elements=[Element("button", "Cancel", (20, 120, 80, 30)), Element("button", "Submit", (200, 150, 100, 40))])


class Episode:
    """A timeline the way the loop drives it: frame, render, ask the backend, record the reply."""

    def __init__(self, engine, store) -> None:
        self.memory = TimelineMemory.for_engine(engine, CONFIG, store=store)
        self.memory.add_text("system", "You are a web agent. Answer with one JSON action.", wall_time=100.0)
        self.memory.add_text("task", "Press Submit.", wall_time=100.0)
        self.step = -1

    def request(self, attempt: int = 0) -> BackendRequest:
        """Add the next observation (first attempt only) and render the step's request."""
        if attempt == 0:
            self.step += 1
            self.obs = observe(self.step)
            self.memory.add_frame(self.obs.image, step=self.step, url=self.obs.url, title=self.obs.title,
                                  wall_time=self.obs.wall_time)
        context = self.memory.render()
        transform = self.obs.transform(context.layout.plan.frames[-1].size)
        return BackendRequest(context, self.obs, transform, self.step, attempt, max_new_tokens=NEW)

    def reply(self, text: str) -> None:
        self.memory.add_text("model", text, step=self.step, wall_time=self.obs.wall_time)
        self.memory.set_action(text)


def click_submit(request: BackendRequest) -> str:
    """A demonstrator: model-space coordinates of the Submit button, as a model would write them."""
    button = next(e for e in request.observation.elements if e.text == "Submit")
    x, y = request.transform.from_css(*button.center_css)
    return json.dumps({"action": "click", "x": round(x), "y": round(y)})


# --------------------------------------------------------------------------------------------------
# scripted and replay
# --------------------------------------------------------------------------------------------------


def test_scripted_list_returns_outputs_in_order_then_a_clear_error(engine, tmp_path):
    episode = Episode(engine, tmp_path / "frames")
    backend = ScriptedBackend(["first", '{"action": "back"}'])
    assert isinstance(backend, Backend) and backend.name == "scripted" and backend.remaining == 2
    assert backend.complete(episode.request()) == Completion("first")
    assert backend.complete(episode.request(attempt=1)).text == '{"action": "back"}'
    assert backend.remaining == 0
    with pytest.raises(BackendError, match="ran out: all 2 outputs were used before step 1 attempt 0"):
        backend.complete(episode.request())
    with pytest.raises(BackendError, match="not one string"):
        ScriptedBackend("one output")
    with pytest.raises(BackendError, match="not strings"):
        ScriptedBackend(["ok", 3])


def test_scripted_callable_emits_model_coordinates_that_hit_the_element(engine, tmp_path):
    episode = Episode(engine, tmp_path / "frames")
    backend = ScriptedBackend(click_submit, name="demo")
    request = episode.request()
    assert request.transform.image_px == request.context.layout.plan.frames[-1].size == (280, 168)  # not 480x300
    action = ACTION_ADAPTER.validate_json(backend.complete(request).text)
    assert isinstance(action, Click)
    x, y = request.transform.to_css(action.x, action.y, action.space)
    assert (200 <= x <= 300 and 150 <= y <= 190) and abs(x - 250) <= 1 and abs(y - 170) <= 1
    assert ScriptedBackend(lambda r: 42).name == "scripted"
    with pytest.raises(BackendError, match="returned a int"):
        ScriptedBackend(lambda r: 42).complete(request)


def record_run(engine, backend, out, steps: int = 3) -> list[str]:
    """A minimal loop: ask ``backend``, parse JSON actions (one retry after a parse error), record."""
    episode = Episode(engine, out / "frames")
    outputs = []
    with RunWriter.create(out) as run:
        run.write_meta(RunMeta(task="Press Submit.", backend=backend.name))
        for _ in range(steps):
            attempt = 0
            while True:
                request = episode.request(attempt)
                text = backend.complete(request).text
                outputs.append(text)
                try:
                    action = ACTION_ADAPTER.validate_json(text)
                except ValueError as exc:
                    run.append_step(StepRecord.build(out, step=request.step, attempt=attempt, raw_output=text,
                                                     parse=ParseInfo(ok=False, error=str(exc)[:80]),
                                                     context=request.context, frames=episode.memory.frames))
                    episode.memory.add_text("error", "Answer with one JSON action.", step=request.step)
                    attempt += 1
                    continue
                run.append_step(StepRecord.build(out, step=request.step, attempt=attempt, raw_output=text,
                                                 parse=ParseInfo(ok=True, style="json"), context=request.context,
                                                 frames=episode.memory.frames, action=action,
                                                 result=ActResult(True, "clicked"), transform=request.transform))
                episode.reply(text)
                break
    return outputs


def test_replay_backend_replays_a_recorded_run_exactly(engine, tmp_path):
    script = [click_submit, lambda r: "I think I should click", click_submit, click_submit]
    calls = iter(script)

    def demonstrate(request: BackendRequest) -> str:
        return next(calls)(request)

    recorded = record_run(engine, ScriptedBackend(demonstrate), tmp_path / "a")
    original = read_run(tmp_path / "a")
    assert [(r.step, r.attempt) for r in original.steps] == [(0, 0), (1, 0), (1, 1), (2, 0)]
    replay = ReplayBackend(tmp_path / "a")
    assert replay.name == "replay:scripted" and replay.steps == 3
    replayed = record_run(engine, replay, tmp_path / "b")
    assert replayed == recorded
    again = read_run(tmp_path / "b")
    assert [(r.step, r.attempt, r.raw_output, r.action) for r in again.steps] == \
        [(r.step, r.attempt, r.raw_output, r.action) for r in original.steps]
    episode = Episode(engine, tmp_path / "c")
    for _ in range(4):
        request = episode.request()
    with pytest.raises(BackendError, match=r"nothing recorded for step 3 attempt 0.*has 3 steps"):
        replay.complete(request)
    with pytest.raises(BackendError, match=r"step 3 attempt 0"):
        ReplayBackend(tmp_path / "a").complete(request)
    with pytest.raises(TrajectoryError, match="not a run directory"):
        ReplayBackend(tmp_path / "c")


# --------------------------------------------------------------------------------------------------
# the local engine
# --------------------------------------------------------------------------------------------------


def test_local_backend_reuses_the_cache_and_matches_engine_generate(engine, tmp_path):
    episode = Episode(engine, tmp_path / "frames")
    backend = LocalBackend(engine, seed=0)
    plain = LocalBackend(engine, session=False)
    assert isinstance(backend, Backend) and backend.name == "local:tiny"
    for step in range(3):
        request = episode.request()
        completion = backend.complete(request)
        reference = engine.generate(request.context.messages, max_new_tokens=NEW)
        assert completion.text == reference.text
        assert completion.prompt_tokens == request.context.token_count == reference.prompt_tokens
        assert completion.completion_tokens == reference.completion_tokens
        if step == 0:
            assert completion.reused_tokens == 0
        else:
            assert 0 < completion.reused_tokens < completion.prompt_tokens
        without = plain.complete(request)
        assert without.text == reference.text and without.reused_tokens == 0
        episode.reply(completion.text)
    backend.reset()
    assert backend.complete(request).reused_tokens == 0


# --------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoints
# --------------------------------------------------------------------------------------------------


class _Server:
    """uvicorn serving ``app`` in a daemon thread on a free loopback port."""

    def __init__(self, app) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(engine):
    running = _Server(create_app(engine))
    yield running
    running.stop()


def test_openai_backend_against_giraffe_serve_spends_exactly_the_planned_tokens(engine, server, tmp_path):
    episode = Episode(engine, tmp_path / "frames")
    backend = OpenAIBackend(f"{server.url}/v1", "tiny", max_retries=0, timeout_s=120)
    assert isinstance(backend, Backend) and backend.name == "openai:tiny"
    for _ in range(4):
        request = episode.request()
        completion = backend.complete(request)
        reference = engine.generate(request.context.messages, max_new_tokens=NEW)
        assert completion.prompt_tokens == request.context.token_count  # the server counted what we planned
        assert completion.text == reference.text and completion.completion_tokens == reference.completion_tokens
        episode.reply(completion.text)
    # the last context holds frames at both tiers, all resized: sent unresized they would cost more
    plan = request.context.layout.plan
    assert {f.tier for f in plan.frames} == {"full", "low"}
    assert all(f.size != f.source_size for f in plan.frames)
    unresized = [{**m, "content": [{k: v for k, v in p.items() if k != "max_tokens"} for p in m["content"]]}
                 if isinstance(m["content"], list) else m for m in request.context.messages]
    assert engine.count_tokens(unresized) > request.context.token_count
    # what went over the wire: PNGs at exactly the planned sizes; assistant turns as strings
    messages = to_openai_messages(request.context)
    urls = [p["image_url"]["url"] for m in messages if isinstance(m["content"], list) for p in m["content"]
            if p["type"] == "image_url"]
    assert [load_image(base64.b64decode(u.split(",", 1)[1])).size for u in urls] == \
        [f.size for f in plan.frames]
    assert all(u.startswith("data:image/png;base64,") for u in urls)
    assert all(isinstance(m["content"], str) for m in messages if m["role"] in ("assistant", "system"))


def test_openai_backend_http_errors_are_backend_errors_with_the_status(engine, server, tmp_path):
    episode = Episode(engine, tmp_path / "frames")
    backend = OpenAIBackend(f"{server.url}/v1", "no-such-model", max_retries=0)
    with pytest.raises(BackendError, match=r"HTTP 404.*does not exist.*model_not_found") as caught:
        backend.complete(episode.request())
    assert caught.value.status == 404 and caught.value.code == "backend-error"


def test_openai_backend_unreachable_endpoint_is_a_clear_backend_error(engine, tmp_path):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more
    episode = Episode(engine, tmp_path / "frames")
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "tiny", max_retries=1, timeout_s=5)
    started = time.monotonic()
    with pytest.raises(BackendError, match=f"cannot reach the endpoint http://127.0.0.1:{port}/v1 after 1 retries") \
            as caught:
        backend.complete(episode.request())
    assert caught.value.status is None and "is the server running" in str(caught.value)
    assert time.monotonic() - started < 20  # retries are bounded


def test_openai_backend_without_the_openai_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # makes `import openai` fail
    with pytest.raises(MissingExtraError, match=r"giraffe\[agent\]"):
        OpenAIBackend("http://127.0.0.1:9/v1", "tiny")
