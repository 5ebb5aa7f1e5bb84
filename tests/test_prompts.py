"""giraffe_agent.prompts: the system prompt documents every action, and every example in it parses."""

from __future__ import annotations

import re
from typing import get_args

import pytest

from giraffe_agent.actions import ACTION_ADAPTER, Action, ZoomBack
from giraffe_agent.parser import parse_action
from giraffe_agent.prompts import _render, system_prompt
from giraffe_core.errors import ConfigError

#: every action tag of the union, read from the union itself
TAGS = [model.model_fields["action"].default for model in get_args(get_args(Action)[0])]
#: "- `tag`: what it does. `{json example}`"
ACTION_LINE = re.compile(r"^- `(\w+)`: (.+) `(\{.*\})`$", re.MULTILINE)


def _documented(prompt: str) -> dict[str, str]:
    return {m.group(1): m.group(3) for m in ACTION_LINE.finditer(prompt)}


def test_the_union_is_read():
    assert len(TAGS) == len(set(TAGS)) >= 14 and "click" in TAGS and "zoom" in TAGS


@pytest.mark.parametrize("space", ["norm1000", "image_px"])
def test_every_action_of_the_union_is_documented_with_an_example(space):
    documented = _documented(system_prompt(coordinate_space=space))
    assert sorted(documented) == sorted(TAGS), f"undocumented: {sorted(set(TAGS) - set(documented))}"


@pytest.mark.parametrize("space", ["norm1000", "image_px"])
def test_every_example_parses_into_the_action_it_claims(space):
    for tag, example in _documented(system_prompt(coordinate_space=space)).items():
        parsed = parse_action(example, default_space=space)
        assert parsed.action.action == tag, (tag, example)
        assert parsed.style == "json"
        # the example means exactly what the action models read from it: no alias, no field ignored
        expected = ACTION_ADAPTER.validate_json(example)
        if any(getattr(expected, name, None) is not None for name in ("x", "box")):
            expected = expected.model_copy(update={"space": space})  # positions are in the prompt's space
        assert parsed.action == expected, (tag, example)


def test_every_json_object_in_the_prompt_is_a_valid_action():
    prompt = system_prompt()
    objects = re.findall(r'\{"action".*\}', prompt)
    assert len(objects) > len(TAGS)  # the list, plus the example reply
    for text in objects:
        ACTION_ADAPTER.validate_json(text)


def test_the_example_reply_parses_with_its_thought():
    prompt = system_prompt()
    block = re.search(r"Example of a reply:\s*```\n(.*?)```", prompt, re.DOTALL)
    assert block is not None
    parsed = parse_action(block.group(1))
    assert parsed.thought.startswith("The search box is at the top")
    assert parsed.action.action == "type" and parsed.action.submit


def test_the_prompt_states_the_conventions():
    prompt = system_prompt()
    assert "0-1000" in prompt and "top-left corner" in prompt
    assert "step number" in prompt and "URL" in prompt and "time" in prompt
    assert "LAST image" in prompt
    assert "exactly ONE action" in prompt and "Thought:" in prompt
    assert "<!--" not in prompt and "-->" not in prompt
    assert "\n\n\n" not in prompt


def test_pixel_coordinates_replace_the_0_1000_convention():
    prompt = system_prompt(coordinate_space="image_px")
    assert "pixels of the screenshot" in prompt
    assert "0-1000" not in prompt
    assert "0-1000" in system_prompt(coordinate_space="norm1000")


def test_zoom_can_be_left_out():
    prompt = system_prompt(allow_zoom=False)
    assert "zoom" not in _documented(prompt)
    assert sorted(_documented(prompt)) == sorted(set(TAGS) - {ZoomBack.model_fields["action"].default})
    assert "`zoom`" not in prompt


def test_bad_arguments_and_templates_are_config_errors():
    with pytest.raises(ConfigError):
        system_prompt(coordinate_space="pixels")  # type: ignore[arg-type]
    flags = {"zoom": True}
    with pytest.raises(ConfigError, match="unknown condition"):
        _render("<!-- if colour -->\nx\n<!-- end -->", flags)
    with pytest.raises(ConfigError, match="never closed"):
        _render("<!-- if zoom -->\nx", flags)
    with pytest.raises(ConfigError, match="without an 'if'"):
        _render("x\n<!-- end -->", flags)
    assert _render("a\n<!-- if zoom -->\nb\n<!-- end -->\nc", {"zoom": False}) == "a\nc\n"
