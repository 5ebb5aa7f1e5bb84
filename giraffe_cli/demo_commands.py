"""``giraffe demo`` (the trained tiny agent on a MiniWoB++ task) and ``giraffe build-demo``
(record, train, evaluate and write the card of that model with the SDK itself).

Registered on :data:`giraffe_cli.app.app` when :mod:`giraffe_cli.app` is imported; the demo
package (torch, Playwright, the trainer) is imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from giraffe_cli.app import _fail, app, console

__all__ = ["build_demo_command", "demo_command"]


@app.command("demo")
def demo_command(
    task: str = typer.Option(None, help="a MiniWoB++ task the demo model learned (default: the one it solves best; "
                                        "see demo/model/README.md)"),
    seed: int = typer.Option(0, min=0, help="episode seed (0-49: evaluation seeds, never seen in training)"),
    model: Path = typer.Option(None, help="a model directory from `giraffe build-demo` (default: demo/model)"),
    out: Path = typer.Option(None, help="the run directory (default: runs/demo-TASK-seed-N, numbered if taken)"),
) -> None:
    """Run the tiny demo agent on a MiniWoB++ task in headless Chromium and write its HTML report."""
    from demo import DEFAULT_TASK, run_demo
    from giraffe_cli.agent_commands import _summary
    from giraffe_core import GiraffeError

    task = task or DEFAULT_TASK
    if out is None:
        out = Path("runs") / f"demo-{task}-seed-{seed}"
        k = 1
        while out.exists():
            k += 1
            out = Path("runs") / f"demo-{task}-seed-{seed}-{k}"
    try:
        result = run_demo(task, seed, out_dir=out, model=model)
    except (GiraffeError, ValueError) as exc:
        _fail(exc)
        return
    _summary(result)
    reward = result.info.get("reward")
    verdict = "solved" if reward is not None and reward > 0 else "not solved"
    console.print(f"{escape(task)} seed {seed}: [bold]{verdict}[/] (MiniWoB reward {reward}); "
                  f"report: {escape(str(result.report))}")


@app.command("build-demo")
def build_demo_command(
    out: Path = typer.Option(Path("runs/demo-build"), help="where recordings, training, evaluation and model go"),
    episodes: int = typer.Option(200, min=1, help="recorded demonstrations per task"),
    eval_seeds: int = typer.Option(50, min=1, max=1000, help="unseen evaluation seeds per task (0 .. N-1)"),
    tasks: str = typer.Option(None, help="comma-separated MiniWoB++ tasks (default: demo.DEMO_TASKS)"),
    jobs: int = typer.Option(4, min=1, help="`giraffe run` processes recording at once (they mostly wait on "
                             "the browser: 5 recorded about 2x the episodes per minute of 2 on 2 cores)"),
    epochs: float = typer.Option(None, min=0.01, help="training passes (default: demo/train.yaml's)"),
    keyboard: bool = typer.Option(True, help="demonstrations fill in forms with the keyboard (Tab, type, Enter); "
                                  "--no-keyboard: clicks"),
    ship: bool = typer.Option(False, "--ship", help="install the result as demo/model (what `giraffe demo` runs)"),
) -> None:
    """Record demonstrations, train the tiny model on them, evaluate it on unseen seeds, write its card."""
    import logging

    from demo import DemoConfig, build_demo
    from giraffe_core import GiraffeError

    logging.basicConfig(level=logging.WARNING)
    try:
        extra = {"tasks": tuple(t.strip() for t in tasks.split(",") if t.strip())} if tasks else {}
        config = DemoConfig(out_dir=out, episodes=episodes, eval_seeds=eval_seeds, jobs=jobs, epochs=epochs,
                            keyboard=keyboard, ship=ship, **extra)
        result = build_demo(config, progress=lambda line: console.print(escape(line)))
    except (GiraffeError, ValueError, RuntimeError) as exc:
        _fail(exc)
        return
    for task, rate in result.success.items():
        console.print(f"{task:>20}: {'-' if rate is None else f'{100 * rate:.0f} %'}")
    console.print(f"model: {result.model_dir} (card: {result.model_dir / 'README.md'}); "
                  f"training {result.train_seconds / 60:.1f} min, "
                  f"loss {result.first_loss:.3f} -> {result.final_loss:.3f}")
