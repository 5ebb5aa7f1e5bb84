"""Errors of the training package, in Giraffe's one error tree (:class:`giraffe_core.GiraffeError`).

* :class:`DataError` (a ``ValueError``): a training sample or a data source is bad: a missing or
  corrupt image, an empty conversation, a sample longer than every stage, an unknown field, a file
  that cannot be parsed. Raised when the config says ``on_bad_sample: fail``; with ``skip`` the
  same problem is recorded (file and line) and counted in the mixing report instead.
* :class:`CheckpointError` (an ``OSError``): a checkpoint cannot be written, or resuming finds
  none, or one that belongs to a different configuration.

Configuration problems are :class:`giraffe_core.ConfigError`; missing optional packages
(accelerate, peft, deepspeed, datasets, tensorboard) are :class:`giraffe_core.MissingExtraError`.
"""

from __future__ import annotations

from giraffe_core.errors import GiraffeError

__all__ = ["CheckpointError", "DataError"]


class DataError(GiraffeError, ValueError):
    """A training sample or data source is unusable; the message names the file and line."""

    code = "data-error"


class CheckpointError(GiraffeError, OSError):
    """A checkpoint cannot be written or resumed from."""

    code = "checkpoint-error"
