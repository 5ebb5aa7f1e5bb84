"""Each package's public API: a sorted __all__ that exists and re-exports its modules' public names."""

import importlib

import pytest

#: package -> modules whose __all__ it must re-export in full
PACKAGES = {
    "giraffe_core": ["errors", "rope", "positions", "resolution", "frames"],
    "giraffe_core.engine": ["engine", "load", "processor", "server", "session", "tiny"],
    "giraffe_core.memory": ["items", "policy", "timeline"],
    "giraffe_agent": ["actions", "coords", "demonstrators", "loop", "parser", "prompts", "qa", "recording",
                      "replay", "report", "safety", "trajectory", "redaction"],
    "giraffe_agent.backends": ["base", "local", "openai", "scripted"],
    "giraffe_agent.envs": ["base", "browser", "chromium", "chromium_flags", "miniwob", "proxy"],
    "giraffe_cli": [],
    "training": ["checkpoints", "collator", "config", "deepspeed_config", "errors", "loss", "params", "schedule",
                 "trainer"],
    "training.data": ["augment", "chat", "examples", "formats", "grounding", "media", "mixture", "readers", "tools",
                      "trajectories", "video"],
    "demo": ["build", "card", "run"],
    "evals": ["answerers", "errors", "haystack", "miniwob", "needle", "plots", "recording_qa", "results",
              "rope_ablation", "runner", "scenes", "scoring", "websession"],
}


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_all_is_sorted_and_every_name_exists(name):
    package = importlib.import_module(name)
    assert package.__all__ == sorted(package.__all__), f"{name}.__all__ is not sorted"
    missing = [n for n in package.__all__ if not hasattr(package, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_package_reexports_its_modules_public_names(name):
    package = importlib.import_module(name)
    for module_name in PACKAGES[name]:
        module = importlib.import_module(f"{name}.{module_name}")
        absent = sorted(set(module.__all__) - set(package.__all__))
        assert not absent, f"{name} does not re-export {absent} from {module_name}"
        for n in module.__all__:
            assert getattr(package, n) is getattr(module, n)


def test_public_functions_have_docstrings_and_type_hints():
    import inspect

    for name in PACKAGES:
        package = importlib.import_module(name)
        for attr in package.__all__:
            obj = getattr(package, attr)
            if inspect.isfunction(obj):
                assert obj.__doc__, f"{name}.{attr} has no docstring"
                sig = inspect.signature(obj)
                assert sig.return_annotation is not inspect.Signature.empty, f"{name}.{attr} has no return type"
            if inspect.isclass(obj):
                assert obj.__doc__, f"{name}.{attr} has no docstring"
