"""A DeepSpeed config in a plain process: a clear ConfigError naming the launcher, not an MPI traceback."""

from __future__ import annotations

import pytest

from giraffe_core.errors import ConfigError
from giraffe_core.extras import is_available
from training import Trainer, load_config

pytestmark = pytest.mark.skipif(not (is_available("accelerate") and is_available("deepspeed")),
                                reason="the train extra is not installed (pip install 'giraffe[train]')")


def _config(tmp_path, **changes):
    (tmp_path / "data.json").write_text("[]")
    return load_config({"output_dir": str(tmp_path / "out"),
                        "data": {"sources": [{"kind": "llava", "path": str(tmp_path / "data.json")}],
                                 "ratios": {"short_visual": 1.0}, "long_share": None, "concatenate": []},
                        "stages": [{"length_tokens": 256, "steps": 1}], "tensorboard": False, **changes})


def test_deepspeed_without_a_launcher_says_to_use_accelerate_launch(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="needs a launcher") as info:
        Trainer(_config(tmp_path, deepspeed="zero2"))._accelerator()
    assert "accelerate launch" in info.value.hint
    Trainer(_config(tmp_path))._accelerator()  # control: the same config without DeepSpeed builds its accelerator
