"""``giraffe eval``: JSON results and PNG plots for every evaluation from the command line, the
OpenAI-compatible endpoint path against ``giraffe serve`` (its own token counts are the reference),
the errors users hit, and the package's public API."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import socket
import threading
import time

import pytest
from browser_fixtures import requires_browser
from PIL import Image
from typer.testing import CliRunner

import evals
from evals import EndpointAnswerer, HaystackConfig, haystack_items, run_haystack
from giraffe_cli import app

runner = CliRunner()
SMALL = ["--sizes", "1,2", "--questions", "2", "--image-size", "56x56"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.slow
def test_haystack_with_the_tiny_model_writes_json_and_a_png(tmp_path):
    result = invoke("eval", "haystack", "--model", "tiny", *SMALL, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["eval"] == "haystack" and saved["answerer"] == "tiny" and saved["overall"]["questions"] == 4
    assert [c["cell"] for c in saved["cells"]] == [{"mode": "single", "images": 1}, {"mode": "single", "images": 2}]
    image = Image.open(tmp_path / "accuracy.png")
    assert image.format == "PNG" and image.size[0] >= 400
    assert "results.json" in result.output and "tiny preset" in result.output


def test_without_matplotlib_the_results_are_still_written(tmp_path, monkeypatch, caplog):
    from giraffe_core.errors import MissingExtraError

    def missing(module, **kwargs):
        raise MissingExtraError(f"the optional dependency '{module}' is not installed",
                                hint="run: pip install 'giraffe[evals]'")

    monkeypatch.setattr("evals.plots.require", missing)
    result = invoke("eval", "haystack", "--answerer", "random", *SMALL, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results.json").is_file() and not (tmp_path / "accuracy.png").exists()
    assert "no plot" in result.output and "giraffe[evals]" in result.output
    assert "giraffe[evals]" in caplog.text


def test_needle_with_the_oracle_prints_json(tmp_path):
    result = invoke("eval", "needle", "--answerer", "oracle", "--frames", "2,3", "--depths", "0,1", "--questions", "1",
                    "--image-size", "56x56", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["eval"] == "needle" and report["overall"]["accuracy"] == 1.0 and len(report["cells"]) == 4
    assert Image.open(tmp_path / "accuracy.png").format == "PNG"


@pytest.mark.slow
def test_rope_ablation_prints_the_table(tmp_path):
    result = invoke("eval", "rope-ablation", "--methods", "none,ntk", "--sizes", "1", "--questions", "2",
                    "--image-size", "56x56", "--context-length", "8192", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "direct extrapolation" in result.output and "NTK-aware" in result.output
    assert (tmp_path / "table.md").is_file() and Image.open(tmp_path / "accuracy.png").format == "PNG"
    assert json.loads((tmp_path / "results.json").read_text())["context_length"] == 8192


@requires_browser
def test_miniwob_with_the_demonstrators(tmp_path):
    result = invoke("eval", "miniwob", "--answerer", "oracle", "--tasks", "click-test", "--seeds", "3",
                    "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["overall"]["success_rate"] == 1.0 and (tmp_path / "runs" / "click-test" / "seed-3").is_dir()
    assert Image.open(tmp_path / "success.png").format == "PNG"


@pytest.mark.parametrize(("args", "message"), [
    (["eval", "needle", "--sizes", "1"], "--sizes do(es) not apply"),
    (["eval", "haystack", "--tasks", "click-test"], "--tasks do(es) not apply"),
    (["eval", "rope-ablation", "--endpoint", "http://127.0.0.1:9/v1"], "takes no --endpoint"),
    (["eval", "miniwob", "--answerer", "random"], "does not apply to miniwob"),
    (["eval", "haystack", "--questions", "3"], "even"),
    (["eval", "rope-ablation", "--methods", "none,magic"], "methods must be distinct names"),
    (["eval", "haystack", "--image-size", "big"], "WIDTHxHEIGHT"),
    (["eval", "nonsense"], "Invalid value"),
])
def test_bad_arguments_are_reported_without_a_traceback(args, message, tmp_path):
    result = invoke(*args, "--out", str(tmp_path / "x"))
    assert result.exit_code == 2, result.output
    text = " ".join(re.sub("[\u2500-\u257f]", " ", result.output).split())  # without rich's box drawing
    assert message in text and "Traceback" not in result.output


class _Uvicorn:
    """``giraffe serve``'s app in uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, app) -> None:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.mark.slow
def test_an_endpoint_answers_with_the_planned_tokens_and_refusals_are_overflows(tiny_engine, tmp_path):
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    pytest.importorskip("openai", reason="openai is not installed")
    from giraffe_core.engine import create_app

    served = _Uvicorn(create_app(tiny_engine))
    try:
        answerer = EndpointAnswerer(served.url, max_retries=0, timeout_s=120)
        assert answerer.name == "endpoint:tiny"
        config = HaystackConfig(sizes=(2,), questions_per_cell=2, image_size_px=(300, 200), max_image_tokens=12,
                                max_new_tokens=4)
        report = run_haystack(answerer, config, out_dir=tmp_path / "fits")
        for result, item in zip(report.questions, haystack_items(config)):
            # the server counted exactly what the local engine counts: frames arrived at their planned size
            assert result.prompt_tokens == tiny_engine.count_tokens(item.build().messages)
            assert result.reply is not None and result.error is None
        big = HaystackConfig(sizes=(5,), questions_per_cell=2, image_size_px=(1000, 1000))
        refused = run_haystack(answerer, big, out_dir=tmp_path / "big")
        assert refused.overall.overflow == 2 and refused.overall.accuracy is None
        assert all("over its context" in q.error for q in refused.questions)
        result = invoke("eval", "haystack", "--endpoint", served.url, *SMALL, "--out", str(tmp_path / "cli"))
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "cli" / "results.json").read_text())["answerer"] == "endpoint:tiny"
    finally:
        served.stop()


def test_an_unreachable_endpoint_is_a_clear_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke("eval", "haystack", "--endpoint", f"http://127.0.0.1:{port}/v1", *SMALL, "--out", str(tmp_path))
    assert result.exit_code == 2 and "cannot list the models" in result.output


def test_the_public_api_is_sorted_complete_and_documented():
    assert evals.__all__ == sorted(evals.__all__)
    modules = [m.name for m in pkgutil.iter_modules(evals.__path__)]
    assert {"haystack", "needle", "recording_qa", "miniwob", "rope_ablation", "results", "answerers"} <= set(modules)
    for name in modules:
        module = importlib.import_module(f"evals.{name}")
        assert module.__doc__, name
        assert module.__all__ == sorted(module.__all__), name
        for public in module.__all__:
            assert getattr(evals, public) is getattr(module, public), (name, public)
            obj = getattr(module, public)
            if inspect.isfunction(obj):
                assert obj.__doc__ and inspect.signature(obj).return_annotation is not inspect.Signature.empty, public
            if inspect.isclass(obj):
                assert obj.__doc__, public
