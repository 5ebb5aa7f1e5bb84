"""The layer rule: giraffe_core <- giraffe_agent <- training, evals <- demo <- giraffe_cli (imports only point
down)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> packages it must never import
FORBIDDEN = {
    "giraffe_core": {"giraffe_agent", "training", "evals", "demo", "giraffe_cli"},
    "giraffe_agent": {"training", "evals", "demo", "giraffe_cli"},
    "training": {"evals", "demo", "giraffe_cli"},
    "evals": {"demo", "giraffe_cli"},
    "demo": {"giraffe_cli"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules():
    for package in FORBIDDEN:
        for path in sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else []:
            yield package, path


@pytest.mark.parametrize("package,path", list(_modules()), ids=lambda v: str(v).rsplit("/", 2)[-1])
def test_imports_point_only_downward(package, path):
    bad = _imports(path) & FORBIDDEN[package]
    assert not bad, f"{path.relative_to(ROOT)} ({package}) imports {sorted(bad)}, a layer above it"


def test_the_rule_is_checked_on_real_files():
    assert sum(1 for _ in _modules()) >= 10
