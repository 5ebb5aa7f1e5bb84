"""Question answering over recordings: exact token budgets, sampling, citations, the local tiny
engine, an OpenAI-compatible endpoint (a scripted one and ``giraffe serve`` itself), the CLI and
the errors users hit.

The reference for every token count is the processor: ``engine.count_tokens(plan.messages)``
builds the model inputs (placeholder expansion by the image processor's grids) independently of
the planner's arithmetic.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from giraffe_agent.backends.openai import BackendError
from giraffe_agent.qa import (
    Answer,
    ask,
    cite,
    frame_weights,
    parse_timestamps,
    plan_question,
    select_frames,
)
from giraffe_agent.recording import Recorder, RecorderConfig, Recording, RecordingError
from giraffe_core import GroupScheme, load
from giraffe_core.errors import ConfigError, InputError

BURST = (30.0, 33.0)  # seconds: the busy stretch of the recording below
QUESTION = "When did the error dialog appear?"


def _screen(title: str, seed: int, size=(448, 280), busy: bool = False) -> Image.Image:
    """A drawn screen: the same page with a small edit per ``seed``, or (``busy``) a different page."""
    image = Image.new("RGB", size, (235, 238, 242))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, size[0], 28], fill=(30 + 37 * (seed % 6), 70, 150) if busy else (40, 70, 150))
    draw.text((8, 8), title, fill=(255, 255, 255))
    for row in range(6):  # "text lines"; a busy screen redraws them all, a quiet one changes one line
        width = 60 + ((seed if busy or row == seed % 6 else 0) * 53 + row * 97) % 300
        draw.rectangle([20, 50 + 34 * row, 20 + width, 64 + 34 * row], fill=(90, 90, 90))
    return image


@pytest.fixture(scope="module")
def engine():
    return load("tiny", context_length=16384)


@pytest.fixture(scope="module")
def burst_recording(tmp_path_factory) -> Recording:
    """70 s: a new screen every 10 s, and a burst of 13 changes in [30, 33] s; two marks."""
    out = tmp_path_factory.mktemp("qa") / "rec"
    times = [0.0, 10.0, 20.0] + [30.0 + 0.25 * k for k in range(13)] + [40.0, 50.0, 60.0]
    with Recorder(out, RecorderConfig(), start_time=1_700_000_000.0) as recorder:
        for i, t in enumerate(times):
            busy = BURST[0] <= t <= BURST[1]
            recorder.add(_screen("error" if busy else "editor", seed=i + 1, busy=busy), t=t)
            if t == 31.0:
                recorder.mark("error dialog", t=31.1, keep_next=False)
        recorder.mark("saved", t=55.0, keep_next=False)
        recorder.close(t=70.0)
    rec = Recording.open(out)
    assert len(rec) == len(times)
    return rec


# --------------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------------


def _in_burst(rec: Recording, indices) -> int:
    return sum(BURST[0] <= rec.frames[i].t <= BURST[1] for i in indices)


def test_uniform_and_change_weighted_sampling_pick_different_frames(burst_recording):
    rec = burst_recording
    uniform, change = select_frames(rec, 6, "uniform"), select_frames(rec, 6, "change")
    assert len(set(uniform)) == len(set(change)) == 6 and uniform == sorted(uniform)
    assert uniform != change
    assert _in_burst(rec, uniform) <= 2  # even in time: the 3-second burst is ~4 % of the recording
    assert _in_burst(rec, change) >= 4  # weighted by change: most picks land in the burst
    spread = [rec.frames[i].t for i in uniform]
    assert spread[0] <= 10 and spread[-1] >= 50
    for n in range(1, len(rec) + 3):  # always exactly min(n, frames) distinct frames
        assert len(set(select_frames(rec, n, "change"))) == min(n, len(rec))
        assert len(set(select_frames(rec, n, "uniform"))) == min(n, len(rec))
    weights = frame_weights(rec, "uniform")
    assert weights.sum() == pytest.approx(1.0) and weights[-1] == pytest.approx(10 / 70, rel=0.05)


def test_sampling_a_video_uniformly_is_evenly_spaced(tmp_path):
    av = pytest.importorskip("av", reason="PyAV is not installed: pip install -e '.[agent]'")

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(40):
            for packet in stream.encode(av.VideoFrame.from_image(Image.new("RGB", (64, 48), (6 * k, 0, 0)))):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    rec = Recording.open(path, fps=10)
    assert select_frames(rec, 4) == [5, 15, 25, 35]


# --------------------------------------------------------------------------------------------------
# the plan: exact budgets
# --------------------------------------------------------------------------------------------------


def test_the_plan_fills_the_budget_exactly_and_never_exceeds_it(engine, burst_recording, caplog):
    rec = burst_recording
    for budget in (700, 1300, 2000):  # all 19 frames take 2362 tokens
        plan = plan_question(rec, QUESTION, processor=engine.processor, tokens=engine.tokens, budget_tokens=budget)
        assert plan.prompt_tokens == engine.count_tokens(plan.messages) <= budget  # the processor's own count
        n = len(plan.frames)
        assert 1 <= n < len(rec)
        bigger = plan_question(rec, QUESTION, processor=engine.processor, tokens=engine.tokens,
                               budget_tokens=10**6, max_frames=n + 1)
        assert len(bigger.frames) == n + 1 and engine.count_tokens(bigger.messages) > budget  # one more does not fit
    tiers = [f.tier for f in plan.frames]
    assert tiers[:5] == ["high", "low", "low", "low", "high"]  # (L, m, s) = (4, 240, 3)
    assert all(f.tokens <= (240 if f.tier == "high" else 80) for f in plan.frames)
    assert [f.size for f in plan.frames] == [f.size for f in plan.plan.frames]
    images = [p["image"] for p in plan.messages[0]["content"] if p["type"] == "image"]
    assert [im.size for im in images] == [f.size for f in plan.frames]  # resized once, at their planned size
    by_tier = plan.tokens_by_tier()
    assert sum(by_tier.values()) == plan.prompt_tokens and by_tier["text"] > 0
    assert "differs from the layout" not in caplog.text  # the bisection's arithmetic was exact every time


def test_the_prompt_has_timestamp_captions_and_marks_in_time_order(engine, burst_recording):
    plan = plan_question(burst_recording, QUESTION, processor=engine.processor, budget_tokens=10**6)
    assert len(plan.frames) == len(burst_recording)  # everything fits: all frames
    texts = [p["text"] for p in plan.messages[0]["content"] if p["type"] == "text"]
    labels = [f.label for f in plan.frames]
    assert labels[0] == "[t=00:00:00.0]" and "[t=00:00:30.3]" in labels  # 0.25 s apart: tenths tell them apart
    assert "[t=00:00:31.1 mark: error dialog]\n" in texts and "[t=00:00:55.0 mark: saved]\n" in texts
    order = [t for t in texts if t.startswith("[t=")]
    assert order.index("[t=00:00:31.1 mark: error dialog]\n") == order.index("[t=00:00:31.0]") + 1
    assert texts[0].startswith("This is a screen recording, 00:01:10 long.") and texts[-1].endswith(QUESTION)
    coarse = plan_question(burst_recording, QUESTION, processor=engine.processor, budget_tokens=10**6,
                           max_frames=4, include_marks=False)
    assert [f.label for f in coarse.frames] == ["[t=00:00:00]", "[t=00:00:20]", "[t=00:00:40]", "[t=00:01:00]"]


def test_a_custom_scheme_is_honoured(engine, burst_recording):
    scheme = GroupScheme(group_size=2, high_tokens=120, ratio=4)
    plan = plan_question(burst_recording, QUESTION, processor=engine.processor, budget_tokens=10**6, scheme=scheme)
    assert [f.max_tokens for f in plan.frames[:4]] == [120, 30, 120, 30]


# --------------------------------------------------------------------------------------------------
# answering with the tiny engine
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ask_runs_end_to_end_on_the_tiny_engine(engine, burst_recording):
    answer = ask(burst_recording, QUESTION, engine=engine, budget_tokens=2000, max_new_tokens=8)
    plan = plan_question(burst_recording, QUESTION, processor=engine.processor, budget_tokens=2000)
    assert answer.backend == "engine" and answer.model == "tiny"
    assert answer.prompt_tokens == plan.prompt_tokens == engine.count_tokens(plan.messages) <= 2000
    assert [f.index for f in answer.frames] == [f.index for f in plan.frames]
    assert answer.completion_tokens == 8 and answer.finish_reason in ("stop", "length")
    assert answer.visual_tokens == sum(f.tokens for f in answer.frames)
    assert Answer.model_validate_json(answer.model_dump_json()) == answer  # JSON round trip
    assert set(answer.timings) >= {"plan_s", "generate_s", "total_s"}
    capped = ask(burst_recording, QUESTION, engine=engine, max_new_tokens=4, sampling="change", max_frames=6)
    assert capped.budget_tokens == engine.context_length - 4  # default 128K capped at the model's context
    assert capped.sampling == "change" and len(capped.frames) == 6
    assert _in_burst(burst_recording, [f.index for f in capped.frames]) >= 4


# --------------------------------------------------------------------------------------------------
# citations
# --------------------------------------------------------------------------------------------------


def test_parse_timestamps_reads_the_usual_forms():
    text = ("It appeared at [t=00:00:31] (t=0:31.5), again 01:02:03.5 and 12.5s later, after 40 seconds, "
            "not on 2024-01-02, 3:75, v1.2 or 12:34:56:78; 4 sec.")
    found = [(text[s:e], v) for s, e, v in parse_timestamps(text)]
    assert found == [("[t=00:00:31]", 31.0), ("t=0:31.5", 31.5), ("01:02:03.5", 3723.5), ("12.5s", 12.5),
                     ("40 seconds", 40.0), ("4 sec", 4.0)]


def test_citations_map_to_the_nearest_frame_in_the_prompt(engine, burst_recording):
    plan = plan_question(burst_recording, QUESTION, processor=engine.processor, budget_tokens=10**6, max_frames=4)
    citations = cite("At [t=00:00:31] and at 0:58, but never at 01:00:00.", plan.frames,
                     duration=burst_recording.duration)
    assert [(c.text, c.t, c.frame_t, c.label) for c in citations] == [
        ("[t=00:00:31]", 31.0, 40.0, "[t=00:00:40]"), ("0:58", 58.0, 60.0, "[t=00:01:00]")]
    assert [c.frame for c in citations] == [plan.frames[2].index, plan.frames[3].index]


# --------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoints
# --------------------------------------------------------------------------------------------------

CANNED = "The dialog opened at [t=00:00:31] and closed around 0:50; by 65s it was gone."


@pytest.fixture()
def scripted_endpoint():
    """A loopback OpenAI-compatible server that answers CANNED and keeps the requests it got."""
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def _send(self, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send({"object": "list", "data": [{"id": "scripted", "object": "model", "created": 0,
                                                    "owned_by": "test"}]})

        def do_POST(self):
            requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self._send({"id": "x", "object": "chat.completion", "created": 0, "model": "scripted",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": CANNED}}],
                        "usage": {"prompt_tokens": 1234, "completion_tokens": 20, "total_tokens": 1254}})

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", requests
    server.shutdown()


def test_an_endpoint_gets_frames_at_their_planned_size_and_citations_are_mapped(scripted_endpoint,
                                                                                 burst_recording):
    url, requests = scripted_endpoint
    answer = ask(burst_recording, QUESTION, endpoint=url, budget_tokens=3000, max_new_tokens=32)
    assert answer.backend == "endpoint" and answer.model == "scripted" and answer.text == CANNED
    assert answer.server_prompt_tokens == 1234 and answer.completion_tokens == 20 and answer.prompt_tokens <= 3000
    [request] = requests
    assert request["model"] == "scripted" and request["max_tokens"] == 32 and request["temperature"] == 0
    parts = request["messages"][0]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    sizes = [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).size for u in urls]
    assert sizes == [tuple(f.size) for f in answer.frames]  # resized client-side to the plan
    captions = [p["text"] for p in parts if p["type"] == "text" and p["text"].startswith("[t=")]
    assert [c for c in captions if "mark" not in c] == [f.label for f in answer.frames]
    cited = {c.text: c for c in answer.citations}
    assert set(cited) == {"[t=00:00:31]", "0:50", "65s"}
    frame_times = [f.t for f in answer.frames]
    for citation in answer.citations:
        assert citation.frame_t == min(frame_times, key=lambda t: abs(t - citation.t))
    assert [f.index for f in answer.cited_frames] == sorted({c.frame for c in answer.citations})


def test_giraffe_serve_counts_the_same_prompt_tokens(engine, burst_recording):
    uvicorn = pytest.importorskip("uvicorn", reason="pip install -e '.[serve]'")
    pytest.importorskip("fastapi", reason="pip install -e '.[serve]'")
    from giraffe_core.engine import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(engine), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    try:
        answer = ask(burst_recording, QUESTION, endpoint=f"http://127.0.0.1:{sock.getsockname()[1]}/v1",
                     processor=engine.processor, budget_tokens=1500, max_new_tokens=4)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert answer.model == "tiny" and answer.server_prompt_tokens == answer.prompt_tokens <= 1500


# --------------------------------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_ask_prints_the_answer_as_json(burst_recording):
    from giraffe_cli import app

    result = CliRunner().invoke(app, ["ask", str(burst_recording.path), QUESTION, "--budget", "1200",
                                      "--max-new-tokens", "4", "--sampling", "change", "--scheme", "2,160,2",
                                      "--json"])
    assert result.exit_code == 0, result.output
    answer = Answer.model_validate_json(result.output)
    assert answer.prompt_tokens <= 1200 and answer.sampling == "change"
    assert (answer.scheme.group_size, answer.scheme.high_tokens, answer.scheme.ratio) == (2, 160, 2.0)
    table = CliRunner().invoke(app, ["ask", str(burst_recording.path), QUESTION, "--budget", "1200",
                                     "--max-new-tokens", "4"])
    assert table.exit_code == 0 and "prompt tokens" in table.output and "answer" in table.output
    assert "[t=00:00:00" in table.output  # captions are printed, not taken for rich markup


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


def test_bad_input_gives_clear_typed_errors(engine, burst_recording, tmp_path):
    with Recorder(tmp_path / "empty"):
        pass
    with pytest.raises(RecordingError, match="has no frames"):
        ask(tmp_path / "empty", QUESTION, engine=engine)
    with pytest.raises(InputError, match=r"one frame .* needs \d+ prompt tokens; the budget is 50") as info:
        ask(burst_recording, QUESTION, engine=engine, budget_tokens=50)
    assert "raise budget_tokens" in str(info.value)
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00" * 4096)
    with pytest.raises(RecordingError, match="cannot read video"):
        ask(video, QUESTION, engine=engine)
    with pytest.raises(ConfigError, match="exactly one of engine"):
        ask(burst_recording, QUESTION)
    with pytest.raises(InputError, match="question is empty"):
        ask(burst_recording, "  ", engine=engine)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(BackendError, match="cannot reach") as info:
        ask(burst_recording, QUESTION, endpoint=f"http://127.0.0.1:{port}/v1", served_model="m", timeout_s=5)
    assert "giraffe serve" in str(info.value)
    from giraffe_cli import app

    result = CliRunner().invoke(app, ["ask", str(video), QUESTION])
    assert result.exit_code == 2 and "cannot read video" in result.output
