"""Prompts for agents: the system prompt that teaches a model our canonical JSON actions.

The text lives in ``system.md`` (package data), a template with conditional blocks:
``<!-- if NAME -->`` ... ``<!-- end -->`` keeps its lines only when NAME holds, where NAME is
``norm1000`` or ``image_px`` (the coordinate space the model is told to use) or ``zoom``.
"""

from __future__ import annotations

import re
from importlib import resources

from giraffe_agent.actions import CoordinateSpace
from giraffe_core.errors import ConfigError

__all__ = ["system_prompt"]

_DIRECTIVE = re.compile(r"<!--\s*(?:if\s+(\w+)|(end))\s*-->")
_COMMENT = re.compile(r"<!--.*?-->[ \t]*\n?", re.DOTALL)


def system_prompt(*, coordinate_space: CoordinateSpace = "norm1000", allow_zoom: bool = True) -> str:
    """The system prompt of a web agent that answers in our canonical JSON actions.

    Args:
        coordinate_space: how the model is told to give positions: ``"norm1000"`` (0-1000 on each
            axis of the screenshot) or ``"image_px"`` (pixels of the screenshot it sees). Parse its
            replies with the same ``default_space``.
        allow_zoom: whether the ``zoom`` action (see an earlier frame again) is offered.

    Raises:
        ConfigError: ``coordinate_space`` is not a coordinate space.
    """
    if coordinate_space not in ("norm1000", "image_px"):
        raise ConfigError(f"coordinate_space must be 'norm1000' or 'image_px', got {coordinate_space!r}")
    template = resources.files(__name__).joinpath("system.md").read_text(encoding="utf-8")
    flags = {"norm1000": coordinate_space == "norm1000", "image_px": coordinate_space == "image_px",
             "zoom": allow_zoom}
    return _render(template, flags)


def _render(template: str, flags: dict[str, bool]) -> str:
    """Keep the lines of the blocks whose condition holds, drop comments, tidy blank lines."""
    kept: list[str] = []
    open_blocks: list[str] = []
    for number, line in enumerate(template.splitlines(), start=1):
        directive = _DIRECTIVE.fullmatch(line.strip())
        if directive is None:
            if all(flags[name] for name in open_blocks):
                kept.append(line)
        elif directive.group(1) is not None:
            if directive.group(1) not in flags:
                raise ConfigError(f"system.md line {number}: unknown condition {directive.group(1)!r}",
                                  hint=f"conditions are {sorted(flags)}")
            open_blocks.append(directive.group(1))
        elif not open_blocks:
            raise ConfigError(f"system.md line {number}: 'end' without an 'if'")
        else:
            open_blocks.pop()
    if open_blocks:
        raise ConfigError(f"system.md: block 'if {open_blocks[-1]}' is never closed")
    text = _COMMENT.sub("", "\n".join(kept))
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
