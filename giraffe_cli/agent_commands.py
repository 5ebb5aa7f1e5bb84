"""``giraffe run``, ``giraffe replay`` and ``giraffe view``: web agents from the command line.

Registered on :data:`giraffe_cli.app.app` when :mod:`giraffe_cli.app` is imported. Everything
heavy (Playwright, torch, the model) is imported inside the commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from giraffe_cli.app import _fail, app, console

__all__ = ["replay_command", "run_command", "view_command"]


def _summary(result: Any) -> None:
    table = Table(title=f"run {result.run_dir}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in (("status", result.status), ("answer", result.answer), ("steps", result.steps),
                       ("reward", result.info.get("reward")), ("prompt tokens", result.prompt_tokens),
                       ("reused tokens", result.reused_tokens), ("trajectory", result.trajectory),
                       ("report", result.report), ("error", result.error)):
        if value is not None:
            table.add_row(key, str(value))
    console.print(table)


def _viewport(text: str) -> tuple[int, int]:
    """``"1280x800"`` -> (1280, 800)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise typer.BadParameter(f"--viewport must be WIDTHxHEIGHT in CSS pixels, e.g. 1280x800; got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _first_served_model(endpoint: str) -> str:
    """The first model an OpenAI-compatible endpoint lists (``GET /v1/models``)."""
    from giraffe_agent.backends.openai import BackendError
    from giraffe_core.extras import require

    openai = require("openai", extra="agent", purpose="call an OpenAI-compatible endpoint")
    client = openai.OpenAI(base_url=endpoint, api_key=os.environ.get("OPENAI_API_KEY") or "unused",
                           timeout=30.0, max_retries=1)
    try:
        models = [m.id for m in client.models.list()]
    except openai.APIError as exc:
        raise BackendError(f"cannot list the models of {endpoint}: {exc}",
                           hint="is the server running, and is --endpoint its API root (ending in /v1)? "
                                "Or pass --served-model") from exc
    if not models:
        raise BackendError(f"{endpoint} serves no models", hint="pass --served-model")
    return models[0]


def _seed_range(text: str) -> list[int]:
    """``"7"`` -> [7]; ``"0:200"`` -> 0..199 (a half-open range, like Python's)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", text)
    if match is None or (match.group(2) is not None and int(match.group(2)) <= int(match.group(1))):
        raise typer.BadParameter(f"--seeds is N or START:STOP (STOP excluded, above START), e.g. 0:200; got {text!r}")
    first = int(match.group(1))
    return [first] if match.group(2) is None else list(range(first, int(match.group(2))))


@app.command("run")
def run_command(
    task: str = typer.Argument("", help="what to do; with --miniwob, default: the task page's own instruction"),
    start_url: str = typer.Option(None, "--start-url", help="the first page"),
    model: str = typer.Option("tiny", help="'tiny', a saved directory or a hub id (local backend)"),
    endpoint: str = typer.Option(None, help="an OpenAI-compatible endpoint (vLLM, sglang, giraffe serve)"),
    served_model: str = typer.Option(None, help="the model name at --endpoint (default: the first it lists)"),
    demonstrator: bool = typer.Option(False, "--demonstrator", help="with --miniwob: the scripted demonstrator "
                                      "(reads the DOM) instead of a model; records training trajectories"),
    style: str = typer.Option("json", help="the demonstrator's action format: json, function or uitars"),
    thoughts: bool = typer.Option(True, help="the demonstrator writes a Thought line before its action"),
    keyboard: bool = typer.Option(False, "--keyboard", help="the demonstrator fills in forms with the keyboard "
                                  "(Tab, type, Tab, ..., Enter) instead of clicking fields and buttons"),
    agent_config: Path = typer.Option(None, "--agent-config", help="loop settings as JSON (AgentConfig: "
                                      "system_prompt, memory, ...); default: the model directory's agent_config.json"),
    context_length: int = typer.Option(None, help="extend the local model's context to this many tokens"),
    max_steps: int = typer.Option(20, help="most actions"),
    max_seconds: float = typer.Option(600.0, help="most wall-clock seconds"),
    allow_domain: list[str] = typer.Option([], "--allow-domain", help="an allowed host pattern; repeat"),
    miniwob: str = typer.Option(None, help="run a MiniWoB++ task served on loopback, e.g. click-button"),
    seed: int = typer.Option(0, help="the MiniWoB++ episode seed"),
    seeds: str = typer.Option(None, help="MiniWoB++: many episodes, START:STOP, into OUT/seed-N (done ones are "
                                         "skipped, so a rerun resumes)"),
    viewport: str = typer.Option("1280x800", help="browser viewport, CSS pixels (MiniWoB: 160x210)"),
    report: bool = typer.Option(True, help="write each run's report.html"),
    out: Path = typer.Option(..., help="the run directory to create (with --seeds: the parent of one per seed)"),
) -> None:
    """Run a web agent on a task and write its trajectory, frames and report to OUT."""
    from giraffe_agent.backends import LocalBackend, OpenAIBackend, ScriptedBackend
    from giraffe_agent.envs.browser import BrowserConfig, BrowserEnv
    from giraffe_agent.loop import Agent, AgentConfig, load_agent_config
    from giraffe_agent.safety import SafetyPolicy
    from giraffe_agent.trajectory import set_aside
    from giraffe_core import GiraffeError, load

    server = None
    results = []
    try:
        safety = SafetyPolicy(allowed_domains=tuple(allow_domain), max_steps=max_steps, max_seconds=max_seconds)
        if (demonstrator or seeds) and not miniwob:
            raise typer.BadParameter("--demonstrator and --seeds need --miniwob TASK_NAME")
        if keyboard and not demonstrator:
            raise typer.BadParameter("--keyboard is an option of --demonstrator")
        if not miniwob and (not start_url or not task):
            raise typer.BadParameter("give a TASK and --start-url (or --miniwob TASK_NAME)")
        episodes = _seed_range(seeds) if seeds else [seed]
        config = load_agent_config(agent_config) if agent_config else None
        if agent_config and config is None:
            raise typer.BadParameter(f"--agent-config {agent_config} does not exist")
        # the environment's inputs first: a wrong task, URL or viewport is reported before a model loads
        if miniwob:
            from giraffe_agent.envs.miniwob import MINIWOB_VIEWPORT, MiniWoBServer

            server = MiniWoBServer()
            server.url(miniwob)  # an unknown task fails here
        else:
            browser = BrowserConfig(viewport_css=_viewport(viewport))
        if demonstrator:
            from giraffe_agent.demonstrators import miniwob_demonstrator

            script = miniwob_demonstrator(miniwob, style=style, thoughts=thoughts,  # type: ignore[arg-type]
                                          keyboard=keyboard)
            make_backend: Any = lambda: ScriptedBackend(script, name=f"demonstrator:{style}")  # noqa: E731
        elif endpoint:
            name = served_model or _first_served_model(endpoint)
            make_backend = lambda: OpenAIBackend(endpoint, name)  # noqa: E731
        else:
            engine = load(model, context_length=context_length)
            config = config or load_agent_config(model)
            make_backend = lambda: LocalBackend(engine)  # noqa: E731
        if not report:
            config = (config or AgentConfig()).model_copy(update={"write_report": False})
        def agent_for(episode: int, shared: Any) -> Agent | None:
            run_dir = out / f"seed-{episode}" if seeds else out
            if seeds and (run_dir / "result.json").exists():
                return None  # recorded by an earlier call
            if seeds:  # an interrupted episode: kept aside, recorded again
                set_aside(run_dir, out / "interrupted")
            if miniwob:
                from giraffe_agent.envs.miniwob import MiniWoBEnv

                env: Any = MiniWoBEnv(miniwob, episode, server, safety=safety, shared=shared, config=BrowserConfig(
                    viewport_css=MINIWOB_VIEWPORT, capture_elements=demonstrator))
            else:
                env = BrowserEnv(start_url, browser, safety)
            return Agent(task or None, env, make_backend(), out_dir=run_dir, config=config, safety=safety)

        async def run_all() -> None:  # one Chromium for every episode, a fresh context each
            from giraffe_agent.envs.browser import SharedBrowser

            async with SharedBrowser() as shared:
                for episode in episodes:
                    agent = agent_for(episode, shared)
                    if agent is not None:
                        results.append(await agent.run_async())

        if seeds:
            asyncio.run(run_all())
        else:
            results.append(agent_for(seed, None).run())  # type: ignore[union-attr]
    except (GiraffeError, ValueError) as exc:
        _fail(exc)
        return
    finally:
        if server is not None:
            server.close()
    if len(results) == 1 and not seeds:
        _summary(results[0])
    elif results:
        solved = sum(1 for r in results if (r.info.get("reward") or 0) > 0)
        console.print(f"{len(results)} episode(s) recorded in {out}: {solved} solved (MiniWoB reward > 0)")
    else:
        console.print(f"every episode was already recorded in {out}")


@app.command("replay")
def replay_command(
    run_dir: Path = typer.Argument(..., help="a run directory written by `giraffe run`"),
    out: Path = typer.Option(None, help="the new run directory (default: RUN_DIR-replay)"),
    allow_domain: list[str] = typer.Option([], "--allow-domain", help="an allowed host pattern; repeat "
                                           "(default: only the recorded start page's host)"),
    max_steps: int = typer.Option(50, help="most actions"),
    max_seconds: float = typer.Option(600.0, help="most wall-clock seconds"),
) -> None:
    """Re-execute a recorded run's actions without a model (its recorded raw outputs, in order).

    The run directory may come from someone else: the browser, its flags and the safety policy are
    yours (these options and your defaults); from the run only the task, the start page, the
    viewport, the device scale and the loop settings are taken. The rest is listed as recorded,
    not applied.
    """
    from giraffe_agent.backends import ReplayBackend
    from giraffe_agent.loop import Agent
    from giraffe_agent.replay import replay_environment, replay_setup
    from giraffe_agent.safety import SafetyPolicy
    from giraffe_agent.trajectory import read_run
    from giraffe_core import GiraffeError

    server = None
    try:
        setup = replay_setup(read_run(run_dir).meta)
        safety = SafetyPolicy(allowed_domains=tuple(allow_domain), max_steps=max_steps, max_seconds=max_seconds)
        if setup.kind == "miniwob":
            from giraffe_agent.envs.miniwob import MiniWoBServer

            server = MiniWoBServer()
        env = replay_environment(setup, safety=safety, server=server)
        if setup.not_applied:
            console.print(f"recorded, not applied ({len(setup.not_applied)}):", soft_wrap=True)
            for item in setup.not_applied:
                console.print(f"  {item}", soft_wrap=True, markup=False, highlight=False)
        agent = Agent(setup.task, env, ReplayBackend(run_dir),
                      out_dir=out or run_dir.with_name(run_dir.name + "-replay"), config=setup.loop, safety=safety)
        result = agent.run()
    except (GiraffeError, ValueError) as exc:
        _fail(exc)
        return
    finally:
        if server is not None:
            server.close()
    _summary(result)


@app.command("view")
def view_command(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    as_json: bool = typer.Option(False, "--json", help="print the steps as JSON lines"),
) -> None:
    """(Re)write a run's report.html and print its steps.

    The run directory may come from someone else: its text is printed as text (never as rich
    markup), and a frame that is too large or broken is named in the report instead of shown.
    """
    from rich.markup import escape

    from giraffe_agent.report import write_report
    from giraffe_agent.trajectory import read_run
    from giraffe_core import GiraffeError

    try:
        run = read_run(run_dir, strict=False)
        report = write_report(run_dir)
    except (GiraffeError, OSError) as exc:
        _fail(exc)
    if as_json:
        for step in run.steps:
            print(json.dumps({"step": step.step, "attempt": step.attempt, "action": step.action,
                              "ok": step.result.ok if step.result else None, "url": step.url}))
        return
    table = Table(title=escape(f"{run.meta.task if run.meta else run_dir}"[:200]))
    for col in ("step", "try", "action", "result", "url", "prompt tokens"):
        table.add_column(col)
    for step in run.steps:
        action = json.dumps(step.action) if step.action else f"[parse error] {step.parse.error or ''}"
        result = "" if step.result is None else ("ok" if step.result.ok else "failed") + f": {step.result.message}"
        table.add_row(str(step.step), str(step.attempt), escape(action[:80]), escape(result[:60]),
                      escape((step.url or "")[:200]), str(step.tokens.prompt or ""))
    console.print(table)
    status = run.result.status if run.result else "unfinished (no result.json)"
    console.print(f"status: {escape(status)}; report: {escape(str(report))}")
    if run.skipped_lines:
        console.print(f"[yellow]{run.skipped_lines} incomplete line(s) skipped (a crash mid-write)[/]")
