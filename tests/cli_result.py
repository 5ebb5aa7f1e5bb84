"""What a ``giraffe`` command run in ``typer.testing.CliRunner`` reported, read from structure, not text.

Tests assert on exit codes, files and these structured results, never on text rich may wrap.
"""

from __future__ import annotations

from typing import Any

import typer


def reported_error(result: Any) -> BaseException | None:
    """The exception a failed command reported: the cause of its ``typer.Exit(2)`` (``_fail`` raises
    it ``from`` the error), or a usage error (``typer.BadParameter``...); ``None`` when it succeeded.

    ``result.exception`` is the ``SystemExit`` the runner caught; the chain under it leads to the error.
    """
    seen: set[int] = set()
    exc = result.exception
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if not isinstance(exc, (SystemExit, typer.Exit)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None

