"""Optional extras: a missing one gives an error naming the pip install; core works without them."""

import json
import subprocess
import sys

import pytest

from giraffe_core.errors import GiraffeError, MissingExtraError
from giraffe_core.extras import EXTRAS, extra_status, is_available, require


def test_require_missing_module_names_the_extra_to_install():
    with pytest.raises(MissingExtraError) as info:
        require("giraffe_no_such_module_xyz", extra="agent", purpose="drive a browser")
    message = str(info.value)
    assert "pip install 'giraffe[agent]'" in message
    assert "giraffe_no_such_module_xyz" in message and "drive a browser" in message
    # the error is catchable as the built-in a caller would expect, and as a GiraffeError
    assert isinstance(info.value, ImportError) and isinstance(info.value, GiraffeError)


def test_require_looks_up_the_extra_of_a_known_module(monkeypatch):
    # make 'mss' unimportable whatever is installed, then require it without naming the extra
    monkeypatch.setitem(sys.modules, "mss", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'giraffe\[agent\]'"):
        require("mss")


def test_require_returns_the_module_when_present():
    assert require("json") is json
    assert is_available("json") and not is_available("giraffe_no_such_module_xyz")


def test_extra_status_lists_every_extra_and_reports_installed_versions():
    status = extra_status()
    assert set(status) == {"agent", "miniwob", "train", "gpu", "evals", "serve", "dev"} == set(EXTRAS)
    assert status["dev"]["pytest"] == pytest.__version__


# A module mapped to None in sys.modules is absent: `import` raises ModuleNotFoundError and
# importlib.util.find_spec returns None, exactly as for a package that was never installed.
BLOCKER = """
import sys
for name in ("playwright", "mss", "openai", "av", "miniwob", "accelerate", "peft", "deepspeed", "datasets",
             "tensorboard", "flash_attn", "matplotlib", "fastapi", "uvicorn"):
    sys.modules[name] = None
"""


@pytest.mark.slow
def test_core_agent_and_cli_import_and_run_without_any_optional_extra(tmp_path):
    script = BLOCKER + """
import giraffe_core, giraffe_agent, giraffe_cli, training, evals
from giraffe_core import load
from giraffe_core.extras import extra_status
from giraffe_agent import find_chromium
engine = load("tiny", context_length=8192)
out = engine.generate([{"role": "user", "content": "hello"}], max_new_tokens=2)
status = extra_status()
assert status["agent"] == {"playwright": None, "mss": None, "openai": None, "av": None}, status
assert status["train"] == {"accelerate": None, "peft": None, "deepspeed": None, "datasets": None,
                          "tensorboard": None}, status
assert status["evals"] == {"matplotlib": None}, status
find_chromium()
print("OK", out.completion_tokens)
"""
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith("OK")
