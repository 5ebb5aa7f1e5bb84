"""One error tree for the whole SDK.

Every error Giraffe raises on purpose is a :class:`GiraffeError`. Each class also inherits the
built-in exception a caller would naturally catch (``ValueError`` for bad values, ``ImportError``
for a missing optional dependency, ``OSError`` for files), so ``except ValueError`` keeps working.

Messages say what was wrong and what to do about it; ``code`` names the section of
``docs/errors.md`` that explains the error at length.
"""

from __future__ import annotations

__all__ = ["ConfigError", "GiraffeError", "InputError", "MissingExtraError", "ModelLoadError"]


class GiraffeError(Exception):
    """Base class of every error raised on purpose by Giraffe."""

    code: str = "giraffe-error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class ConfigError(GiraffeError, ValueError):
    """A configuration value is invalid (rope parameters, tiers, budgets...)."""

    code = "config-error"


class InputError(GiraffeError, ValueError):
    """An input (tokens, images, grids, messages) is malformed or inconsistent."""

    code = "input-error"


class MissingExtraError(GiraffeError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that fixes it."""

    code = "missing-extra"


class ModelLoadError(GiraffeError, OSError):
    """A model or processor could not be loaded from the given name, directory or hub id."""

    code = "model-load-error"
