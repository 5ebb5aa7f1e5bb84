"""The demo: recording demonstrations with `giraffe run`, the page's instruction as the task,
agent configs shipped with a model, the build pipeline end to end, and the shipped model
solving MiniWoB++ episodes it never saw."""

from __future__ import annotations

import json

import pytest
from browser_fixtures import requires_browser
from typer.testing import CliRunner

from giraffe_agent import AgentConfig, load_agent_config
from giraffe_cli import app
from giraffe_core.errors import ConfigError

runner = CliRunner()
pytest.importorskip("miniwob", reason="needs the MiniWoB++ pages (pip install 'giraffe[miniwob]')")


def test_agent_config_files_load_and_bad_ones_name_the_problem(tmp_path):
    from demo import AGENT_CONFIG_PATH

    shipped = load_agent_config(AGENT_CONFIG_PATH)
    assert shipped.system_prompt and shipped.memory.policy == "recent" and shipped.memory.full_frames == 1
    (tmp_path / "agent_config.json").write_text(json.dumps({"system_prompt": "hi", "max_new_tokens": 7}))
    assert load_agent_config(tmp_path) == AgentConfig(system_prompt="hi", max_new_tokens=7)  # a model directory
    assert load_agent_config(tmp_path / "nothing-here") is None
    (tmp_path / "bad.json").write_text(json.dumps({"max_new_tokens": 0}))
    with pytest.raises(ConfigError, match="max_new_tokens"):
        load_agent_config(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a valid agent config"):
        load_agent_config(tmp_path / "broken.json")


@requires_browser
def test_giraffe_run_records_demonstrations_over_a_seed_range_and_resumes(tmp_path):
    from demo import AGENT_CONFIG_PATH
    from giraffe_agent.trajectory import read_run

    out = tmp_path / "rec"
    args = ["run", "--miniwob", "enter-password", "--demonstrator", "--no-thoughts", "--no-report",
            "--seeds", "5:7", "--agent-config", str(AGENT_CONFIG_PATH), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 episode(s) recorded" in result.output and "2 solved" in result.output
    for seed in (5, 6):
        run = read_run(out / f"seed-{seed}")
        assert run.result.info["reward"] == 1.0
        # the page's own instruction is the task, and the shipped loop settings were used
        assert run.meta.task.startswith("Enter the password \"") and run.meta.task.endswith("press submit.")
        first = run.steps[0].context.messages
        assert first[0] == {"role": "system", "content": load_agent_config(AGENT_CONFIG_PATH).system_prompt}
        assert run.meta.task in first[1]["content"][0]["text"]
        assert all("Thought" not in step.raw_output for step in run.steps)
        assert not (out / f"seed-{seed}" / "report.html").exists()
    # a rerun skips what is recorded; an interrupted episode is kept aside and recorded again
    (out / "seed-6" / "result.json").unlink()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 episode(s) recorded" in again.output
    assert (out / "interrupted" / "seed-6-1" / "trajectory.jsonl").exists()
    assert read_run(out / "seed-6").result.info["reward"] == 1.0


def test_giraffe_run_refuses_bad_seed_ranges_and_demonstrators_without_miniwob(tmp_path):
    bad = runner.invoke(app, ["run", "--miniwob", "login-user", "--demonstrator", "--seeds", "9:3",
                              "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "START:STOP" in bad.output
    no_task = runner.invoke(app, ["run", "do it", "--start-url", "http://127.0.0.1:1/", "--demonstrator",
                                  "--out", str(tmp_path / "y")])
    assert no_task.exit_code != 0 and "--miniwob" in no_task.output
    keyboard = runner.invoke(app, ["run", "--miniwob", "login-user", "--keyboard", "--out", str(tmp_path / "z")])
    assert keyboard.exit_code != 0 and "--keyboard is an option of --demonstrator" in keyboard.output


def test_copy_exercises_ask_to_type_one_of_their_quoted_values(tmp_path):
    """One, two or three quoted values (a third each), the wanted one named by its ordinal; no
    character twice in an exercise, so only copying by content gets the answer."""
    import re

    from demo import AGENT_CONFIG_PATH, write_copy_exercises

    path = write_copy_exercises(tmp_path / "ex.jsonl", count=300, seed=3)
    chats = [json.loads(line)["messages"] for line in path.read_text().splitlines()]
    assert len(chats) == 300
    system = load_agent_config(AGENT_CONFIG_PATH).system_prompt
    counts, picked = {1: 0, 2: 0, 3: 0}, set()
    for system_turn, task, reply in chats:
        assert system_turn == {"role": "system", "content": system}
        text = task["content"]
        values = re.findall(r'"([^"]*)"', text)
        counts[len(values)] += 1
        assert all(3 <= len(v) <= 12 for v in values) and len(set("".join(values))) == len("".join(values))
        if len(values) == 1:
            assert text == f'Type "{values[0]}".\n'
            wanted = 0
        else:
            ordinal = re.search(r"(first|second|third)", text).group(1)
            wanted = ("first", "second", "third").index(ordinal)
            assert wanted < len(values)
            picked.add((len(values), wanted))
        assert json.loads(reply["content"]) == {"action": "type", "text": values[wanted]}
    assert counts == {1: 100, 2: 100, 3: 100}
    assert picked == {(2, 0), (2, 1), (3, 0), (3, 1), (3, 2)}  # every position is asked for
    assert len({c[1]["content"] for c in chats}) == 300
    assert path.read_text() == write_copy_exercises(tmp_path / "again.jsonl", count=300, seed=3).read_text()


def test_pointed_at_counts_distinct_points_of_the_models_actions(tmp_path):
    from demo import pointed_at

    runs = tmp_path / "runs" / "enter-text"
    steps = {0: [{"action": {"action": "type", "text": "a", "x": 444, "y": 421}},
                 {"action": {"action": "key", "keys": "Tab"}}],
             1: [{"action": {"action": "type", "text": "b", "x": 444, "y": 421}}, {"action": None},
                 {"action": {"action": "click", "x": 300, "y": 507}}]}
    for seed, records in steps.items():
        (runs / f"seed-{seed}").mkdir(parents=True)
        (runs / f"seed-{seed}" / "trajectory.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert pointed_at(tmp_path, "enter-text") == (2, 3)
    assert pointed_at(tmp_path, "click-dialog") == (0, 0)


@requires_browser
def test_an_agent_without_a_task_in_an_environment_without_an_instruction_stops_clearly(tmp_path):
    from giraffe_agent import Agent, BrowserConfig, BrowserEnv, ScriptedBackend
    from giraffe_agent.trajectory import read_run

    page = tmp_path / "page.html"
    page.write_text("<html><body><p>hello</p></body></html>")
    from giraffe_agent.safety import SafetyPolicy

    env = BrowserEnv(page.as_uri(), BrowserConfig(viewport_css=(200, 200)), SafetyPolicy(allow_file_urls=True))
    result = Agent(None, env, ScriptedBackend(lambda request: '{"action": "done", "text": "x"}'),
                   out_dir=tmp_path / "run").run()
    assert result.status == "error" and "gives no instruction" in result.error
    assert read_run(tmp_path / "run").result.status == "error"


@requires_browser
def test_the_oracle_harness_with_the_instruction_as_task_text(tmp_path):
    from demo import AGENT_CONFIG_PATH

    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "miniwob", "--answerer", "oracle", "--tasks", "focus-text-2",
                                 "--seeds", "0:2", "--task-text", "instruction", "--agent-config",
                                 str(AGENT_CONFIG_PATH), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["overall"]["successes"] == 2 and saved["config"]["task_text"] == "instruction"
    meta = json.loads((out / "runs" / "focus-text-2" / "seed-1" / "meta.json").read_text())
    assert meta["task"].startswith("Focus into the")
    assert meta["config"]["loop"]["system_prompt"] == load_agent_config(AGENT_CONFIG_PATH).system_prompt


@requires_browser
def test_build_demo_records_trains_evaluates_and_writes_the_card(tmp_path):
    from demo import DemoConfig, build_demo
    from giraffe_core import load

    lines: list[str] = []
    config = DemoConfig(out_dir=tmp_path / "build", tasks=("focus-text-2",), episodes=3, eval_seeds=2, jobs=1,
                        epochs=1.0, copy_steps=2)
    clicked = tmp_path / "build" / "recordings" / "focus-text-2" / "seed-1007"  # an earlier click-mode recording
    clicked.mkdir(parents=True)
    result = build_demo(config, progress=lines.append)
    assert result.recorded == {"focus-text-2": 3}
    # the keyboard-mode build set the click-mode recordings aside instead of training on them
    assert (tmp_path / "build" / "recordings" / "other-mode" / "focus-text-2-1" / "seed-1007").is_dir()
    task_dir = tmp_path / "build" / "recordings" / "focus-text-2"
    assert json.loads((task_dir / "demonstrator.json").read_text()) == {"keyboard": True}
    assert not (task_dir / "seed-1007").exists()
    mix = json.loads((tmp_path / "build" / "train" / "mix_report.json").read_text())
    assert mix["data"]["kept"]["focus-text-2"] == 3 and mix["data"]["kept"]["copy-exercises"] == 20000
    # the curriculum: a first stage of copy exercises only (2 steps here), then the mixture
    assert result.samples == mix["stages"][0]["samples"] + mix["stages"][1]["samples"]
    assert mix["stages"][0]["shares"] == {"long_text": 1.0} and mix["stages"][1]["samples"] >= 3
    assert mix["stages"][1]["shares"] == {"long_text": 0.5, "trajectory": 0.5}
    metrics = [json.loads(line) for line in (tmp_path / "build" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["stage"] for m in metrics][:3] == [0, 0, 1]
    assert len(list((tmp_path / "build" / "recordings" / "focus-text-2").glob("seed-100[0-2]/result.json"))) == 3
    assert set(result.success) == {"focus-text-2", "overall"}
    model = result.model_dir
    assert load_agent_config(model) == load_agent_config(config.out_dir / "train" / "final")
    card = (model / "README.md").read_text()
    assert "| focus-text-2 |" in card and ("Tasks below 80 %" in card or "Every task" in card)
    assert "points acted at" in card and '`{"action": "key", "keys": "Tab"}`' in card  # the keyboard build's replies
    assert "stage 1:" in card and "stage 2:" in card
    assert load(model).model.config.text_config.hidden_size > 0
    report = json.loads((tmp_path / "build" / "eval" / "results.json").read_text())
    assert report["overall"]["episodes"] == 2 and report["config"]["seeds"] == [0, 1]
    assert any(line.startswith("recorded focus-text-2") for line in lines)


@requires_browser
def test_the_shipped_demo_model_solves_unseen_episodes_from_pixels_and_the_instruction(tmp_path):
    """The README's main job: `giraffe demo` with the shipped checkpoint, on evaluation seeds."""
    from demo import DEFAULT_TASK, MODEL_DIR
    from giraffe_agent.trajectory import read_run

    if not (MODEL_DIR / "config.json").exists():
        pytest.fail("demo/model is missing: build it with `giraffe build-demo --ship`")
    solved = 0
    for seed in (0, 1, 2):
        out = tmp_path / f"demo-{seed}"
        result = runner.invoke(app, ["demo", "--seed", str(seed), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert (out / "report.html").exists()
        run = read_run(out)
        assert run.meta.config["env"]["task"] == DEFAULT_TASK and run.meta.backend.startswith("local")
        solved += "solved" in result.output and "not solved" not in result.output
    assert solved >= 2, f"the demo model should solve most {DEFAULT_TASK} episodes it never saw"
