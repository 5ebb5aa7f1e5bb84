"""Checkpoints that survive a kill: written under a temporary name, renamed when complete.

A checkpoint is ``OUTPUT/checkpoints/step-000120/``: everything ``accelerator.save_state`` writes
(model, optimizer, scheduler, the random states of every process; DeepSpeed's own shards under
ZeRO) plus ``trainer_state.json`` (the step, the config's fingerprint, the losses so far). It is
written to ``step-000120.tmp/`` and renamed only after every file is there, so a SIGKILL at any
moment leaves either a complete checkpoint or a leftover ``.tmp`` folder that is ignored (and
removed on the next save). Only the newest ``keep`` checkpoints are kept.

Metrics go to ``OUTPUT/metrics.jsonl`` (one line per optimizer step). On resume the lines after
the checkpoint's step (written by the killed run) are dropped, so the file reads as one
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from giraffe_agent.trajectory import write_json_atomic
from training.errors import CheckpointError

__all__ = ["Checkpoints", "MetricsLog", "STATE_FILE"]

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
_PREFIX = "step-"


@dataclass
class Checkpoints:
    """The checkpoints of one run under ``directory`` (``OUTPUT/checkpoints``)."""

    directory: Path
    keep: int = 2

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir()
                 if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit()
                 and (p / STATE_FILE).is_file()]
        return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or ``None``."""
        found = self.complete()
        return found[-1] if found else None

    def staging(self, step: int, *, create: bool = True) -> Path:
        """The temporary folder of the checkpoint of ``step``; with ``create`` (the main process
        only), made fresh, with the leftovers of killed saves removed."""
        tmp = self.directory / f"{_PREFIX}{step:06d}.tmp"
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)
            for leftover in self.directory.glob(f"{_PREFIX}*.tmp"):
                shutil.rmtree(leftover, ignore_errors=True)
            tmp.mkdir()
        return tmp

    def commit(self, tmp: Path, step: int, state: dict[str, Any]) -> Path:
        """Write ``state`` into ``tmp``, rename it to the final name, and prune old checkpoints.

        Raises:
            CheckpointError: the folder cannot be written or renamed.
        """
        final = self.directory / f"{_PREFIX}{step:06d}"
        try:
            write_json_atomic(tmp / STATE_FILE, state)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise CheckpointError(f"cannot write the checkpoint {final}: {exc}",
                                  hint="check the disk space and permissions of output_dir") from exc
        for old in self.complete()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint %s", final)
        return final

    @staticmethod
    def state(checkpoint: Path) -> dict[str, Any]:
        """The ``trainer_state.json`` of a checkpoint."""
        try:
            return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {checkpoint / STATE_FILE}: {exc}") from exc


@dataclass
class MetricsLog:
    """``metrics.jsonl``: one JSON line per optimizer step, appended and flushed."""

    path: Path

    def append(self, row: dict[str, Any]) -> None:
        """Append one line (flushed and fsynced)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self) -> list[dict[str, Any]]:
        """Every complete line (a torn last line from a kill is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def truncate(self, step: int) -> None:
        """Keep only the lines of steps ``<= step`` (rewritten atomically)."""
        kept = [r for r in self.rows() if r.get("step", 0) <= step]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)
