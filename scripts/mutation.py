"""Mutation run over the modules where a silent bug does the most harm (not part of CI).

For each module, every mutant of ``scripts/mutation_ops.py`` (one small change to its code; at most
``--max-mutants``, a seeded sample when there are more) is run against that module's tests, and a
mutant counts as caught when a test fails (or the run times out). The score is caught / run, per module.

How it stays cheap and safe on a shared machine:

* The repository is copied to ``--work`` (default ``/tmp/giraffe-mutation/tree``, without ``.git``) and
  everything runs there, with the copy first on ``sys.path`` (checked: the run stops if a module under
  test would be imported from anywhere else). Mutants are compiled in memory and served to the import
  system of a forked child; no file is ever rewritten, in the copy or in the original.
* The parent imports the heavy dependencies (torch, transformers, pydantic) once; each mutant runs in a
  ``fork()``-ed child that drops the ``giraffe_*`` modules, imports the mutant and runs pytest.
* A line map (``sys.settrace``, once per module) records which lines each test executes; a mutant runs
  only the tests that execute its lines (all of them for lines run at import time: module and class
  bodies, ``def`` headers), fastest first, stopping at the first failure. A mutant on a line no test
  executes is a survivor without a run.
* Tests that start a browser, servers or a subprocess are left out (fixtures in ``_EXCLUDED_FIXTURES``,
  and the fresh-process tests of ``test_rope.py``): a mutant is not visible in another process, and they
  take seconds each.
* One child at a time, ``os.nice(10)``, one torch thread, a timeout per mutant (3x the selected tests'
  baseline time + 10 s; the child's whole process group is killed).

Usage, from the repository root (takes about 20-40 minutes for all five modules on one core)::

    nice -n 10 python scripts/mutation.py                      # all five modules
    nice -n 10 python scripts/mutation.py parser safety        # some of them
    python scripts/mutation.py --list-survivors parser         # also print each surviving mutant

The result is printed as a table and written as JSON (``--report``, default
``/tmp/giraffe-mutation/report.json``) with every survivor's line and change.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.abc
import importlib.util
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_ops import Mutant, apply, import_time_lines, mutants

#: module key -> (file, its test files); test files that do not exist are skipped
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "coords": ("giraffe_agent/coords.py", ("tests/test_coords.py", "tests/test_coords_edges.py")),
    "positions": ("giraffe_core/positions.py", ("tests/test_positions.py", "tests/test_positions_edges.py")),
    "rope": ("giraffe_core/rope.py", ("tests/test_rope.py", "tests/test_rope_edges.py")),
    "parser": ("giraffe_agent/parser.py", ("tests/test_parser.py", "tests/test_parser_edges.py",
                                         "tests/test_parser_forms_edges.py")),
    "safety": ("giraffe_agent/safety.py", ("tests/test_safety.py", "tests/test_safety_edges.py")),
}
#: tests using these fixtures start a browser, servers or a subprocess: not run against mutants
_EXCLUDED_FIXTURES = frozenset({"env_obs", "server", "servers", "strict", "permissive", "saved_extended"})
_PACKAGES = ("giraffe_core", "giraffe_agent", "giraffe_cli", "training", "evals", "demo")
#: plain asserts (no rewriting of ~100 modules per child), no plugins that cost seconds per session
_PYTEST_ARGS = ("-q", "--assert=plain", "-o", "addopts=", "-p", "no:cacheprovider", "-p", "no:timeout",
                "-p", "no:random_order", "-p", "no:hypothesispytest", "-p", "no:unraisableexception")


# ---------------------------------------------------------------------------------------------- children


class _Selector:
    """pytest plugin: keep the tests in ``wanted`` (all but excluded ones when None), in the given order."""

    def __init__(self, wanted: list[str] | None) -> None:
        self.wanted = wanted

    def pytest_collection_modifyitems(self, session, config, items) -> None:
        allowed = [item for item in items if not (_EXCLUDED_FIXTURES & set(getattr(item, "fixturenames", ())))
                   and "fresh_process" not in item.name]
        if self.wanted is not None:
            rank = {nodeid: i for i, nodeid in enumerate(self.wanted)}
            allowed = sorted((item for item in allowed if item.nodeid in rank), key=lambda item: rank[item.nodeid])
        dropped = [item for item in items if item not in allowed]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = allowed


class _Tracer(_Selector):
    """pytest plugin: the lines of ``filename`` each test executes, and those run before any test (import)."""

    def __init__(self, filename: str) -> None:
        super().__init__(None)
        self.filename = filename
        self.lines: set[int] = set()
        self.import_lines = self.lines
        self.tests: dict[str, dict] = {}
        self.failed: list[str] = []

    def _global(self, frame, event, arg):
        return self._local if frame.f_code.co_filename == self.filename else None

    def _local(self, frame, event, arg):
        if event == "line":
            self.lines.add(frame.f_lineno)
        return self._local

    def start(self) -> None:
        sys.settrace(self._global)
        threading.settrace(self._global)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.lines = set()
        started = time.perf_counter()
        try:
            return (yield)
        finally:
            self.tests[item.nodeid] = {"lines": sorted(self.lines), "seconds": time.perf_counter() - started}
            self.lines = set()

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed:
            self.failed.append(report.nodeid)


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the mutated code object for one module name; everything else imports normally."""

    def __init__(self, name: str, filename: str, code) -> None:
        self.name, self.filename, self.code = name, filename, code

    def find_spec(self, name, path, target=None):
        if name != self.name:
            return None
        return importlib.util.spec_from_file_location(name, self.filename, loader=self)

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        exec(self.code, module.__dict__)


def _purge(tree: Path) -> None:
    """Forget the repository's packages and test modules so the child imports them afresh (with the mutant).

    The helpers of ``tests/`` (conftest, browser_fixtures, leak_check) stay imported: they hold no
    names of the modules under test, and importing them again costs a second per child.
    """
    tests = str(tree / "tests")
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if name.split(".")[0] in _PACKAGES or (path.startswith(tests) and name.startswith("test_")):
            del sys.modules[name]


def _in_child(work, timeout: float) -> int:
    """Run ``work()`` in a forked child (own process group, output discarded); its exit code, 124 on timeout."""
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.setpgid(0, 0)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = int(work())
        except BaseException:
            code = 71
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return 124
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------------- run


def _copy_tree(source: Path, work: Path) -> Path:
    tree = work / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    shutil.copytree(source, tree, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".ruff_cache",
                                                                 ".pytest_cache", "runs", "*.egg-info"))
    return tree


def _line_map(tree: Path, filename: str, tests: list[str], report_path: Path) -> dict:
    """Run the module's tests once, traced, in a child; the line map (and the baseline's failures)."""

    def work() -> int:
        _purge(tree)
        tracer = _Tracer(filename)
        tracer.start()
        code = pytest.main([*tests, *_PYTEST_ARGS], plugins=[tracer])
        sys.settrace(None)
        report_path.write_text(json.dumps({"tests": tracer.tests, "import_lines": sorted(tracer.import_lines),
                                           "failed": tracer.failed, "code": int(code)}))
        return 0

    if report_path.exists():
        report_path.unlink()
    _in_child(work, timeout=1800)
    if not report_path.exists():
        raise SystemExit(f"the traced baseline run of {tests} did not finish")
    return json.loads(report_path.read_text())


def _tests_for(mutant: Mutant, line_map: dict) -> list[str] | None:
    """Tests that execute the mutant's lines, fastest first; all tests for import-time lines; None if none."""
    lines = set(range(mutant.line, mutant.end_line + 1))
    tests = line_map["tests"]
    if lines & set(line_map["import_lines"]):
        chosen = list(tests)
    else:
        chosen = [nodeid for nodeid, info in tests.items() if lines & set(info["lines"])]
    return sorted(chosen, key=lambda nodeid: tests[nodeid]["seconds"]) or None


def _run_mutant(tree: Path, name: str, filename: str, code, files: list[str], wanted: list[str],
                timeout: float) -> str:
    def work() -> int:
        _purge(tree)
        sys.meta_path.insert(0, _MutantFinder(name, filename, code))
        return pytest.main([*files, *_PYTEST_ARGS, "-x"], plugins=[_Selector(wanted)])

    exit_code = _in_child(work, timeout)
    if exit_code == 124:
        return "timeout"
    return "survived" if exit_code == 0 else "caught"


def run_module(key: str, tree: Path, work: Path, max_mutants: int, seed: int, log) -> dict:
    relative, test_files = MODULES[key]
    filename = str(tree / relative)
    name = relative[:-3].replace("/", ".")
    files = [f for f in test_files if (tree / f).exists()]
    source = Path(filename).read_text()
    every = mutants(source)
    chosen = every if len(every) <= max_mutants else sorted(random.Random(seed).sample(every, max_mutants),
                                                            key=lambda m: (m.line, m.index, m.kind))
    started = time.monotonic()
    line_map = _line_map(tree, filename, files, work / f"linemap-{key}.json")
    line_map["import_lines"] = sorted(set(line_map["import_lines"]) | import_time_lines(source))
    if line_map["failed"] or line_map["code"] != 0:
        log(f"{key}: skipped, the unmutated tests do not pass ({line_map['failed'][:5]}, exit {line_map['code']})")
        return {"module": relative, "tests": files, "mutants_total": len(every), "error": "baseline fails",
                "failed": line_map["failed"]}
    results = {"caught": 0, "timeout": 0, "survived": 0, "not covered": 0}
    survivors = []
    for i, mutant in enumerate(chosen):
        wanted = _tests_for(mutant, line_map)
        if wanted is None:
            outcome = "not covered"
        else:
            budget = 3 * sum(line_map["tests"][t]["seconds"] for t in wanted) + 10
            outcome = _run_mutant(tree, name, filename, apply(source, mutant, filename), files, wanted, budget)
        results[outcome] += 1
        if outcome in ("survived", "not covered"):
            survivors.append({"line": mutant.line, "change": mutant.description, "outcome": outcome,
                              "code": source.splitlines()[mutant.line - 1].strip()})
        if (i + 1) % 25 == 0:
            log(f"  {key}: {i + 1}/{len(chosen)} mutants, {results}")
    run = len(chosen)
    caught = results["caught"] + results["timeout"]
    return {"module": relative, "tests": files, "mutants_total": len(every), "mutants_run": run,
            **results, "score": caught / run if run else 1.0, "seconds": round(time.monotonic() - started),
            "survivors": sorted(survivors, key=lambda s: s["line"])}


def _preload(tree: Path) -> None:
    """Import the heavy dependencies once (in the parent) and check the copy is what gets imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["OMP_NUM_THREADS"] = "1"
    sys.dont_write_bytecode = True
    os.chdir(tree)
    sys.path.insert(0, str(tree))
    sys.path.insert(0, str(tree / "tests"))
    import torch

    torch.set_num_threads(1)
    for key, (relative, _) in MODULES.items():
        module = importlib.import_module(relative[:-3].replace("/", "."))
        if Path(module.__file__).resolve() != (tree / relative).resolve():
            raise SystemExit(f"{key}: imported from {module.__file__}, not from the copy {tree}")
    import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl
    import transformers.models.qwen2_vl.modeling_qwen2_vl
    import transformers.models.qwen3_vl.modeling_qwen3_vl  # noqa: F401

    importlib.import_module("conftest")  # and its helpers (browser_fixtures looks for Chromium: 1 s)
    gc.freeze()  # what the parent imported is never collected again, in any child


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"some of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--max-mutants", type=int, default=400, help="per module; a seeded sample above it")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--work", type=Path, default=Path("/tmp/giraffe-mutation"))
    parser.add_argument("--report", type=Path, default=None, help="JSON report (default WORK/report.json)")
    parser.add_argument("--list-survivors", action="store_true")
    args = parser.parse_args(argv)
    unknown = set(args.modules) - set(MODULES)
    if unknown:
        parser.error(f"unknown modules {sorted(unknown)}; choose from {', '.join(MODULES)}")
    os.nice(10)
    args.work.mkdir(parents=True, exist_ok=True)
    tree = _copy_tree(args.source.resolve(), args.work.resolve())
    _preload(tree)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    reports = []
    report_path = args.report or args.work / "report.json"
    for key in args.modules or list(MODULES):
        log(f"{key}: line map and {min(args.max_mutants, len(mutants(Path(tree, MODULES[key][0]).read_text())))}"
            " mutants")
        reports.append(run_module(key, tree, args.work, args.max_mutants, args.seed, log))
        report_path.write_text(json.dumps(reports, indent=1))  # after every module: a long run can be read early
    print(f"{'module':28} {'mutants':>8} {'caught':>7} {'timeout':>8} {'survived':>9} {'uncovered':>10} "
          f"{'score':>6} {'time':>6}")
    for r in reports:
        if "error" in r:
            print(f"{r['module']:28} {r['error']}: {r['failed'][:3]}")
            continue
        print(f"{r['module']:28} {r['mutants_run']:>4}/{r['mutants_total']:<3} {r['caught']:>7} {r['timeout']:>8} "
              f"{r['survived']:>9} {r['not covered']:>10} {r['score']:>6.1%} {r['seconds']:>5}s")
        if args.list_survivors:
            for s in r["survivors"]:
                print(f"    {r['module']}:{s['line']}: {s['change']} ({s['outcome']})  {s['code'][:70]}")
    print(f"report: {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
