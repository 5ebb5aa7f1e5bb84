"""``giraffe train CONFIG.yaml``: fine-tune a model as a training config says (the ``train`` extra).

Registered on :data:`giraffe_cli.app.app` when :mod:`giraffe_cli.app` is imported. The training
package (and torch, accelerate, peft) is imported inside the command. Multi-GPU runs go through
accelerate: ``accelerate launch --num_processes 8 -m giraffe_cli train CONFIG.yaml``; only the
main process draws the progress bar.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from giraffe_cli.app import _fail, app, console, err_console

__all__ = ["library_output_to_stderr", "train_command"]


class TrainLogLevel(str, enum.Enum):
    """Log levels of ``giraffe train``."""

    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


def _report_table(report: Any) -> Table:
    table = Table(title="mixture per stage")
    for col in ("stage", "length", "samples", "tokens", "shares (target)", "long (target)", "held back", "reused"):
        table.add_column(col, justify="right" if col not in ("shares (target)",) else "left")
    for s in report.stages:
        shares = ", ".join(f"{c} {v:.0%} ({s.target_shares.get(c, 0):.0%})" for c, v in s.shares.items())
        long = f"{s.long_share:.0%}" + (f" ({s.long_target:.0%})" if s.long_target is not None else "")
        table.add_row(str(s.stage), str(s.length_tokens), str(s.samples), str(s.tokens), shares, long,
                      str(s.held_back), str(s.reused))
    return table


def _stream_handlers(stream: Any) -> list[logging.StreamHandler]:
    """Every logging handler that writes to ``stream`` (DeepSpeed's logger writes to stdout)."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is stream]


def _standard_fds() -> bool:
    """Whether file descriptors 1 and 2 are open (they are not in some embedded interpreters)."""
    try:
        os.fstat(1)
        os.fstat(2)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def library_output_to_stderr() -> Iterator[None]:
    """Send what libraries write to stdout to stderr while the block runs, so that stdout holds
    only the command's own output (``--json``): ``print`` calls, logging handlers bound to stdout
    (DeepSpeed's), and what subprocesses and C code write to file descriptor 1."""
    original = sys.stdout
    handlers = _stream_handlers(original) + ([] if sys.__stdout__ is original else _stream_handlers(sys.__stdout__))
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.setStream(sys.stderr)
    saved = None
    if _standard_fds():
        for stream in (original, sys.__stdout__):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            for stream in (sys.__stdout__, sys.stderr):
                with contextlib.suppress(AttributeError, OSError, ValueError):
                    stream.flush()
            os.dup2(saved, 1)
            os.close(saved)
        for handler, stream in zip(handlers, streams):
            handler.setStream(stream)


def _print_notes(report: Any, as_json: bool) -> None:
    """The records left out, per source and reason (stderr under ``--json``)."""
    for note in report.notes():
        (err_console if as_json else console).print(escape(f"note: {note}"), soft_wrap=True)


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="training config (YAML); see training/configs/"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest checkpoint in output_dir"),
    max_steps: int | None = typer.Option(None, min=1, help="stop after this many optimizer steps in total"),
    output_dir: Path | None = typer.Option(None, help="write here instead of the config's output_dir"),
    report_only: bool = typer.Option(False, "--report-only", help="read the data, print the mixing report, stop"),
    log_level: TrainLogLevel = typer.Option(TrainLogLevel.warning, help="log level of the training library"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON (no progress bar)"),
) -> None:
    """Fine-tune a Qwen-VL model on the ETVLM mixture and agent trajectories."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from giraffe_core import GiraffeError

    logging.basicConfig(level=log_level.value.upper(), format="%(levelname)s %(name)s: %(message)s")
    quiet = library_output_to_stderr() if as_json else contextlib.nullcontext()
    try:
        with quiet:
            from training import Trainer, load_config

            overrides = {"output_dir": str(output_dir)} if output_dir is not None else None
            trainer = Trainer(load_config(config, overrides))
            trainer.setup()
    except GiraffeError as exc:
        _fail(exc)
        return
    report = trainer.report
    _print_notes(report, as_json)
    if report_only:
        if as_json:
            print(json.dumps(report.model_dump(mode="json"), indent=2))
        else:
            console.print(_report_table(report))
            console.print(escape(report.to_text().splitlines()[-1]))
        return
    progress = None if as_json else Progress(
        TextColumn("[bold]train[/] stage {task.fields[stage]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), console=console)
    try:
        if progress is None:
            with library_output_to_stderr():
                result = trainer.fit(resume=resume, max_steps=max_steps)
        else:
            console.print(_report_table(report))
            with progress:
                task = progress.add_task("train", total=trainer.total_steps, stage="-", loss="-")

                def advance(info: Any) -> None:
                    progress.update(task, completed=info.step, stage=f"{info.stage} ({info.length_tokens})",
                                    loss=f"{info.loss:.4f}")

                trainer.callbacks.append(advance)
                result = trainer.fit(resume=resume, max_steps=max_steps)
    except GiraffeError as exc:
        _fail(exc)
        return
    summary = {"steps": result.steps, "total_steps": result.total_steps, "completed": result.completed,
               "first_loss": result.losses[0] if result.losses else None,
               "last_loss": result.losses[-1] if result.losses else None,
               "checkpoint": str(result.checkpoint) if result.checkpoint else None,
               "model_dir": str(result.model_dir) if result.model_dir else None,
               "output_dir": str(result.output_dir), "seconds": round(result.seconds, 2)}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console.print(f"[bold]{result.steps}/{result.total_steps} steps[/], loss {summary['first_loss']} -> "
                  f"{summary['last_loss']}; checkpoint {escape(str(summary['checkpoint']))}")
    if result.model_dir:
        console.print(f"model: {escape(str(result.model_dir))} (load it with giraffe_core.load or --model)")
