"""The MiniWoB++ harness: the scripted demonstrators solve two tasks x two seeds (100 % by
MiniWoB's own reward), one run directory per episode, resume (nothing re-run; an added seed runs
alone), an episode that raises recorded as a failure without stopping the evaluation, another
backend refused on the same directory, and the tiny model end to end."""

from __future__ import annotations

import json

import pytest
from browser_fixtures import requires_browser
from PIL import Image

from evals import (
    Backends,
    EvalError,
    MiniWoBConfig,
    demonstrator_backends,
    engine_backends,
    run_miniwob,
)
from giraffe_agent.demonstrators import UnknownTaskError
from giraffe_agent.envs import MiniWoBServer
from giraffe_agent.trajectory import read_run
from giraffe_core.errors import InputError

pytestmark = requires_browser

CONFIG = MiniWoBConfig(tasks=("click-test", "click-button"), seeds=(0, 1), max_steps=4, write_reports=False)


@pytest.fixture(scope="module")
def server():
    with MiniWoBServer() as s:
        yield s


class Recorded:
    """Wraps a Backends: counts the episodes it makes a backend for, and raises for ``fail``."""

    def __init__(self, inner: Backends, fail: tuple[str, int] | None = None) -> None:
        self.made: list[tuple[str, int]] = []
        self.fail = fail
        self.inner = inner

    def backends(self) -> Backends:
        def make(task: str, seed: int):
            self.made.append((task, seed))
            if (task, seed) == self.fail:
                raise RuntimeError("the backend broke")
            return self.inner.make(task, seed)

        return Backends(name=self.inner.name, make=make, capture_elements=self.inner.capture_elements)


def test_the_demonstrators_solve_two_tasks_on_two_seeds_and_a_rerun_resumes(server, tmp_path):
    first = Recorded(demonstrator_backends(CONFIG.tasks))
    report = run_miniwob(first.backends(), CONFIG, out_dir=tmp_path, server=server)
    assert report.overall.successes == report.overall.episodes == 4 and report.overall.success_rate == 1.0
    assert [(t.task, t.success_rate, t.mean_reward) for t in report.tasks] == [("click-test", 1.0, 1.0),
                                                                               ("click-button", 1.0, 1.0)]
    for episode in report.episodes:
        assert episode.reward == 1.0 and episode.status == "episode_over" and episode.error is None
        run = read_run(tmp_path / episode.run_dir)  # the kept trajectory: MiniWoB's own reward inside
        assert run.result.info["reward"] == 1.0 and run.meta.config["env"]["seed"] == episode.seed
        assert run.meta.config["env"]["task"] == episode.task and len(run.steps) == episode.steps
    assert episode.utterance  # the page's own instruction
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["overall"]["success_rate"] == 1.0 and len(saved["episodes"]) == 4
    assert Image.open(tmp_path / "success.png").format == "PNG"
    again = Recorded(demonstrator_backends(CONFIG.tasks))
    assert run_miniwob(again.backends(), CONFIG, out_dir=tmp_path, server=server).overall.successes == 4
    assert again.made == []
    more = Recorded(demonstrator_backends(CONFIG.tasks))
    report = run_miniwob(more.backends(), CONFIG.model_copy(update={"seeds": (0, 1, 2), "tasks": ("click-test",)}),
                         out_dir=tmp_path, server=server)
    assert more.made == [("click-test", 2)] and report.overall.episodes == 3 and report.overall.successes == 3
    with pytest.raises(EvalError, match="another evaluation"):
        run_miniwob(demonstrator_backends(), CONFIG.model_copy(update={"max_steps": 9}), out_dir=tmp_path,
                    server=server)


def test_an_episode_that_raises_is_a_recorded_failure_and_is_retried_on_resume(server, tmp_path):
    config = CONFIG.model_copy(update={"tasks": ("click-test",)})
    broken = Recorded(demonstrator_backends(), fail=("click-test", 0))
    report = run_miniwob(broken.backends(), config, out_dir=tmp_path, server=server)
    bad, good = report.episodes
    assert bad.status == "error" and not bad.success and "RuntimeError: the backend broke" in bad.error
    assert good.success and report.overall.errors == 1 and report.overall.success_rate == 0.5
    fixed = Recorded(demonstrator_backends())
    report = run_miniwob(fixed.backends(), config, out_dir=tmp_path, server=server)
    assert fixed.made == [("click-test", 0)] and report.overall.success_rate == 1.0


def test_unknown_tasks_fail_before_any_episode(server, tmp_path):
    with pytest.raises(InputError, match="unknown MiniWoB"):
        run_miniwob(demonstrator_backends(), CONFIG.model_copy(update={"tasks": ("no-such-task",)}), out_dir=tmp_path,
                    server=server)
    assert not (tmp_path / "episodes.jsonl").exists()
    with pytest.raises(UnknownTaskError):
        demonstrator_backends(["book-flight"])


def test_the_tiny_model_runs_end_to_end(server, tiny_engine, tmp_path):
    config = MiniWoBConfig(tasks=("click-test",), seeds=(0,), max_steps=2, max_new_tokens=16, write_reports=True)
    report = run_miniwob(engine_backends(tiny_engine), config, out_dir=tmp_path, server=server)
    episode = report.episodes[0]
    assert report.backend == "local:tiny" and episode.error is None and episode.reward is not None
    assert episode.success == (episode.reward > 0) and episode.prompt_tokens > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["episodes"][0]["status"] == episode.status
    run = read_run(tmp_path / episode.run_dir)
    assert run.meta.backend == "local:tiny" and (tmp_path / episode.run_dir / "report.html").is_file()
