"""The `giraffe` command line: info and generate, their JSON output and their errors.

Assertions read exit codes, JSON output and the reported error (:func:`cli_result.reported_error`),
never the rich tables' text, which wraps with the terminal's width.
"""

import json
import stat
import subprocess
import sys

import pytest
import torch
import transformers
from cli_result import reported_error
from PIL import Image
from typer.testing import CliRunner

from giraffe_cli import app
from giraffe_core.errors import InputError, ModelLoadError

runner = CliRunner()


def test_info_json_reports_versions_device_extras_and_browser(tmp_path, monkeypatch):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("GIRAFFE_CHROMIUM", str(fake))
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["torch"] == torch.__version__
    assert info["transformers"] == transformers.__version__
    assert info["device"] == ("cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(0))
    assert set(info["extras"]) == {"agent", "miniwob", "train", "gpu", "evals", "serve", "dev"}
    assert info["browser"] == {"path": str(fake), "source": "env"}


def test_info_table_names_every_section():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    for word in ("torch", "transformers", "device", "agent", "train", "browser"):  # short: never wrapped
        assert word in result.output


@pytest.mark.slow
def test_generate_on_the_embedded_default_reports_a_plan_and_a_completion():
    result = runner.invoke(app, ["generate", "--json", "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    sizes = [tuple(f["source_size"]) for f in report["frames"]]
    assert sizes == [(1280, 800), (640, 400), (360, 720)]
    visual = sum(f["tokens"] for f in report["frames"])
    assert report["prompt_tokens"] > visual + 2 * 3  # visual tokens, wrappers and the text
    assert 1 <= report["completion_tokens"] <= 3
    assert report["rope"]["rope_type"] == "default" and report["context_length"] == 4096


def test_generate_with_images_and_mrope_plus_plus(tmp_path):
    paths = []
    for i, size in enumerate([(300, 200), (120, 260)]):
        path = tmp_path / f"frame{i}.png"
        Image.new("RGB", size, (10 * i, 100, 200)).save(path)
        paths.append(str(path))
    args = ["generate", "What is shown?", "--json", "--max-new-tokens", "2", "--context-length", "32768",
            "--max-image-tokens", "16"]
    for path in paths:
        args += ["--image", path]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["rope"]["rope_type"] == "mrope_plus_plus" and report["rope"]["factor"] == 8.0
    assert report["context_length"] == 32768
    assert [f["source_size"] for f in report["frames"]] == [[300, 200], [120, 260]]
    assert all(f["tokens"] <= 16 for f in report["frames"])


def test_generate_errors_are_one_clear_line_not_a_traceback(tmp_path):
    result = runner.invoke(app, ["generate", "--model", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and isinstance(reported_error(result), ModelLoadError)
    assert result.stderr.startswith("error[model-load-error]: no model directory")  # stderr, never wrapped
    assert "Traceback" not in result.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    result = runner.invoke(app, ["generate", "--image", str(bad)])
    assert result.exit_code == 2 and isinstance(reported_error(result), InputError)
    assert "cannot read image" in reported_error(result).message


def test_console_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "giraffe_cli", "--help"], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "info" in done.stdout and "generate" in done.stdout
