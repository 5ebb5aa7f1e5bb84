"""giraffe_agent.parser: every accepted form on realistic model outputs, round trips, clear errors, a fuzz test."""

from __future__ import annotations

import json
import math
import random
import re
from typing import get_args

import pytest

from giraffe_agent import parser
from giraffe_agent.actions import (
    ACTION_ADAPTER,
    Action,
    Back,
    Click,
    Done,
    DoubleClick,
    Drag,
    Fail,
    Goto,
    KeyPress,
    RightClick,
    Scroll,
    SelectOption,
    Type,
    Wait,
    ZoomBack,
    action_to_json,
)
from giraffe_agent.parser import MAX_IMAGE_PX, MAX_REPLY_CHARS, ParsedAction, ParseError, parse_action
from giraffe_core.errors import GiraffeError, InputError

ACTION_CLASSES = get_args(get_args(Action)[0])

# --------------------------------------------------------------------------- golden replies

#: (reply as a model would write it, expected action, expected style, expected thought)
GOLDEN: list[tuple[str, object, str, str | None]] = [
    # --- our canonical JSON
    ('{"action": "click", "x": 500, "y": 300}', Click(x=500, y=300), "json", None),
    ('Thought: The "Sign in" button is at the top right.\n{"action": "click", "x": 912.5, "y": 41}',
     Click(x=912.5, y=41), "json", 'The "Sign in" button is at the top right.'),
    ("I need to search for the product first.\n\n```json\n"
     '{\n  "action": "type",\n  "text": "blue shirt",\n  "x": 480,\n  "y": 60,\n  "submit": true\n}\n```\n',
     Type(text="blue shirt", x=480, y=60, submit=True), "json", "I need to search for the product first."),
    ("{'action': 'key', 'keys': 'ctrl+a',}", KeyPress(keys="Control+a"), "json", None),
    ('[{"action": "scroll", "direction": "down", "amount": 5}]', Scroll(direction="down", amount=5), "json", None),
    ('**Thought:** the price is visible.\n{"action": "done", "text": "12,99 € — „Blaues Hemd“"}',
     Done(text="12,99 € — „Blaues Hemd“"), "json", "the price is visible."),
    ('{"action": "select", "x": 500, "y": 420, "value": "Blue", "reason": "the colour menu"}',
     SelectOption(x=500, y=420, value="Blue"), "json", "the colour menu"),
    ('{"thought": "wrong page", "action": {"action": "back"}}', Back(), "json", "wrong page"),
    ('{"action": "fail", "reason": "login required"}', Fail(reason="login required"), "json", None),
    ('{"action": "wait", "seconds": "2.5"}', Wait(seconds=2.5), "json", None),
    ('{"action": "zoom", "step": 3, "box": [0, 0, 500, 500]}', ZoomBack(step=3, box=(0, 0, 500, 500)), "json", None),
    ('{"action": "drag", "x": 100, "y": 500, "to_x": 900, "to_y": 500, "space": "image_px"}',
     Drag(x=100, y=500, to_x=900, to_y=500, space="image_px"), "json", None),
    ('{"action": "left_click", "coordinate": [250, 750]}', Click(x=250, y=750), "json", None),
    ('{"action": "goto", "url": "https://example.com/søk?q=ü"}', Goto(url="https://example.com/søk?q=ü"), "json", None),
    ("{'action': 'type', 'text': \"it's here\", 'submit': False}", Type(text="it's here"), "json", None),
    ('<think>\nThe form is complete, so I submit it.\n</think>\n{"action": "key", "keys": "Enter"}',
     KeyPress(keys="Enter"), "json", "The form is complete, so I submit it."),
    ('The list is long.</think>\n\n{"action": "scroll", "direction": "down"}', Scroll(), "json", "The list is long."),
    ('{"action": "click", "x": 10, "y": 10}\n{"action": "click", "x": 10, "y": 10}', Click(x=10, y=10), "json", None),
    # --- tool calls
    ('<tool_call>\n{"name": "click", "arguments": {"x": 132, "y": 877}}\n</tool_call>',
     Click(x=132, y=877), "tool_call", None),
    ('{"type": "function", "function": {"name": "type", "arguments": "{\\"text\\": \\"hello\\", \\"submit\\": true}"}}',
     Type(text="hello", submit=True), "tool_call", None),
    ('{"tool_calls": [{"id": "call_0", "function": {"name": "go_back", "arguments": "{}"}}]}',
     Back(), "tool_call", None),
    ('I will press escape to close the dialog.\n<tool_call>{"name": "press", "arguments": {"key": "esc"}}</tool_call>',
     KeyPress(keys="Escape"), "tool_call", "I will press escape to close the dialog."),
    # --- Qwen2.5-VL computer_use / mobile_use: pixels of the resized image
    ('<tool_call>\n{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [1204, 33]}}\n'
     '</tool_call>',
     Click(x=1204, y=33, space="image_px"), "qwen25vl", None),
    ('The search field is empty.\n<tool_call>\n{"name": "computer_use", "arguments": '
     '{"action": "type", "text": "weather in Seoul"}}\n</tool_call>',
     Type(text="weather in Seoul"), "qwen25vl", "The search field is empty."),
    ('<tool_call>{"name": "computer_use", "arguments": {"action": "key", "keys": ["ctrl", "shift", "t"]}}</tool_call>',
     KeyPress(keys="Control+Shift+t"), "qwen25vl", None),
    ('<tool_call>{"name": "computer_use", "arguments": {"action": "scroll", "pixels": -500}}</tool_call>',
     Scroll(direction="down", amount=5), "qwen25vl", None),
    ('<tool_call>{"name": "computer_use", "arguments": {"action": "scroll", "pixels": 120, '
     '"coordinate": [640, 400]}}</tool_call>',
     Scroll(direction="up", amount=2, x=640, y=400, space="image_px"), "qwen25vl", None),
    ('<tool_call>{"name": "computer_use", "arguments": {"action": "double_click", "coordinate": [88, 412]}}'
     '</tool_call>',
     DoubleClick(x=88, y=412, space="image_px"), "qwen25vl", None),
    ('<tool_call>{"name": "computer_use", "arguments": {"action": "right_click", "coordinate": [88, 412]}}</tool_call>',
     RightClick(x=88, y=412, space="image_px"), "qwen25vl", None),
    ('<tool_call>{"name": "computer_use", "arguments": {"action": "left_click_drag", '
     '"start_coordinate": [10, 20], "coordinate": [300, 20]}}</tool_call>',
     Drag(x=10, y=20, to_x=300, to_y=20, space="image_px"), "qwen25vl", None),
    ('<tool_call>{"name": "computer_use", "arguments": {"action": "wait", "time": 3}}</tool_call>',
     Wait(seconds=3), "qwen25vl", None),
    ('<tool_call>{"name": "computer_use", "arguments": {"action": "terminate", "status": "success"}}</tool_call>',
     Done(), "qwen25vl", None),
    ('<tool_call>{"name": "computer_use", "arguments": {"action": "terminate", "status": "failure"}}</tool_call>',
     Fail(reason="terminated with status 'failure'"), "qwen25vl", None),
    ('<tool_call>{"name": "computer_use", "arguments": {"action": "answer", "text": "27°C"}}</tool_call>\n'
     '<tool_call>{"name": "computer_use", "arguments": {"action": "terminate", "status": "success"}}</tool_call>',
     Done(text="27°C"), "qwen25vl", None),
    ('<tool_call>{"name": "mobile_use", "arguments": {"action": "swipe", "coordinate": [540, 1500], '
     '"coordinate2": [540, 500]}}</tool_call>',
     Drag(x=540, y=1500, to_x=540, to_y=500, space="image_px"), "qwen25vl", None),
    ('<tool_call>{"name": "mobile_use", "arguments": {"action": "system_button", "button": "Back"}}</tool_call>',
     Back(), "qwen25vl", None),
    # --- UI-TARS (0-1000) and UI-TARS-1.5 (pixels)
    ("Thought: I need to open the login form, so I click the \"Log in\" link in the header.\n"
     "Action: click(start_box='<|box_start|>(412,305)<|box_end|>')",
     Click(x=412, y=305), "uitars", 'I need to open the login form, so I click the "Log in" link in the header.'),
    ("Thought: The checkbox.\nAction: left_double(start_box='<|box_start|>(100,200,120,220)<|box_end|>')",
     DoubleClick(x=110, y=210), "uitars", "The checkbox."),
    ("Action: right_single(start_box='(640,360)')", RightClick(x=640, y=360), "uitars", None),
    ("Thought: 拖动滑块到右侧。\nAction: drag(start_box='<|box_start|>(210,500)<|box_end|>', "
     "end_box='<|box_start|>(790,500)<|box_end|>')",
     Drag(x=210, y=500, to_x=790, to_y=500), "uitars", "拖动滑块到右侧。"),
    ("Thought: Copy it.\nAction: hotkey(key='ctrl c')", KeyPress(keys="Control+c"), "uitars", "Copy it."),
    ("Action: hotkey(key='enter')", KeyPress(keys="Enter"), "uitars", None),
    ("Thought: Type the e-mail and submit.\nAction: type(content='ana@example.com\\n')",
     Type(text="ana@example.com", submit=True), "uitars", "Type the e-mail and submit."),
    ("Action: type(content='Don't stop')", Type(text="Don't stop"), "uitars", None),
    ("Action: scroll(start_box='<|box_start|>(500,600)<|box_end|>', direction='down')",
     Scroll(direction="down", x=500, y=600), "uitars", None),
    ("Thought: Loading.\nAction: wait()", Wait(seconds=5), "uitars", "Loading."),
    ("Thought: The order number is shown.\nAction: finished(content='Order #4417')",
     Done(text="Order #4417"), "uitars", "The order number is shown."),
    ("Thought: I cannot solve the CAPTCHA.\nAction: call_user()",
     Fail(reason="the model asked the user for help (call_user)"), "uitars", "I cannot solve the CAPTCHA."),
    ("Thought: UI-TARS-1.5 style.\nAction: click(point='<point>1342 87</point>')",
     Click(x=1342, y=87, space="image_px"), "uitars", "UI-TARS-1.5 style."),
    ("Action: click(start_box='[100, 200, 300, 400]')", Click(x=200, y=300), "uitars", None),
    ("Reflection: the menu opened.\nAction_Summary: pick the item\nAction: click(start_box='(5,5)')",
     Click(x=5, y=5), "uitars", "Reflection: the menu opened.\nAction_Summary: pick the item"),
    # --- plain function calls
    ("click(500, 300)", Click(x=500, y=300), "function", None),
    ('type("hello", submit=true)', Type(text="hello", submit=True), "function", None),
    ('press("Enter")', KeyPress(keys="Enter"), "function", None),
    ('press("cmd", "shift", "p")', KeyPress(keys="Meta+Shift+p"), "function", None),
    ('scroll("down", 3)', Scroll(direction="down", amount=3), "function", None),
    ('The next page is linked below.\ngoto("https://news.ycombinator.com/news?p=2")',
     Goto(url="https://news.ycombinator.com/news?p=2"), "function", "The next page is linked below."),
    ("back()", Back(), "function", None),
    ("wait(2)", Wait(seconds=2), "function", None),
    ('done("The answer is 42.")', Done(text="The answer is 42."), "function", None),
    ("fail('the page is blank')", Fail(reason="the page is blank"), "function", None),
    ("zoom(step=3)", ZoomBack(step=3), "function", None),
    ("drag(100, 200, 300, 400)", Drag(x=100, y=200, to_x=300, to_y=400), "function", None),
    ("double_click((12.5, 99))", DoubleClick(x=12.5, y=99), "function", None),
    ('`select(500, 420, "Blue")`', SelectOption(x=500, y=420, value="Blue"), "function", None),
    ("Action: click(500, 300)", Click(x=500, y=300), "function", None),
]


@pytest.mark.parametrize("reply,expected,style,thought", GOLDEN, ids=[f"{i:02d}-{g[2]}" for i, g in enumerate(GOLDEN)])
def test_golden_replies(reply, expected, style, thought):
    parsed = parse_action(reply)
    assert isinstance(parsed, ParsedAction)
    assert parsed.action == expected
    assert parsed.style == style
    assert parsed.thought == thought


def test_golden_covers_every_style_and_action():
    assert {g[2] for g in GOLDEN} == {"json", "tool_call", "qwen25vl", "uitars", "function"}
    assert {type(g[1]) for g in GOLDEN} == set(ACTION_CLASSES)


# ------------------------------------------------------------------------- coordinate spaces

def test_default_space_applies_to_forms_that_do_not_say():
    for reply in ('{"action": "click", "x": 500, "y": 300}', "click(500, 300)",
                  '{"name": "click", "arguments": {"x": 500, "y": 300}}'):
        assert parse_action(reply, default_space="image_px").action == Click(x=500, y=300, space="image_px")
    # an explicit space wins over the default
    reply = '{"action": "click", "x": 500, "y": 300, "space": "norm1000"}'
    assert parse_action(reply, default_space="image_px").action.space == "norm1000"
    # actions without positions carry no space of their own
    assert parse_action('{"action": "type", "text": "a"}', default_space="image_px").action == Type(text="a")


def test_qwen_coordinates_are_always_pixels():
    reply = '{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [500, 300]}}'
    for default in ("norm1000", "image_px"):
        assert parse_action(reply, default_space=default).action == Click(x=500, y=300, space="image_px")
    big = '{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [2400, 1300]}}'
    assert parse_action(big).action == Click(x=2400, y=1300, space="image_px")


def test_uitars_ambiguous_coordinates_follow_the_default_and_large_ones_are_pixels():
    small = "Action: click(start_box='(500,300)')"
    assert parse_action(small).action.space == "norm1000"
    assert parse_action(small, default_space="image_px").action.space == "image_px"
    large = "Action: drag(start_box='(120,300)', end_box='(1820,300)')"  # one value > 1000: pixels, both points
    assert parse_action(large).action == Drag(x=120, y=300, to_x=1820, to_y=300, space="image_px")


def test_box_is_taken_at_its_centre():
    action = parse_action("Action: click(start_box='<bbox>10 20 30 60</bbox>')").action
    assert (action.x, action.y) == (20, 40)
    action = parse_action('{"action": "click", "coordinate": [10, 20, 30, 60]}').action
    assert (action.x, action.y) == (20, 40)


def test_a_call_in_the_thought_does_not_count_when_an_action_label_follows():
    reply = "Thought: maybe click(1, 1)? No, the real button is lower.\nAction: click(start_box='(5,5)')"
    parsed = parse_action(reply)
    assert parsed.action == Click(x=5, y=5)
    assert parsed.thought == "maybe click(1, 1)? No, the real button is lower."


@pytest.mark.parametrize("reply,expected", [
    ("Action: wait(seconds=2)", Wait(seconds=2)),  # our keyword: 2 s, not UI-TARS's fixed 5 s
    ("Action: type(content='abc\\\\n')", Type(text="abc", submit=True)),  # a doubly escaped newline
    ('Action: finished(content="")', Done()),
    ("Action: scroll(point='<point>500 600</point>', direction='up')", Scroll(direction="up", x=500, y=600)),
    ('{"name": "computer_use", "arguments": {"action": "type", "text": "x", "press_enter": true}}',
     Type(text="x", submit=True)),
    ('{"name": "computer_use", "arguments": {"action": "hscroll", "pixels": -250}}',
     Scroll(direction="left", amount=3)),
    ('{"name": "computer_use", "arguments": {"action": "scroll", "pixels": -1e6}}',
     Scroll(direction="down", amount=50)),
    ('{"name": "computer_use", "arguments": {"action": "key", "keys": ["Return"]}}', KeyPress(keys="Enter")),
    ('{"name": "mobile_use", "arguments": {"action": "system_button", "button": "Enter"}}', KeyPress(keys="Enter")),
    ('{"action": "done", "answer": "7"}', Done(text="7")),
    ('{"action": "fail", "text": "no results"}', Fail(reason="no results")),
    ('{"action": "select", "coordinate": [5, 6], "option": "Red"}', SelectOption(x=5, y=6, value="Red")),
    ('{"action": "click", "arguments": {"x": 5, "y": 6}}', Click(x=5, y=6)),
    ('{"action": "click", "x": "500", "y": "300"}', Click(x=500, y=300)),
    ('{"action": "type", "text": 42}', Type(text="42")),
    ('{"action": "zoom", "step": "4", "box": "(10, 20, 30, 40)"}', ZoomBack(step=4, box=(10, 20, 30, 40))),
])
def test_variants(reply, expected):
    assert parse_action(reply).action == expected


# ---------------------------------------------------------------------------------- keys

@pytest.mark.parametrize("written,playwright", [
    ("ctrl c", "Control+c"), ("Ctrl+C", "Control+C"), ("ctrl-shift-t", "Control+Shift+t"), ("cmd+v", "Meta+v"),
    ("enter", "Enter"), ("RETURN", "Enter"), ("esc", "Escape"), ("pagedown", "PageDown"), ("up", "ArrowUp"),
    ("f5", "F5"), ("alt tab", "Alt+Tab"), ("space", "Space"), ("a", "a"), ("+", "+"), ("NumpadEnter", "NumpadEnter"),
    ("Control+a", "Control+a"),
])
def test_keys_are_mapped_to_playwright_notation(written, playwright):
    assert parse_action(f"Action: hotkey(key='{written}')").action == KeyPress(keys=playwright)
    assert parse_action(f'{{"action": "key", "keys": "{written}"}}').action == KeyPress(keys=playwright)


def test_unknown_key_is_an_error():
    with pytest.raises(ParseError, match="unknown key 'foo'"):
        parse_action('{"action": "key", "keys": "ctrl foo"}')


# ----------------------------------------------------------------------------- round trip

#: at least one instance of every action type (checked below)
SAMPLES = [
    Click(x=500, y=300), Click(x=0, y=1000), Click(x=1234.5, y=88, space="image_px"), DoubleClick(x=1, y=2),
    RightClick(x=999.5, y=0.25), Type(text="hello"),
    Type(text='quote " and \\ and \n newline', x=10, y=20, submit=True),
    Type(text="{{secret:PASSWORD}}", submit=True), Type(text="ünïcødé ✓ 中文", space="image_px"),
    KeyPress(keys="Control+Shift+t"), KeyPress(keys="Enter"), Scroll(), Scroll(direction="left", amount=50, x=5, y=6),
    Drag(x=1, y=2, to_x=3, to_y=4), Drag(x=1, y=2, to_x=3000, to_y=4, space="image_px"),
    Goto(url="https://example.com/a?b=c&d=e#f"), Back(), Wait(), Wait(seconds=0), Wait(seconds=60),
    SelectOption(x=5, y=5, value="Option «2»"), ZoomBack(step=0), ZoomBack(step=12, box=(0, 0, 500, 250.5)),
    Done(), Done(text=""), Done(text="42"), Fail(), Fail(reason="blocked by a CAPTCHA"),
]


def test_samples_cover_every_action_type():
    assert {type(a) for a in SAMPLES} == set(ACTION_CLASSES)


@pytest.mark.parametrize("action", SAMPLES, ids=lambda a: action_to_json(a)[:40])
def test_round_trip_through_canonical_json(action):
    parsed = parse_action(action_to_json(action))
    assert parsed.action == action
    assert parsed.style == "json"
    assert parse_action(f"Thought: step.\n```json\n{action_to_json(action)}\n```").action == action


# ------------------------------------------------------------------------------ errors

ERRORS = [
    ("", "empty"),
    ("   \n\t ", "empty"),
    ("I think the page is still loading, let me look again.", "no action found"),
    ('{"action": "click", "x": 1500, "y": 300}', "outside 0-1000"),
    ('{"action": "click", "x": -3, "y": 300}', "negative"),
    ('{"action": "click", "x": NaN, "y": 300}', "finite number"),
    ('{"action": "click", "x": 1e400, "y": 300}', "finite number"),
    ('{"action": "click", "x": 500}', 'click needs "y"'),
    ('{"action": "click", "x": 5, "y": 5, "button": "middle"}', 'click has no field "button"'),
    ('{"action": "clickk", "x": 5, "y": 5}', "unknown action 'clickk'"),
    ('{"action": 7}', '"action" must be an action name'),
    ('{"action": "click", "x": 5, "y": 5}\n{"action": "type", "text": "hi"}', "2 different actions"),
    ('[{"action": "back"}, {"action": "wait"}]', "2 different actions"),
    ("Action: click(start_box='(1,1)')\n\nclick(start_box='(9,9)')", "2 different actions"),
    ('{"action": "click", "x": 5, "y": ', "not closed"),
    ('{"action": "click" "x": 5, "y": 5}', "JSON is malformed"),
    ('{"action": "scroll", "direction": "sideways"}', "direction"),
    ('{"action": "scroll", "amount": 500}', "amount"),
    ('{"action": "wait", "seconds": 600}', "seconds"),
    ('{"action": "zoom", "step": 2, "box": [500, 0, 100, 100]}', "x0 < x1"),
    ('{"action": "key", "keys": ""}', "empty"),
    ('{"action": "type", "text": ["a"]}', "must be a string"),
    ('{"action": "type", "text": "a", "submit": "maybe"}', "true or false"),
    ("click(x, y)", "numbers or quoted strings"),
    ("click(1, 2, 3)", "at most 2 positional"),
    ("Action: click(start_box='(x1,y1)')", "start_box"),
    ("Action: long_press(start_box='(1,1)')", "not available"),
    ('{"name": "computer_use", "arguments": {"action": "mouse_move", "coordinate": [1, 2]}}', "'mouse_move'"),
    ('{"name": "computer_use", "arguments": {"action": "left_click_drag", "coordinate": [1, 2]}}', "start"),
    ('{"name": "computer_use", "arguments": {"action": "terminate"}}', "status"),
    ('{"name": "computer_use", "arguments": {"action": "scroll", "pixels": 0}}', "must not be 0"),
    ('{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [1e9, 5]}}', "beyond"),
    ('{"function": {"name": "click", "arguments": "{x: 1}"}}', "JSON is malformed"),
    ('{"action": "click", "x": 5, "y": 5, "space": "pixels"}', '"space"'),
]


@pytest.mark.parametrize("reply,problem", ERRORS, ids=[f"{i:02d}" for i in range(len(ERRORS))])
def test_errors_say_what_was_wrong(reply, problem):
    with pytest.raises(ParseError) as caught:
        parse_action(reply)
    error = caught.value
    assert problem in error.feedback
    assert "Reply with exactly one action as JSON" in error.feedback
    assert '{"action": ' in error.feedback  # the canonical form to use
    assert error.code == "parse-error"


def test_feedback_shows_the_example_of_the_action_that_failed():
    with pytest.raises(ParseError) as caught:
        parse_action('{"action": "scroll", "direction": "sideways"}')
    assert '{"action": "scroll", "direction": "down", "amount": 3}' in caught.value.feedback


def test_parse_error_is_a_giraffe_error_and_a_value_error():
    assert issubclass(ParseError, GiraffeError)
    assert issubclass(ParseError, ValueError)


@pytest.mark.parametrize("value", [None, 42, b'{"action": "back"}', ["click(1, 2)"], {"action": "back"}])
def test_non_text_input_is_a_parse_error(value):
    with pytest.raises(ParseError, match="not text"):
        parse_action(value)  # type: ignore[arg-type]


def test_too_long_reply_is_refused_before_it_is_read(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a reply over the limit was read")

    monkeypatch.setattr(parser, "_valid_unicode", never)  # the first step that reads the text
    with pytest.raises(ParseError, match="characters long"):
        parse_action("x" * (MAX_REPLY_CHARS + 1))
    with pytest.raises(AssertionError, match="was read"):  # control: a reply within the limit is read
        parse_action("x" * MAX_REPLY_CHARS)


def test_a_bad_default_space_is_a_programming_error():
    with pytest.raises(InputError):
        parse_action("back()", default_space="pixels")  # type: ignore[arg-type]


def test_prose_with_brackets_and_apostrophes_before_the_action():
    reply = ("Looking at the page [the header isn't loaded] and {maybe} a modal...\n"
             "It's (probably) fine.\n"
             '{"action": "click", "x": 12, "y": 34}')
    parsed = parse_action(reply)
    assert parsed.action == Click(x=12, y=34)
    assert parsed.thought.startswith("Looking at the page")


def test_lone_surrogates_are_replaced():
    parsed = parse_action('{"action": "type", "text": "a\\ud800b"}')
    parsed.action.text.encode("utf-8")  # encodable, so trajectories can be written


# ------------------------------------------------------------------------------ fuzz test

_JUNK = ["{", "}", "[", "]", "(", ")", '"', "'", ",", ":", "\\", "\n", "\x00", "\ud800", "<|box_start|>",
         "<tool_call>", "</think>", "Action:", "Thought:", "```", "null", "None", "NaN", "-Infinity", "1e309",
         "9" * 400, "-1", "0", "1001", "true", "undefined", "🦒", "中文", "\u202e", "\t", " ", "=", "**"]


def _mutate(rng: random.Random, text: str, corpus: list[str]) -> str:
    """One random damage (or combination) applied to a valid reply."""
    kind = rng.randrange(12)
    n = len(text)
    i, j = sorted((rng.randrange(n + 1), rng.randrange(n + 1)))
    if kind == 0:  # delete a range
        return text[:i] + text[j:]
    if kind == 1:  # insert junk
        return text[:i] + rng.choice(_JUNK) + text[i:]
    if kind == 2:  # replace characters with random code points
        chars = list(text)
        for _ in range(rng.randint(1, 5)):
            if chars:
                chars[rng.randrange(len(chars))] = chr(rng.randrange(0x20, 0x3000))
        return "".join(chars)
    if kind == 3:  # truncate
        return text[:i]
    if kind == 4:  # duplicate a segment
        return text[:j] + text[i:j] * rng.randint(2, 5) + text[j:]
    if kind == 5:  # replace every number with something extreme
        extreme = rng.choice(["1e999", "-7", "NaN", "99999999999999999999", "1" * 5000, "0.0000001", "null", "[]",
                              '"500"', "1_000", "0x1F"])
        return re.sub(r"\d+(\.\d+)?", extreme, text, count=rng.randint(0, 3))
    if kind == 6:  # nested brackets around it
        depth = rng.choice([3, 50, 300, 3000])
        opener = rng.choice(["[", "{", "(", "[{"])
        closer = "".join({"[": "]", "{": "}", "(": ")"}[c] for c in reversed(opener))
        return opener * depth + text + closer * depth
    if kind == 7:  # very long string inside
        return text[:i] + rng.choice(["a", "é", "{", "(", '"', "\\"]) * rng.randint(1000, 20000) + text[i:]
    if kind == 8:  # two replies spliced
        return text[:i] + rng.choice(corpus)[j % 50:]
    if kind == 9:  # none-like values
        return rng.choice(["None", "null", "{}", "[]", '{"action": null}', '{"action": {}}', "()", "''", '""',
                           '{"name": null, "arguments": null}', "click()", "type()", "Action:", "Action: ()"])
    if kind == 10:  # pure random text
        return "".join(chr(rng.randrange(0x0, 0x2FFF)) for _ in range(rng.randint(0, 200)))
    return _mutate(rng, _mutate(rng, text, corpus), corpus)  # two damages


_NAMES = ["click", "left_click", "double_click", "right_single", "type", "key", "hotkey", "scroll", "drag", "goto",
          "back", "wait", "select", "zoom", "done", "answer", "terminate", "fail", "call_user", "mouse_move", "", "xyz"]
_FIELDS = ["x", "y", "to_x", "to_y", "text", "keys", "key", "url", "seconds", "amount", "step", "box", "value",
           "reason", "submit", "direction", "space", "coordinate", "start_coordinate", "coordinate2", "pixels", "time",
           "status", "button", "action", "arguments", "thought", "content", "start_box", "end_box", "point"]


def _random_value(rng: random.Random, depth: int = 0) -> object:
    """A JSON-able value of any type, biased to the edges (NaN, huge, negative, nested, empty)."""
    kind = rng.randrange(11)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randint(-10**6, 10**6)
    if kind == 2:
        return rng.choice([float("nan"), float("inf"), -0.0, 1e308, 1e-300, 500.5, -1.5, 10**30])
    if kind == 3:
        return rng.choice(["", "ctrl c", "down", "success", "(1,2)", "<point>1 2</point>", "1e999", "nan", "image_px",
                           "norm1000", "left_click", "a" * 300, "\u0000", "🦒"])
    if kind in (4, 5) and depth < 3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    if kind == 6 and depth < 3:
        return {rng.choice(_FIELDS): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if kind == 7:
        return rng.choice(_NAMES)
    if kind == 8:
        return [rng.randint(0, 2000), rng.randint(0, 2000)]
    return rng.random() * 1500


def _random_structured(rng: random.Random) -> str:
    """A well-formed reply of a random form whose fields and values are random."""
    fields = {rng.choice(_FIELDS): _random_value(rng) for _ in range(rng.randrange(6))}
    form = rng.randrange(5)
    if form == 4:
        args = [repr(_random_value(rng)) for _ in range(rng.randrange(3))]
        args += [f"{k}={_random_value(rng)!r}" for k in list(fields)[:3]]
        return f"Thought: try.\nAction: {rng.choice(_NAMES) or 'click'}({', '.join(args)})"
    if form == 0:
        value: object = {**fields, "action": rng.choice(_NAMES)}
    elif form == 1:
        value = {"name": rng.choice(_NAMES), "arguments": fields}
    elif form == 2:
        value = {"name": "computer_use", "arguments": {**fields, "action": rng.choice(_NAMES)}}
    else:
        value = {"function": {"name": rng.choice(_NAMES), "arguments": json.dumps(fields)}}
    return "<tool_call>\n" + json.dumps(value) + "\n</tool_call>"


def _check_result(parsed: ParsedAction) -> None:
    assert isinstance(parsed, ParsedAction)
    action = parsed.action
    assert ACTION_ADAPTER.validate_python(action.model_dump()) == action
    space = getattr(action, "space", None)
    limit = 1000 if space == "norm1000" else MAX_IMAGE_PX
    values = [getattr(action, name, None) for name in ("x", "y", "to_x", "to_y")]
    values += list(getattr(action, "box", None) or [])
    for value in values:
        if value is not None:
            assert math.isfinite(value) and 0 <= value <= limit, (action, value)
    assert parsed.thought is None or isinstance(parsed.thought, str)


@pytest.mark.slow
def test_fuzz_10000_mutated_replies_raise_nothing_but_parse_error():
    rng = random.Random(20250101)
    corpus = [g[0] for g in GOLDEN] + [action_to_json(a) for a in SAMPLES]
    parsed = failed = 0
    for _ in range(10_000):
        reply = _random_structured(rng) if rng.random() < 0.3 else _mutate(rng, rng.choice(corpus), corpus)
        try:
            result = parse_action(reply, default_space=rng.choice(["norm1000", "image_px"]))
        except ParseError as exc:
            assert isinstance(exc.feedback, str) and exc.feedback
            failed += 1
        else:
            _check_result(result)
            parsed += 1
    # both outcomes are exercised (the work per reply is bounded by tests/test_parser_edges.py, not timed)
    assert parsed > 1000 and failed > 1000, (parsed, failed)
