"""``giraffe run``, ``giraffe replay``, ``giraffe view`` and ``examples/web_agent.py`` with the tiny model.

References: the run directory read back with :func:`read_run` (what ``view --json`` must print),
the recorded raw outputs and actions (what a replay must repeat), typer's exit codes (2 for usage
errors, and for the CLI's own clear errors) and the error each command reported
(:func:`cli_result.reported_error`). Nothing reads the rich tables, whose text wraps with the
terminal's width.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import typer
from browser_fixtures import requires_browser
from cli_result import reported_error
from pydantic import ValidationError
from typer.testing import CliRunner

from giraffe_agent.backends.openai import BackendError
from giraffe_agent.trajectory import TrajectoryError, context_messages, read_run
from giraffe_cli import app as cli_app
from giraffe_core import GiraffeError
from giraffe_core.engine import tiny_config, tiny_processor
from giraffe_core.frames import layout_chat
from giraffe_core.positions import VisionTokenIds

ROOT = Path(__file__).resolve().parents[1]
STATUSES = {"done", "failed", "episode_over", "max_steps", "timeout", "loop", "parse_errors", "error"}


def invoke(*args: str):
    return CliRunner().invoke(cli_app, list(args))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, str]:
    """``giraffe run --miniwob click-button --seed 1 --max-steps 2`` with the tiny model."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = invoke("run", "--miniwob", "click-button", "--seed", "1", "--max-steps", "2", "--out", str(out))
    return out, result


@requires_browser
def test_run_writes_a_complete_run_and_prints_a_summary(recorded):
    out, result = recorded
    assert result.exit_code == 0, result.output
    run = read_run(out)
    assert run.result.status in STATUSES - {"error"} and run.result.steps <= 2
    assert run.result.info["reward"] in (-1.0, 0.0, 1.0) and run.result.info["task"] == "click-button"
    assert run.result.prompt_tokens > 0 and (out / "report.html").is_file()
    assert run.meta.backend == "local:tiny" and run.meta.model == "tiny"
    assert run.meta.config["env"]["kind"] == "miniwob" and run.meta.config["env"]["seed"] == 1
    assert run.meta.config["safety"]["max_steps"] == 2
    assert run.steps and run.skipped_lines == 0
    processor, tokens = tiny_processor(), VisionTokenIds.from_config(tiny_config())
    for record in run.steps:  # the exact context of every model call is in the run directory
        assert layout_chat(processor, context_messages(record, out), tokens).num_tokens == record.context.token_count
        assert record.tokens.prompt == record.context.token_count  # the local engine read exactly that
        assert record.tokens.prompt + 256 <= 4096  # and the reply fitted the tiny preset's context


@requires_browser
def test_view_prints_the_steps_and_writes_the_report(recorded):
    out, _ = recorded
    (out / "report.html").unlink()
    result = invoke("view", str(out))
    assert result.exit_code == 0, result.output
    run = read_run(out)
    assert (out / "report.html").is_file() and "click-button" in (out / "report.html").read_text()
    (out / "report.html").unlink()
    as_json = invoke("view", str(out), "--json")
    assert as_json.exit_code == 0, as_json.output
    lines = [json.loads(line) for line in as_json.output.splitlines()]
    assert [(x["step"], x["attempt"], x["action"]) for x in lines] == \
        [(r.step, r.attempt, r.action) for r in run.steps]
    assert (out / "report.html").is_file()  # --json rewrites the report too


@requires_browser
def test_replay_repeats_the_recorded_actions_in_a_new_run(recorded, tmp_path):
    out, _ = recorded
    result = invoke("replay", str(out), "--out", str(tmp_path / "again"))
    assert result.exit_code == 0, result.output
    original, again = read_run(out), read_run(tmp_path / "again")
    assert [(r.step, r.attempt, r.raw_output, r.action) for r in again.steps] == \
        [(r.step, r.attempt, r.raw_output, r.action) for r in original.steps]
    assert again.result.status == original.result.status
    assert again.result.info["reward"] == original.result.info["reward"]
    assert again.meta.backend == "replay:local:tiny" and again.meta.config["env"]["seed"] == 1
    # a second replay to the same directory is refused clearly
    refused = invoke("replay", str(out), "--out", str(tmp_path / "again"))
    assert refused.exit_code == 2 and isinstance(reported_error(refused), TrajectoryError)
    assert "already holds a run" in reported_error(refused).message


@pytest.mark.parametrize(("args", "kind", "message"), [
    (["run", "--miniwob", "click-button"], typer.BadParameter, "Missing parameter: out"),
    (["run", "--miniwob", "no-such-task", "--out", "{tmp}/a"], GiraffeError, "unknown MiniWoB++ task 'no-such-task'"),
    (["run", "Buy a shirt.", "--out", "{tmp}/b"], typer.BadParameter, "give a TASK and --start-url"),
    (["run", "--start-url", "http://127.0.0.1:9/", "--out", "{tmp}/c"], typer.BadParameter,
     "give a TASK and --start-url"),
    (["run", "Buy.", "--start-url", "http://127.0.0.1:9/", "--viewport", "wide", "--out", "{tmp}/d"],
     typer.BadParameter, "--viewport must be WIDTHxHEIGHT"),
    (["run", "Buy.", "--start-url", "http://127.0.0.1:9/", "--allow-domain", "http://x/", "--out", "{tmp}/e"],
     ValidationError, "without scheme or path"),
    (["replay", "{tmp}/nothing"], TrajectoryError, "is not a run directory"),
    (["view", "{tmp}/nothing"], TrajectoryError, "is not a run directory"),
])
def test_errors_are_clear_messages_with_exit_code_2(tmp_path, args, kind, message):
    result = invoke(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    error = reported_error(result)
    assert isinstance(error, kind) and message in str(error), repr(error)
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)  # no crash
    assert not any(p.name in ("meta.json", "trajectory.jsonl") for p in tmp_path.rglob("*"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@requires_browser
def test_run_against_an_endpoint_uses_the_first_model_it_serves(tmp_path):
    uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")
    pytest.importorskip("openai", reason="openai is not installed: pip install -e '.[agent]'")
    from giraffe_core.engine import create_app, load

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(load("tiny", seed=3), model_name="giraffe-tiny"),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        result = invoke("run", "--miniwob", "click-test", "--max-steps", "1", "--endpoint", endpoint,
                        "--out", str(tmp_path / "run"))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert result.exit_code == 0, result.output
    run = read_run(tmp_path / "run")
    assert run.meta.backend == "openai:giraffe-tiny" and run.result.status in STATUSES - {"error"}
    # nothing listening: a clear error, before any browser starts
    result = invoke("run", "--miniwob", "click-test", "--endpoint", f"http://127.0.0.1:{free_port()}/v1",
                    "--out", str(tmp_path / "unreachable"))
    error = reported_error(result)
    assert result.exit_code == 2 and isinstance(error, BackendError)
    assert "cannot list the models of" in error.message and "--served-model" in error.hint


@requires_browser
def test_the_hello_world_example_runs_and_writes_a_report(tmp_path):
    example = ROOT / "examples" / "web_agent.py"
    assert len(example.read_text().splitlines()) <= 15
    done = subprocess.run([sys.executable, str(example)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    status, reward, report = done.stdout.strip().splitlines()[-1].split(" ", 2)
    assert status in STATUSES - {"error"} and float(reward) in (-1.0, 0.0, 1.0)
    report = tmp_path / report  # runs/hello-TIME/report.html, relative to where it ran
    assert report.is_file() and report.name == "report.html"
    assert report.resolve().parent.parent == (tmp_path / "runs").resolve()
    assert read_run(report.parent).result.status == status
