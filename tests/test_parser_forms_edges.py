"""Edges of giraffe_agent.parser's forms: JSON repair, tool-call envelopes, UI-TARS and Qwen verbs in
full, call forms Python cannot read, think blocks, feedback, and the coercion of each field.

Tables list every spelling a form documents, so a name dropped from the parser's tables fails a row.
"""

from __future__ import annotations

import json
import warnings

import pytest

from giraffe_agent.actions import (
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
)
from giraffe_agent.parser import ParseError, parse_action


def refused(reply: str, default_space: str = "norm1000") -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse_action(reply, default_space=default_space)
    return caught.value


def qwen(**arguments) -> str:
    return json.dumps({"name": "computer_use", "arguments": arguments})


# ------------------------------------------------------------------------------ feedback

#: an invalid reply for every action, and the canonical example its feedback must show
FEEDBACK = {
    "click": '{"action": "click", "x": 5}',
    "double_click": '{"action": "double_click", "x": 5}',
    "right_click": '{"action": "right_click", "y": 5}',
    "type": '{"action": "type"}',
    "key": '{"action": "key", "keys": "ctrl foo"}',
    "scroll": '{"action": "scroll", "direction": "sideways"}',
    "drag": '{"action": "drag", "x": 1, "y": 2}',
    "goto": '{"action": "goto"}',
    "back": '{"action": "back", "steps": 2}',
    "wait": '{"action": "wait", "seconds": 600}',
    "select": '{"action": "select", "x": 1, "y": 1}',
    "zoom": '{"action": "zoom", "step": -1}',
    "done": '{"action": "done", "text": ["a"]}',
    "fail": '{"action": "fail", "reason": ["a"]}',
}


@pytest.mark.parametrize("tag", sorted(FEEDBACK))
def test_feedback_shows_the_example_of_the_action_that_failed(tag):
    feedback = refused(FEEDBACK[tag]).feedback
    assert feedback.startswith("Could not use your reply: ")
    example = feedback.split("e.g. ", 1)[1]
    assert json.loads(example)["action"] == tag


def test_feedback_lists_at_most_four_of_the_different_actions():
    reply = " ".join(json.dumps(a) for a in ({"action": "back"}, {"action": "wait"}, {"action": "done"},
                                            {"action": "fail"}, {"action": "scroll"}))
    problem = str(refused(reply))
    assert "5 different actions" in problem
    assert problem.count('{"action": ') == 4


# ------------------------------------------------------------------------------ think blocks and thoughts


@pytest.mark.parametrize("reply,thought", [
    ('<think>x</think>{"action": "back"}', "x"),
    ('</think>{"action": "back"}', None),  # a closing tag at the very start
    ('a</think>{"action": "back"}', "a"),
    ('<thinking>y</thinking>\n<think>z</think>{"action": "back"}', "z\ny"),
    ('{"action": "back", "thought": "a", "note": "b"}', "a\nb"),
    ('{"action": "back", "thought": "  ", "note": 7}', None),
])
def test_thoughts(reply, thought):
    parsed = parse_action(reply)
    assert parsed.action == Back() and parsed.thought == thought


# ------------------------------------------------------------------------------ JSON repair and scanning


@pytest.mark.parametrize("reply,expected", [
    ("{'action': 'done', 'text': None}", Done()),
    ("{'action': 'type', 'text': 'a', 'submit': True}", Type(text="a", submit=True)),
    ("{'action': 'type', 'text': 'a', 'submit': False,}", Type(text="a")),
    ("{'action': 'type', 'text': 'say \"hi\"'}", Type(text='say "hi"')),
    ("{'action': 'type', 'text': 'it\\'s'}", Type(text="it's")),
    ('{"action": "type", "text": "None True False"}', Type(text="None True False")),  # inside strings: unchanged
    ('{"action": "type", "text": "a } b ] c ) {"}', Type(text="a } b ] c ) {")),
    ('{"action": "type", "text": "q \\" } \\\\"}', Type(text='q " } \\')),
    ("{'action': 'type', 'text': 'a } \"b\" ] c'}", Type(text='a } "b" ] c')),
])
def test_json_repairs_and_brackets_in_strings(reply, expected):
    assert parse_action(reply).action == expected


@pytest.mark.parametrize("key", ["arguments", "parameters", "args", "params", "input"])
def test_every_tool_call_arguments_key(key):
    assert parse_action(json.dumps({"name": "click", key: {"x": 1, "y": 2}})).action == Click(x=1, y=2)
    assert parse_action(json.dumps({"action": "click", key: {"x": 1, "y": 2}})).action == Click(x=1, y=2)
    # the action named inside the arguments does not override the tool's name
    assert parse_action(json.dumps({"name": "click", key: {"action": "zzz", "x": 1, "y": 2}})).action == Click(x=1, y=2)
    assert parse_action(json.dumps({"action": "click", key: {"action": "zzz", "x": 1, "y": 2}})).action == Click(x=1,
                                                                                                               y=2)


@pytest.mark.parametrize("arguments,expected", [("", Back()), (None, Back()), ("{}", Back()), ({}, Back())])
def test_empty_tool_arguments(arguments, expected):
    assert parse_action(json.dumps({"name": "back", "arguments": arguments})).action == expected


@pytest.mark.parametrize("arguments", [[1, 2], 5, "[1, 2]", True])
def test_tool_arguments_must_be_an_object(arguments):
    assert "must be an object" in str(refused(json.dumps({"name": "click", "arguments": arguments})))


# ------------------------------------------------------------------------------ UI-TARS verbs

UITARS = [
    ("click(start_box='(1,2)')", Click(x=1, y=2)),
    ("left_single(start_box='(1,2)')", Click(x=1, y=2)),
    ("left_double(start_box='(1,2)')", DoubleClick(x=1, y=2)),
    ("double_click(start_box='(1,2)')", DoubleClick(x=1, y=2)),
    ("right_single(start_box='(1,2)')", RightClick(x=1, y=2)),
    ("right_click(start_box='(1,2)')", RightClick(x=1, y=2)),
    ("click(start_point='<point>1 2</point>')", Click(x=1, y=2)),
    ("click(point='<point>1 2</point>')", Click(x=1, y=2)),
    ("drag(start_box='(1,2)', end_box='(3,4)')", Drag(x=1, y=2, to_x=3, to_y=4)),
    ("drag(start_point='<point>1 2</point>', end_point='<point>3 4</point>')", Drag(x=1, y=2, to_x=3, to_y=4)),
    ("select(start_box='(1,2)', end_box='(3,4)')", Drag(x=1, y=2, to_x=3, to_y=4)),
    ("hotkey(key='ctrl c')", KeyPress(keys="Control+c")),
    ("hotkey('ctrl', 'c')", KeyPress(keys="Control+c")),
    ("hotkey(hotkey='enter')", KeyPress(keys="Enter")),
    ("press(key='esc')", KeyPress(keys="Escape")),
    ("type(content='hi')", Type(text="hi")),
    ("type(content='hi\\n')", Type(text="hi", submit=True)),
    ("scroll(start_box='(1,2)', direction='up')", Scroll(direction="up", x=1, y=2)),
    ("scroll(point='<point>1 2</point>', direction='left')", Scroll(direction="left", x=1, y=2)),
    ("wait()", Wait(seconds=5)),
    ("finished(content='42')", Done(text="42")),
    ("finished(answer='42')", Done(text="42")),
    ("finished('42')", Done(text="42")),
    ("finished()", Done()),
    ("call_user()", Fail(reason="the model asked the user for help (call_user)")),
    ("press_back()", Back()),
]


@pytest.mark.parametrize("call,expected", UITARS, ids=[c.split("(")[0] + f"-{i}" for i, (c, _) in enumerate(UITARS)])
def test_every_uitars_verb(call, expected):
    parsed = parse_action(f"Thought: t.\nAction: {call}")
    assert parsed.action == expected and parsed.style == "uitars" and parsed.thought == "t."


@pytest.mark.parametrize("verb", ["left_single", "left_double", "right_single"])
def test_a_uitars_verb_without_its_box_names_it(verb):
    assert "start_box" in str(refused(f"Action: {verb}()"))


@pytest.mark.parametrize("verb", ["press_home", "long_press", "open_app", "keydown", "keyup", "mouse_down", "mouse_up",
                                  "move_to"])
def test_uitars_actions_a_browser_cannot_do(verb):
    assert f"{verb}() is not available in this browser" in str(refused(f"Action: {verb}(start_box='(1,1)')"))
    assert f"{verb}() is not available in this browser" in str(refused(f"{verb}()"))


@pytest.mark.parametrize("verb", ["hover", "mouse_move"])
def test_other_moves_are_unknown_actions(verb):
    assert f"unknown action '{verb}'" in str(refused(f"{verb}(1, 2)"))


# ------------------------------------------------------------------------------ calls Python cannot read


@pytest.mark.parametrize("reply,expected", [
    ("Action: type(content='Don't stop')", Type(text="Don't stop")),
    ("Action: type(content='Don't stop').", Type(text="Don't stop")),
    ("Action: type(content='Don't stop')\n\nThat's all (done).", Type(text="Don't stop")),
    ("type('Don't stop')", Type(text="Don't stop")),
    ("Action: finished(content='It's 5')", Done(text="It's 5")),
    (r"Action: type(content='it's a\tb \"q\" c\'d e\\f\ng \x')", Type(text="it's a\tb \"q\" c'd e\\f\ng \\x")),
])
def test_calls_with_an_unescaped_quote_are_read_leniently(reply, expected):
    assert parse_action(reply).action == expected


@pytest.mark.parametrize("reply,tag", [("click(1, 'a)", "click"), ("Action: drag(start_box='(1,2)", "drag"),
                                       ("Action: hover(1, 'a)", None)])
def test_an_unreadable_call_names_it(reply, tag):
    error = refused(reply)
    assert "could not read the arguments" in str(error)
    if tag:
        assert json.loads(error.feedback.split("e.g. ", 1)[1])["action"] == tag


def test_invalid_escapes_in_calls_warn_nothing():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert parse_action(r"type('C:\odd\path')").action == Type(text="C:\\odd\\path")
    assert caught == []


@pytest.mark.parametrize("reply,expected", [
    ("type('a', submit=FALSE)", Type(text="a")),
    ("type('a', submit=True)", Type(text="a", submit=True)),
    ("type('a', submit=true)", Type(text="a", submit=True)),
    ("done(text=None)", Done()),
    ("done(null)", Done()),
    ("done(none)", Done()),
])
def test_named_constants_in_calls(reply, expected):
    assert parse_action(reply).action == expected


@pytest.mark.parametrize("reply", ["click({'x': 1, 2: 3})", "click({1: 2}, 3)", "click({None: 1})"])
def test_a_dict_argument_needs_string_keys(reply):
    assert "keys are not strings" in str(refused(reply))


def test_a_point_string_is_read_from_its_first_1000_characters():
    point = "1 2" + " " * 997 + "3"  # the 3 is the 1001st character
    assert parse_action(json.dumps({"action": "click", "coordinate": point})).action == Click(x=1, y=2)
    assert "point [x, y] or a box" in str(refused(json.dumps({"action": "click", "coordinate": point[:-2] + "3"})))


# ------------------------------------------------------------------------------ Qwen verbs


QWEN = [
    (qwen(action="click", coordinate=[1, 2]), Click(x=1, y=2, space="image_px")),
    (qwen(action="tap", coordinate=[1, 2]), Click(x=1, y=2, space="image_px")),
    (qwen(action="left_click", point=[1, 2]), Click(x=1, y=2, space="image_px")),
    (qwen(action="type", text="a", coordinate=[1, 2]), Type(text="a", x=1, y=2, space="image_px")),
    (qwen(action="key", text="ctrl+c"), KeyPress(keys="Control+c")),
    (qwen(action="key", key="enter"), KeyPress(keys="Enter")),
    (qwen(action="left_click_drag", start_coordinate=[1, 2], coordinate=[3, 4]),
     Drag(x=1, y=2, to_x=3, to_y=4, space="image_px")),
    (qwen(action="drag", start_coordinate=[1, 2], end_coordinate=[3, 4]),
     Drag(x=1, y=2, to_x=3, to_y=4, space="image_px")),
    (qwen(action="swipe", coordinate=[1, 2], coordinate2=[3, 4]), Drag(x=1, y=2, to_x=3, to_y=4, space="image_px")),
    (qwen(action="drag", coordinate=[1, 2], end_coordinate=[3, 4]), Drag(x=1, y=2, to_x=3, to_y=4, space="image_px")),
    (qwen(action="wait", seconds=2), Wait(seconds=2)),
    (qwen(action="visit_url", url="https://a.test/"), Goto(url="https://a.test/")),
    (qwen(action="goto", url="https://a.test/"), Goto(url="https://a.test/")),
    (qwen(action="open_url", text="https://a.test/"), Goto(url="https://a.test/")),
    (qwen(action="history_back"), Back()),
    (qwen(action="back"), Back()),
    (qwen(action="answer", text="7"), Done(text="7")),
    (qwen(action="scroll", direction="up", amount=2), Scroll(direction="up", amount=2)),
    (qwen(action="scroll", direction="up"), Scroll(direction="up")),
    (qwen(action="system_button", button="back"), Back()),
    (qwen(action=" Left_Click ", coordinate=[1, 2]), Click(x=1, y=2, space="image_px")),
]


@pytest.mark.parametrize("reply,expected", QWEN, ids=[f"{i:02d}" for i in range(len(QWEN))])
def test_every_qwen_verb(reply, expected):
    parsed = parse_action(reply)
    assert parsed.action == expected and parsed.style == "qwen25vl"


@pytest.mark.parametrize("status", ["success", "Succeeded", "DONE", " completed "])
def test_qwen_terminate_success(status):
    assert parse_action(qwen(action="terminate", status=status)).action == Done()


@pytest.mark.parametrize("status", ["failure", "fail", "Failed", "infeasible"])
def test_qwen_terminate_failure(status):
    assert parse_action(qwen(action="terminate", status=status)).action == Fail(
        reason=f"terminated with status {status!r}")


@pytest.mark.parametrize("arguments,problem", [
    ({"action": "terminate", "status": "maybe"}, 'terminate needs "status"'),
    ({"action": "terminate", "status": 1}, 'terminate needs "status"'),
    ({"action": "swipe", "coordinate": [1, 2]}, "swipe needs a start and an end"),
    ({"action": "drag", "coordinate": [1, 2]}, "drag needs a start and an end"),
    ({"action": "left_click_drag"}, "left_click_drag needs a start and an end"),
    ({"action": "drag", "start_coordinate": [1, 2]}, '"end_coordinate"'),
    ({"action": "system_button", "button": "home"}, "system_button 'home' is not available"),
    ({"action": "scroll"}, 'scroll needs "pixels"'),
    ({"action": 5}, 'computer_use needs "action"'),
    ({"action": "mouse_move", "coordinate": [1, 2]}, "'mouse_move' is not available"),
])
def test_qwen_errors(arguments, problem):
    assert problem in str(refused(json.dumps({"name": "computer_use", "arguments": arguments})))


@pytest.mark.parametrize("tool", ["computer_use", "mobile_use", "computer", "browser_use", " Computer_Use "])
def test_every_qwen_tool_name(tool):
    reply = json.dumps({"name": tool, "arguments": {"action": "left_click", "coordinate": [1, 2]}})
    assert parse_action(reply).action == Click(x=1, y=2, space="image_px")


# ------------------------------------------------------------------------------ field coercion


@pytest.mark.parametrize("fields", [{"x": 5}, {"y": 5}])
def test_one_position_field_is_enough_for_the_default_space(fields):
    reply = json.dumps({"action": "type", "text": "a", **fields})
    assert parse_action(reply, default_space="image_px").action.space == "image_px"
    reply = json.dumps({"action": "scroll", **fields})
    assert parse_action(reply, default_space="image_px").action.space == "image_px"
    assert parse_action('{"action": "type", "text": "a"}', default_space="image_px").action.space == "norm1000"


@pytest.mark.parametrize("fields,expected", [
    ({"action": "goto", "url": 12345}, Goto(url="12345")),
    ({"action": "select", "x": 1, "y": 1, "value": 2}, SelectOption(x=1, y=1, value="2")),
    ({"action": "fail", "reason": 404}, Fail(reason="404")),
    ({"action": "done", "text": 7.5}, Done(text="7.5")),
    ({"action": "scroll", "direction": " DOWN "}, Scroll(direction="down")),
    ({"action": "type", "text": "a", "submit": 1}, Type(text="a", submit=True)),
    ({"action": "type", "text": "a", "submit": 0}, Type(text="a")),
    ({"action": "type", "text": "a", "submit": " Yes "}, Type(text="a", submit=True)),
    ({"action": "type", "text": "a", "submit": "no"}, Type(text="a")),
    ({"action": "wait", "seconds": " 3 "}, Wait(seconds=3)),
])
def test_field_values_are_coerced(fields, expected):
    assert parse_action(json.dumps(fields)).action == expected


@pytest.mark.parametrize("fields,problem", [
    ({"action": "wait", "seconds": True}, '"seconds" must be a number'),
    ({"action": "wait", "seconds": [1]}, '"seconds" must be a number'),
    ({"action": "type", "text": "a", "submit": 2}, '"submit" must be true or false'),
    ({"action": "type", "text": "a", "submit": "maybe"}, '"submit" must be true or false'),
    ({"action": "goto", "url": True}, '"url" of goto must be a string'),
    ({"action": "scroll", "direction": 3}, '"direction" of scroll'),
    ({"action": "scroll", "amount": True}, '"amount" must be a number'),
])
def test_field_values_that_cannot_be_coerced(fields, problem):
    assert problem in str(refused(json.dumps(fields)))
