"""Training configs (:mod:`training.config`, :mod:`training.deepspeed_config`).

References: every YAML and JSON shipped under ``training/configs/`` (they must validate);
DeepSpeed's own ``DeepSpeedConfig`` when DeepSpeed is installed, and the built-in schema always;
hand-written bad configs (each refused with the field named).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import pytest

from giraffe_core.errors import ConfigError, MissingExtraError
from giraffe_core.extras import is_available
from training.config import ETVLM_RATIOS, TrainConfig, load_config
from training.deepspeed_config import (
    SHIPPED_DEEPSPEED,
    deepspeed_config_path,
    resolve_deepspeed_config,
    validate_deepspeed_config,
)

CONFIGS = Path(str(resources.files("training") / "configs"))
MINIMAL = {"output_dir": "out", "data": {"sources": [{"kind": "long_text", "path": "x.jsonl"}],
                                         "ratios": {"long_text": 1.0}},
           "stages": [{"length_tokens": 1024}]}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_validates(path):
    config = load_config(path)
    assert isinstance(config, TrainConfig) and config.stages
    assert config.deepspeed is None or deepspeed_config_path(config.deepspeed).is_file()


def test_shipped_files_are_the_expected_ones():
    names = {p.name for p in CONFIGS.iterdir() if p.suffix in (".yaml", ".json")}
    assert {"tiny_cpu.yaml", "zero2.json", "zero3.json"} <= names and any(n.startswith("etvlm_") for n in names)
    etvlm = load_config(CONFIGS / "etvlm_qwen2vl_7b.yaml")
    assert etvlm.data.ratios == ETVLM_RATIOS and etvlm.data.long_share == 0.6
    assert [s.length_tokens for s in etvlm.stages] == [8192, 32768, 65536, 131072]
    assert etvlm.tune.method == "lora" and not etvlm.tune.train_vision and not etvlm.tune.train_merger


@pytest.mark.parametrize("change,field", [
    ({"bogus": 1}, "bogus"),
    ({"data": {"sources": [{"kind": "llava", "path": "x", "imageroot": "y"}]}}, "imageroot"),
    ({"data": {"sources": [{"kind": "long_text", "path": "x"}], "ratios": {"long_text": 0.5}}}, "ratios"),
    ({"stages": [{"length_tokens": 4096}, {"length_tokens": 1024}]}, "stage lengths must not decrease"),
    ({"stages": [{"length_tokens": 1024, "ratios": {"long_text": 0.7}}]}, "stages.0.ratios"),
    ({"stages": [{"length_tokens": 1024, "ratios": {"text": 1.0}}]}, "stages.0.ratios.text"),
    ({"model": {"rope": "ropey"}}, "model.rope"),
    ({"data": {"sources": [{"kind": "videos", "path": "x"}]}}, "data.sources.0"),
    ({"tune": {"method": "qlora"}}, "tune.method"),
    ({"data": {"sources": [{"kind": "swift", "path": "x", "box_format": "pixels"}]}}, "box_format"),
    ({"data": {"sources": [{"kind": "llamafactory", "path": "x", "image_root": "y"}]}}, "image_root"),
])
def test_bad_configs_name_the_field(change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config({**MINIMAL, **change})


def test_llamafactory_and_swift_sources_need_only_kind_and_path():
    config = load_config({**MINIMAL, "data": {"sources": [{"kind": "llamafactory", "path": "data/mllm_demo.json"},
                                                          {"kind": "swift", "path": "data/agent.jsonl",
                                                           "ignore_fields": ["meta"], "fps": 1}],
                                              "ratios": {"short_visual": 1.0}}})
    factory, swift = config.data.sources
    assert (factory.kind, factory.media_root, factory.fps, factory.ignore_fields) == ("llamafactory", None, 2.0, ())
    assert (swift.kind, swift.box_format, swift.fps, swift.ignore_fields) == ("swift", "auto", 1.0, ("meta",))
    assert factory.label == "mllm_demo.json"


def test_yaml_errors_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_fingerprint_ignores_cadence_not_training():
    base = load_config(MINIMAL)
    moved = load_config({**MINIMAL, "output_dir": "elsewhere", "save_every_steps": 3})
    assert base.fingerprint() == moved.fingerprint()
    assert base.fingerprint() != load_config({**MINIMAL, "optim": {"learning_rate": 0.5}}).fingerprint()


@pytest.mark.parametrize("name", sorted(SHIPPED_DEEPSPEED))
@pytest.mark.parametrize("use_deepspeed", [False, pytest.param(True, marks=pytest.mark.skipif(
    not is_available("deepspeed"), reason="DeepSpeed is not installed (pip install 'giraffe[train]')"))])
def test_shipped_deepspeed_configs_validate(name, use_deepspeed):
    resolved = resolve_deepspeed_config(name, gradient_accumulation_steps=4, max_grad_norm=1.0,
                                        mixed_precision="bf16", world_size=8)
    assert "auto" not in str(resolved)
    assert resolved["gradient_accumulation_steps"] == 4 and resolved["bf16"] == {"enabled": True}
    assert resolved["zero_optimization"]["stage"] == int(name[-1])
    assert validate_deepspeed_config(resolved, use_deepspeed=use_deepspeed) is resolved
    typo = {**resolved, "zero_optimization": {**resolved["zero_optimization"], "overlap_com": True}}
    with pytest.raises(ConfigError, match="overlap_com"):
        validate_deepspeed_config(typo, use_deepspeed=use_deepspeed)
    both = {**resolved, "fp16": {"enabled": True}}
    with pytest.raises(ConfigError, match="both bf16 and fp16"):
        validate_deepspeed_config(both, use_deepspeed=use_deepspeed)


def test_missing_deepspeed_names_the_install(monkeypatch, tmp_path):
    from training.trainer import Trainer

    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as if it were not installed
    config = load_config({**MINIMAL, "output_dir": str(tmp_path), "deepspeed": "zero2"})
    with pytest.raises(MissingExtraError, match=r"pip install 'giraffe\[train\]'"):
        Trainer(config)._accelerator()
    with pytest.raises(ConfigError, match="no DeepSpeed config"):
        deepspeed_config_path("zero9")
