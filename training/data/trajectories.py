"""Giraffe agent runs -> SFT samples with exactly the context the agent sent.

Every model call recorded in a run's ``trajectory.jsonl`` carries the EXACT chat the timeline
memory rendered for it (:class:`giraffe_agent.trajectory.StoredContext`). The sample for step
``k`` is that chat, rebuilt with :func:`giraffe_agent.trajectory.context_messages` (frames from the
run directory, with the tiers and budgets the memory gave them) and laid out by the same
:func:`giraffe_core.frames.layout_chat` the agent used, followed by the model's reply
(``raw_output``) and ``<|im_end|>`` as the only target. So the first ``token_count`` tokens of the
sample are, token for token, what the agent sent at step ``k`` (tested against runs recorded by
the agent loop). Earlier replies inside the context are part of the prompt, not targets.

Filters (counted in the :class:`~training.data.examples.DataLog`, never silent):

* ``successful_only``: keep runs whose ``result.json`` says they succeeded: a reward in ``info``
  above 0 (MiniWoB++ and other scored environments), else status ``done``; runs without
  ``result.json`` (crashed or still running) are not successful;
* ``first_step`` / ``last_step``: agent steps kept (inclusive);
* replies that did not parse are left out unless ``include_parse_errors``.

A record without a stored context or whose frames are missing is bad data (file and line).
"""

from __future__ import annotations

from pathlib import Path

from giraffe_agent.trajectory import (
    META_FILE,
    TRAJECTORY_FILE,
    Run,
    TrajectoryError,
    context_messages,
    read_run,
)
from training.data.examples import DataLog, Example

__all__ = ["read_trajectories", "run_directories", "run_succeeded"]


def run_succeeded(run: Run) -> bool:
    """Whether a run succeeded: reward above 0 when its result has one, else status ``done``."""
    if run.result is None:
        return False
    reward = run.result.info.get("reward")
    if isinstance(reward, (int, float)) and not isinstance(reward, bool):
        return reward > 0
    return run.result.status == "done"


def run_directories(path: str | Path) -> list[Path]:
    """``path`` when it is a run directory, else its subdirectories that are runs (sorted by name)."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if (p / META_FILE).is_file())


def _line_numbers(run_dir: Path) -> list[int]:
    """Line number of each non-blank line of the trajectory, in order (records map onto them)."""
    data = (run_dir / TRAJECTORY_FILE).read_bytes() if (run_dir / TRAJECTORY_FILE).is_file() else b""
    return [n for n, raw in enumerate(data.split(b"\n"), start=1) if raw.strip()]


def read_trajectories(path: str | Path, log: DataLog, *, label: str, successful_only: bool = True,
                      first_step: int = 0, last_step: int | None = None, include_parse_errors: bool = False,
                      category: str | None = None, max_samples: int | None = None) -> list[Example]:
    """Samples from the runs at ``path`` (a run directory or a directory of runs).

    Returns one :class:`Example` per kept model call: ``messages`` the stored context,
    ``completion`` the reply, ``source`` ``".../trajectory.jsonl:LINE"``.
    """
    runs = run_directories(path)
    if not runs:
        log.bad(label, path, None, "no run directories (folders with meta.json) here")
        return []
    out: list[Example] = []
    for run_dir in runs:
        try:
            run = read_run(run_dir)
        except TrajectoryError as exc:
            log.bad(label, run_dir / TRAJECTORY_FILE, None, f"unreadable run: {exc.message}")
            continue
        if successful_only and not run_succeeded(run):
            log.filter(label, "run not successful", len(run.steps))
            continue
        lines = _line_numbers(run_dir)
        for index, record in enumerate(run.steps):
            if max_samples is not None and len(out) >= max_samples:
                return out
            where = run_dir / TRAJECTORY_FILE
            line = lines[index] if index < len(lines) else None
            log.read[label] += 1
            if record.step < first_step or (last_step is not None and record.step > last_step):
                log.filter(label, "outside the step range")
                continue
            if not record.parse.ok and not include_parse_errors:
                log.filter(label, "reply did not parse")
                continue
            if record.context is None:
                log.bad(label, where, line, "the record holds no rendered context")
                continue
            try:
                messages = context_messages(record, run_dir)
            except TrajectoryError as exc:
                log.bad(label, where, line, exc.message)
                continue
            out.append(Example(messages, f"{where}:{line}", category or "trajectory", completion=record.raw_output,
                               add_generation_prompt=record.context.add_generation_prompt))
    return out
