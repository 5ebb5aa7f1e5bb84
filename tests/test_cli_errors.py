"""Bad input to any ``giraffe`` command: exit code 2, one ``error[CODE]: ...`` line on stderr, no traceback.

One bad value per command family (core, agent, recording, eval, train, demo), then the command
group's backstop itself: an error a command does not catch (a pydantic ValidationError, a bare
ValueError, RuntimeError or OSError) is reported the same way, with a control showing that a plain
typer app lets the same error escape. Assertions read the exit code, the reported exception
(:func:`cli_result.reported_error`) and the first line of stderr (printed unwrapped), never
wrapped text. Nothing here starts a browser or a server.
"""

from __future__ import annotations

import json
import re

import pytest
import typer
from cli_result import reported_error
from pydantic import BaseModel, Field, ValidationError
from typer.testing import CliRunner

from giraffe_cli import app
from giraffe_cli.app import GiraffeGroup, error_text
from giraffe_core.errors import ConfigError, GiraffeError, ModelLoadError

ERROR_LINE = re.compile(r"error\[([\w-]+)\]: (\S.*)")


def invoke(*args: str, target: typer.Typer = app, env: dict[str, str] | None = None):
    return CliRunner().invoke(target, list(args), env={"COLUMNS": "40", **(env or {})})


def first_error_line(result) -> tuple[str, str]:
    """(code, message) of the ``error[CODE]: message`` line, which must be the first line of stderr."""
    match = ERROR_LINE.fullmatch(result.stderr.splitlines()[0])
    assert match is not None, result.stderr
    return match.group(1), match.group(2)


def assert_clean_failure(result, kind: type[BaseException]) -> tuple[str, str]:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert isinstance(reported_error(result), kind), repr(reported_error(result))
    return first_error_line(result)


@pytest.fixture()
def bad_files(tmp_path):
    (tmp_path / "agent.json").write_text(json.dumps({"memory": {"budget_tokens": -3}}))
    (tmp_path / "train.json").write_text(json.dumps({"output_dir": str(tmp_path / "t"),
                                                     "stages": [{"length_tokens": -1, "steps": 0}]}))
    return tmp_path


def test_core_generate_with_a_missing_model(tmp_path):
    code, message = assert_clean_failure(invoke("generate", "--model", str(tmp_path / "nowhere")), ModelLoadError)
    assert code == "model-load-error" and str(tmp_path / "nowhere") in message


def test_agent_run_with_a_zero_viewport(tmp_path):
    result = invoke("run", "Buy.", "--start-url", "http://127.0.0.1:9/", "--viewport", "0x0",
                    "--out", str(tmp_path / "out"))
    code, message = assert_clean_failure(result, ValidationError)
    assert code == "invalid-value" and message.startswith("BrowserConfig.viewport_css.0: ")
    assert not (tmp_path / "out").exists()


def test_agent_run_with_a_bad_agent_config(bad_files):
    result = invoke("run", "Buy.", "--start-url", "http://127.0.0.1:9/", "--agent-config",
                    str(bad_files / "agent.json"), "--out", str(bad_files / "out"))
    code, message = assert_clean_failure(result, ConfigError)
    assert code == "config-error" and "memory.budget_tokens" in message


def test_agent_run_with_a_bad_allowed_domain(tmp_path):
    result = invoke("run", "Buy.", "--start-url", "http://127.0.0.1:9/", "--allow-domain", "http://x/",
                    "--out", str(tmp_path / "out"))
    _, message = assert_clean_failure(result, ValidationError)
    assert message.startswith("SafetyPolicy.allowed_domains: allowed domain 'http://x/': give a host pattern")


def test_agent_view_of_a_broken_run(tmp_path):
    (tmp_path / "meta.json").write_text('{"task": 3}')
    code, _ = assert_clean_failure(invoke("view", str(tmp_path)), GiraffeError)
    assert code == "trajectory-error"


def test_recording_record_with_a_zero_viewport(tmp_path):
    result = invoke("record", "--url", "http://127.0.0.1:9/", "--viewport", "0x0", "--out", str(tmp_path / "rec"),
                    "--duration", "1")
    code, _ = assert_clean_failure(result, ConfigError)
    assert code == "config-error" and not (tmp_path / "rec").exists()


def test_eval_with_an_invalid_config_value(tmp_path):
    result = invoke("eval", "needle", "--frames", "0", "--answerer", "oracle", "--out", str(tmp_path / "ev"))
    code, message = assert_clean_failure(result, ValidationError)
    assert code == "invalid-value" and message.startswith("NeedleConfig: frames must be distinct positive numbers")


def test_train_with_an_invalid_config(bad_files):
    code, _ = assert_clean_failure(invoke("train", str(bad_files / "train.json")), ConfigError)
    assert code == "config-error" and not (bad_files / "t").exists()


def test_demo_with_a_missing_model(tmp_path):
    result = invoke("demo", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "demo"))
    code, _ = assert_clean_failure(result, ConfigError)
    assert code == "config-error"


def test_usage_errors_stay_typer_usage_errors(tmp_path):
    result = invoke("run", "Buy.", "--start-url", "http://127.0.0.1:9/", "--viewport", "wide",
                    "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and isinstance(reported_error(result), typer.BadParameter)
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------------
# the command group's backstop
# --------------------------------------------------------------------------------------------------


class Settings(BaseModel):
    port: int = Field(ge=1, le=65535)
    password: str = Field(min_length=20)


RAISED: dict[str, BaseException] = {
    "pydantic": None,  # type: ignore[dict-item]  # filled by the command: a real ValidationError
    "value": ValueError("the size must be positive,\n  got -1"),
    "runtime": RuntimeError("the worker stopped"),
    "os": PermissionError(13, "Permission denied", "/root/x"),
}


def toy_app(cls: type | None) -> typer.Typer:
    """Two commands that raise what the library might let slip, on a giraffe-like group (or plain typer)."""
    toy = typer.Typer(cls=cls) if cls else typer.Typer()

    @toy.command()
    def fail(kind: str) -> None:
        if kind == "pydantic":
            Settings(port=99999, password="hunter2")
        raise RAISED[kind]

    @toy.command()
    def leave(code: int) -> None:
        raise typer.Exit(code)

    return toy


@pytest.mark.parametrize("kind", ["pydantic", "value", "runtime", "os"])
def test_the_group_reports_what_a_command_lets_slip(kind):
    result = invoke("fail", kind, target=toy_app(GiraffeGroup))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1  # one line, however narrow the terminal
    code, message = first_error_line(result)
    expected = {"pydantic": ("invalid-value", "Settings.port: Input should be less than or equal to 65535 "
                                              "(and 1 more invalid value(s))"),
                "value": ("ValueError", "the size must be positive, got -1"),
                "runtime": ("RuntimeError", "the worker stopped"),
                "os": ("PermissionError", "[Errno 13] Permission denied: '/root/x'")}[kind]
    assert (code, message) == expected
    assert "hunter2" not in result.output  # a rejected value is never echoed (it may be a secret)


def test_control_a_plain_typer_app_lets_the_same_errors_escape():
    for kind in ("pydantic", "value"):
        result = invoke("fail", kind, target=toy_app(None))
        assert result.exit_code == 1 and isinstance(result.exception, ValueError)


def test_the_group_leaves_typer_exits_alone_and_giraffe_debug_shows_the_traceback():
    assert invoke("leave", "3", target=toy_app(GiraffeGroup)).exit_code == 3
    assert invoke("leave", "0", target=toy_app(GiraffeGroup)).exit_code == 0
    debug = invoke("fail", "runtime", target=toy_app(GiraffeGroup), env={"GIRAFFE_DEBUG": "1"})
    assert debug.exit_code == 1 and debug.exception is RAISED["runtime"]


def test_a_giraffe_error_keeps_its_hint_on_a_second_line():
    text = error_text(GiraffeError("no such thing", hint="pass  another\n  thing"))
    assert text == "error[giraffe-error]: no such thing\n  hint: pass another thing"


def test_serve_with_a_port_out_of_range_is_a_usage_error():
    result = invoke("serve", "--port", "99999")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "99999" in result.output or isinstance(reported_error(result), typer.BadParameter)
