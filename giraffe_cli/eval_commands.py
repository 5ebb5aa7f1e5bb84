"""``giraffe eval NAME``: the evaluations of :mod:`evals` from the command line, with a progress bar.

Registered on :data:`giraffe_cli.app.app` when :mod:`giraffe_cli.app` is imported. The model, the
browser and matplotlib are imported inside the command. Every evaluation writes ``results.json``
and a PNG plot into ``--out`` (default ``runs/eval-NAME``) and resumes there when run again with
the same settings.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from giraffe_cli.app import _fail, app, console

__all__ = ["eval_command"]


class EvalName(str, enum.Enum):
    """The evaluations ``giraffe eval`` runs."""

    haystack = "haystack"
    needle = "needle"
    recording_qa = "recording-qa"
    miniwob = "miniwob"
    rope_ablation = "rope-ablation"


class AnswererChoice(str, enum.Enum):
    """Who answers: the model, or a reference."""

    model = "model"
    oracle = "oracle"
    random = "random"


#: option -> the evaluations it applies to
_APPLIES: dict[str, set[str]] = {
    "--sizes": {"haystack", "rope-ablation"}, "--modes": {"haystack"},
    "--questions": {"haystack", "needle", "rope-ablation"},
    "--image-size": {"haystack", "needle", "rope-ablation", "recording-qa"},
    "--max-image-tokens": {"haystack", "needle", "rope-ablation"},
    "--frames": {"needle"}, "--depths": {"needle"}, "--answer-format": {"needle"},
    "--sessions": {"recording-qa"}, "--events": {"recording-qa"}, "--budget": {"recording-qa"},
    "--tasks": {"miniwob"}, "--seeds": {"miniwob"}, "--max-steps": {"miniwob"}, "--task-text": {"miniwob"},
    "--agent-config": {"miniwob"},
    "--methods": {"rope-ablation"},
}


def _list(text: str, kind: type, option: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        values = ()
    if not values:
        raise typer.BadParameter(f"{option} is a comma-separated list, got {text!r}")
    return values


def _size(text: str, option: str) -> tuple[int, int]:
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"{option} is WIDTHxHEIGHT in pixels, e.g. 336x336; got {text!r}")
    return int(parts[0]), int(parts[1])


def _progress_callback(progress: Any, task: Any) -> Any:
    def update(done: int, total: int, label: str) -> None:
        progress.update(task, completed=done, total=total, description=escape(label))

    return update


def _summary_table(report: Any) -> Table:
    from evals import format_accuracy

    table = Table(title=f"{report.eval}: {report.answerer}")
    for name in (*report.breakdown, "questions", "accuracy %", "95% CI", "overflow", "errors", "prompt tokens"):
        table.add_column(name, justify="right")
    for cell in [*report.cells, report.overall]:
        factors = [str(cell.cell.get(name, "all")) for name in report.breakdown]
        ci = "-" if cell.ci95 is None else f"{100 * cell.ci95[0]:.0f}-{100 * cell.ci95[1]:.0f}"
        tokens = "-" if cell.mean_prompt_tokens is None else f"{cell.mean_prompt_tokens:.0f}"
        table.add_row(*factors, str(cell.questions), format_accuracy(cell), ci, str(cell.overflow), str(cell.errors),
                      tokens)
    return table


@app.command("eval")
def eval_command(
    name: EvalName = typer.Argument(..., help="haystack, needle, recording-qa, miniwob or rope-ablation"),
    model: str = typer.Option("tiny", help="'tiny', a saved directory or a hub id (local engine)"),
    endpoint: str | None = typer.Option(None, help="an OpenAI-compatible endpoint instead, e.g. http://127.0.0.1:8000/v1"),
    served_model: str | None = typer.Option(None, help="the endpoint's model id (default: the first it lists)"),
    api_key: str | None = typer.Option(None, envvar="OPENAI_API_KEY", help="the endpoint's API key"),
    answerer: AnswererChoice = typer.Option(AnswererChoice.model, help="model; oracle (the generator's answers; "
                                            "MiniWoB++: the scripted demonstrators); random (uniform guesses)"),
    out: Path | None = typer.Option(None, help="output directory (default runs/eval-NAME); resumed when it exists"),
    context_length: int | None = typer.Option(None, help="extend the local model's context to this many tokens "
                                                         "(rope-ablation: the extension target)"),
    seed: int = typer.Option(0, min=0, help="generator seed"),
    questions: int | None = typer.Option(None, min=1, help="questions per cell (haystack: even)"),
    sizes: str | None = typer.Option(None, help="haystack sizes, images: 1,2,5,10"),
    modes: str | None = typer.Option(None, help="haystack modes: single,any,all"),
    image_size: str | None = typer.Option(None, help="image (needle: frame; recording-qa: viewport) WxH, pixels"),
    max_image_tokens: int | None = typer.Option(None, min=1, help="visual-token budget per image or frame"),
    frames: str | None = typer.Option(None, help="needle haystack lengths, frames: 8,32,128"),
    depths: str | None = typer.Option(None, help="needle depths, fractions: 0,0.25,0.5,0.75,1"),
    answer_format: str | None = typer.Option(None, help="needle answers: choice or exact"),
    sessions: int | None = typer.Option(None, min=1, help="recorded web sessions"),
    events: int | None = typer.Option(None, min=2, help="events per recorded session"),
    budget: int | None = typer.Option(None, min=64, help="recording-qa prompt budget, tokens"),
    tasks: str | None = typer.Option(None, help="MiniWoB++ tasks: click-test,click-button"),
    seeds: str | None = typer.Option(None, help="MiniWoB++ episode seeds: 0,1,2 or a range START:STOP (STOP excluded)"),
    task_text: str | None = typer.Option(None, help="MiniWoB++ task text: screen (read the instruction from the "
                                                    "screenshot) or instruction (the page's utterance as text)"),
    agent_config: Path | None = typer.Option(None, help="MiniWoB++ loop settings as JSON (AgentConfig); default: "
                                                        "the model directory's agent_config.json"),
    max_steps: int | None = typer.Option(None, min=1, help="MiniWoB++ actions per episode"),
    methods: str | None = typer.Option(None, help="rope methods: none,pi,ntk,yarn,mrope_plus_plus"),
    as_json: bool = typer.Option(False, "--json", help="print results.json instead of a table"),
) -> None:
    """Run an evaluation; write results.json and a PNG plot to --out."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from giraffe_core import GiraffeError

    given = {"--sizes": sizes, "--modes": modes, "--questions": questions, "--image-size": image_size,
             "--max-image-tokens": max_image_tokens, "--frames": frames, "--depths": depths,
             "--answer-format": answer_format, "--sessions": sessions, "--events": events, "--budget": budget,
             "--tasks": tasks, "--seeds": seeds, "--max-steps": max_steps, "--methods": methods,
             "--task-text": task_text, "--agent-config": agent_config}
    wrong = [opt for opt, value in given.items() if value is not None and name.value not in _APPLIES[opt]]
    out = out or Path("runs") / f"eval-{name.value}"
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=as_json)
    try:
        if wrong:
            raise typer.BadParameter(f"{', '.join(wrong)} do(es) not apply to `giraffe eval {name.value}`")
        job = _prepare(name.value, given, model=model, endpoint=endpoint, served_model=served_model, api_key=api_key,
                       answerer=answerer.value, context_length=context_length, seed=seed)
        with progress:
            task = progress.add_task(f"{name.value}", total=None)
            report = job(out, _progress_callback(progress, task))
    except (GiraffeError, ValueError) as exc:
        _fail(exc)
        return
    _show(name.value, report, out, as_json)


def _prepare(name: str, given: dict[str, Any], *, model: str, endpoint: str | None, served_model: str | None,
             api_key: str | None, answerer: str, context_length: int | None, seed: int) -> Any:
    """Build the configuration and who answers; return ``(out_dir, progress) -> report``."""
    import evals

    if name == "miniwob":
        from giraffe_agent.loop import load_agent_config

        agent = None
        if given["--agent-config"] is not None:
            agent = load_agent_config(given["--agent-config"])
            if agent is None:
                raise typer.BadParameter(f"--agent-config {given['--agent-config']} does not exist")
        elif answerer == "model" and not endpoint:
            agent = load_agent_config(model)
        seeds = given["--seeds"]
        if seeds and ":" in seeds:
            from giraffe_cli.agent_commands import _seed_range

            seed_list: tuple | None = tuple(_seed_range(seeds))
        else:
            seed_list = seeds and _list(seeds, int, "--seeds")
        config = evals.MiniWoBConfig(**_drop_none(
            tasks=given["--tasks"] and _list(given["--tasks"], str, "--tasks"),
            seeds=seed_list, max_steps=given["--max-steps"], task_text=given["--task-text"], agent=agent,
            max_new_tokens=agent.max_new_tokens if agent is not None else None))
        if answerer == "oracle":
            backends = evals.demonstrator_backends(config.tasks)
        elif answerer == "random":
            raise typer.BadParameter("--answerer random does not apply to miniwob (use model or oracle)")
        elif endpoint:
            from giraffe_cli.agent_commands import _first_served_model

            backends = evals.endpoint_backends(endpoint, served_model or _first_served_model(endpoint))
        else:
            from giraffe_core import load

            backends = evals.engine_backends(load(model, context_length=context_length))
        return lambda out, progress: evals.run_miniwob(backends, config, out_dir=out, progress=progress)
    if name == "rope-ablation":
        if endpoint or answerer != "model":
            raise typer.BadParameter("rope-ablation loads --model once per rope method: it takes no --endpoint "
                                     "or --answerer")
        ablation = evals.AblationConfig(seed=seed, context_length=context_length, **_drop_none(
            methods=given["--methods"] and _list(given["--methods"], str, "--methods"),
            sizes=given["--sizes"] and _list(given["--sizes"], int, "--sizes"),
            questions_per_size=given["--questions"], max_image_tokens=given["--max-image-tokens"],
            image_size_px=given["--image-size"] and _size(given["--image-size"], "--image-size")))
        return lambda out, progress: evals.run_rope_ablation(model, ablation, out_dir=out, progress=progress)
    image = given["--image-size"] and _size(given["--image-size"], "--image-size")
    if name == "haystack":
        config_h = evals.HaystackConfig(seed=seed, **_drop_none(
            sizes=given["--sizes"] and _list(given["--sizes"], int, "--sizes"),
            modes=given["--modes"] and _list(given["--modes"], str, "--modes"), questions_per_cell=given["--questions"],
            image_size_px=image, max_image_tokens=given["--max-image-tokens"]))
        run, answers = evals.run_haystack, (lambda: evals.oracle_answers(evals.haystack_items(config_h)))
        config: Any = config_h
    elif name == "needle":
        config_n = evals.NeedleConfig(seed=seed, **_drop_none(
            frames=given["--frames"] and _list(given["--frames"], int, "--frames"),
            depths=given["--depths"] and _list(given["--depths"], float, "--depths"),
            needles_per_cell=given["--questions"], frame_size_px=image, max_frame_tokens=given["--max-image-tokens"],
            answer_format=given["--answer-format"]))
        run, answers = evals.run_needle, (lambda: evals.oracle_answers(evals.needle_items(config_n)))
        config = config_n
    else:
        config_r = evals.RecordingQAConfig(seed=seed, **_drop_none(
            sessions=given["--sessions"], events=given["--events"], budget_tokens=given["--budget"], viewport=image))
        run, answers = evals.run_recording_qa, (lambda: evals.expected_answers(config_r))
        config = config_r
    if answerer == "oracle":
        who: Any = evals.OracleAnswerer(answers())
    elif answerer == "random":
        who = evals.RandomAnswerer(seed)
    elif endpoint:
        who = evals.EndpointAnswerer(endpoint, served_model, api_key=api_key)
    else:
        from giraffe_core import load

        who = evals.EngineAnswerer(load(model, context_length=context_length))
    return lambda out, progress: run(who, config, out_dir=out, progress=progress)


def _drop_none(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _show(name: str, report: Any, out: Path, as_json: bool) -> None:
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    if name == "miniwob":
        table = Table(title=f"MiniWoB++: {report.backend}")
        for column in ("task", "episodes", "successes", "success %", "mean reward", "errors"):
            table.add_column(column, justify="right")
        for row in [*report.tasks, report.overall]:
            rate = "-" if row.success_rate is None else f"{100 * row.success_rate:.1f}"
            reward = "-" if row.mean_reward is None else f"{row.mean_reward:+.2f}"
            table.add_row(row.task, str(row.episodes), str(row.successes), rate, reward, str(row.errors))
        console.print(table)
        plot = out / "success.png"
    elif name == "rope-ablation":
        console.print(escape(report.table()))
        plot = out / "accuracy.png"
    else:
        console.print(_summary_table(report))
        plot = out / "accuracy.png"
    console.print(f"results: {escape(str(out / 'results.json'))}; plot: {escape(str(plot))}")
    if not plot.is_file():
        console.print("[yellow]no plot: matplotlib is not installed (pip install 'giraffe\\[evals]')[/]")
    names = [getattr(report, key, None) for key in ("answerer", "model", "backend")]
    if any(n in ("tiny", "local:tiny") or (isinstance(n, dict) and n.get("name") == "tiny") for n in names):
        console.print("[dim]tiny preset: random weights, so its answers are noise; the pipeline is real.[/]")
