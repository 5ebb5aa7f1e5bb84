"""Edges of giraffe_agent.parser: numbers at their limits in every form, the names and keys it maps,
and the bounds on the work one reply may cost.

* No NaN or infinity ever reaches an action, whatever form and field carries it.
* Negative literals in call forms keep their sign; whole-number fields refuse 2.5 (never 2).
* Each coordinate limit (0, 1000 in norm1000, MAX_IMAGE_PX in image_px; UI-TARS' 1000 switch) at
  its edge and one step past it, in every field; a box needs x0 < x1 and y0 < y1.
* Every alias, field alias and key spelling the parser documents, in upper and lower case.
* The scan budget, the nesting depth, the candidate and call counts and the reply length: the last
  input inside each bound parses, the first one past it does not.
* A dotted call (``element.click(...)``, ``pyautogui.click(...)``) is not an action.
"""

from __future__ import annotations

import json
import math

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
    ZoomBack,
)
from giraffe_agent.parser import MAX_IMAGE_PX, MAX_REPLY_CHARS, ParseError, parse_action


def refused(reply: str, default_space: str = "norm1000") -> ParseError:
    """The ParseError ``reply`` raises (and nothing else)."""
    with pytest.raises(ParseError) as caught:
        parse_action(reply, default_space=default_space)
    assert caught.value.feedback.startswith("Could not use your reply")
    return caught.value


# ------------------------------------------------------------------------------ non-finite numbers

#: (template with {} for one number, the same number as a finite control, written for that form)
NUMBER_FORMS = [
    ('{{"action": "click", "x": {}, "y": 5}}', "json"),
    ('{{"action": "click", "x": 5, "y": {}}}', "json"),
    ('{{"action": "drag", "x": 1, "y": 2, "to_x": {}, "to_y": 4}}', "json"),
    ('{{"action": "drag", "x": 1, "y": 2, "to_x": 3, "to_y": {}}}', "json"),
    ('{{"action": "type", "text": "a", "x": {}, "y": 5}}', "json"),
    ('{{"action": "scroll", "x": {}, "y": 5}}', "json"),
    ('{{"action": "select", "x": {}, "y": 5, "value": "v"}}', "json"),
    ('{{"action": "click", "coordinate": [{}, 5]}}', "json"),
    ('{{"action": "click", "coordinate": {{"x": 5, "y": {}}}}}', "json"),
    ('{{"action": "click", "coordinate": [1, 2, {}, 4]}}', "json"),
    ('{{"action": "drag", "start": [1, 2], "end": [{}, 4]}}', "json"),
    ('{{"action": "zoom", "step": 1, "box": [0, 0, {}, 10]}}', "json"),
    ('{{"action": "wait", "seconds": {}}}', "json"),
    ('{{"name": "click", "arguments": {{"x": {}, "y": 5}}}}', "json"),
    ('{{"name": "computer_use", "arguments": {{"action": "left_click", "coordinate": [{}, 5]}}}}', "json"),
    ('{{"name": "computer_use", "arguments": {{"action": "left_click_drag", "start_coordinate": [1, 2], '
     '"coordinate": [3, {}]}}}}', "json"),
    ('{{"name": "computer_use", "arguments": {{"action": "scroll", "pixels": {}}}}}', "json"),
    ('{{"name": "computer_use", "arguments": {{"action": "hscroll", "pixels": {}}}}}', "json"),
    ('{{"name": "computer_use", "arguments": {{"action": "wait", "time": {}}}}}', "json"),
    ("Action: click(start_box='({},5)')", "text"),
    ("Action: drag(start_box='(1,2)', end_box='(3,{})')", "text"),
    ("Action: click(point='<point>5 {}</point>')", "text"),
    ("click({}, 5)", "python"),
    ("drag(1, 2, 3, {})", "python"),
    ("double_click(({}, 5))", "python"),
    ("wait({})", "python"),
    ("scroll('down', 3, {}, 5)", "python"),
]
NON_FINITE = {
    "json": ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", '"nan"', '"NaN"', '"inf"', '"-Infinity"',
             '"1e999"'],
    "text": ["1e400", "1E999", "-1e999"],
    "python": ["1e999", "-1e999", "'nan'", "'inf'", "'-Infinity'", "float('nan')"],
}


def _action_numbers(action) -> list[float]:
    values = [getattr(action, name, None) for name in ("x", "y", "to_x", "to_y", "seconds")]
    return [v for v in [*values, *(getattr(action, "box", None) or ())] if v is not None]


@pytest.mark.parametrize("template,kind", NUMBER_FORMS, ids=[f"{i:02d}" for i in range(len(NUMBER_FORMS))])
def test_no_non_finite_number_reaches_an_action(template, kind):
    control = parse_action(template.format("3"), default_space="image_px")  # the form itself is read
    assert all(math.isfinite(v) for v in _action_numbers(control.action))
    for bad in NON_FINITE[kind]:
        for space in ("norm1000", "image_px"):
            refused(template.format(bad), space)


@pytest.mark.parametrize("pixels", ["NaN", "Infinity", "-Infinity", '"nan"', '"-inf"', "1e999"])
def test_scroll_pixels_that_are_not_finite_are_refused(pixels):
    """``math.ceil`` of a NaN or an infinity raises ValueError / OverflowError: it must never be reached."""
    for verb in ("scroll", "hscroll"):
        error = refused(f'{{"name": "computer_use", "arguments": {{"action": "{verb}", "pixels": {pixels}}}}}')
        assert '"pixels" must be a finite number' in str(error)


# ------------------------------------------------------------------------------ signs and whole numbers


@pytest.mark.parametrize("reply,expected", [
    ("click(+5, 3)", Click(x=5, y=3)),
    ("click(-0, 7)", Click(x=0, y=7)),
    ("click(-0.0, 7)", Click(x=0, y=7)),
    ("wait(+2.5)", Wait(seconds=2.5)),
    ("scroll('up', +4)", Scroll(direction="up", amount=4)),
    ("drag(+1, +2, +3, +4)", Drag(x=1, y=2, to_x=3, to_y=4)),
    ("zoom(+2, [0, 0, +10, 10])", ZoomBack(step=2, box=(0, 0, 10, 10))),
])
def test_signed_literals_in_call_forms_keep_their_value(reply, expected):
    assert parse_action(reply).action == expected


@pytest.mark.parametrize("reply,problem", [
    ("click(-5, 3)", '"x" = -5 is negative'),
    ("click(5, -3.5)", '"y" = -3.5 is negative'),
    ("drag(1, 2, -300, 4)", '"to_x" = -300 is negative'),
    ("double_click((-1, 2))", '"x" = -1 is negative'),
    ("type('a', -1, 2)", '"x" = -1 is negative'),
    ("scroll('down', -3)", '"amount" of scroll'),
    ("wait(-1)", '"seconds" of wait'),
    ("zoom(-1)", '"step" of zoom'),
    ("zoom(1, [0, 0, -10, 10])", '"box" = -10 is negative'),
    ("click(--5, 3)", "must be numbers or quoted strings"),
    ("click(-x, 3)", "must be numbers or quoted strings"),
    ("click(-True, 3)", "must be numbers or quoted strings"),
])
def test_negative_literals_in_call_forms_are_read_as_negative(reply, problem):
    assert problem in str(refused(reply))


#: (a whole-number field in each form, the value) -> refused: 2.5 is never read as 2
WHOLE_NUMBER_FORMS = [
    '{{"action": "scroll", "amount": {}}}',
    '{{"action": "zoom", "step": {}}}',
    '{{"name": "scroll", "arguments": {{"direction": "up", "amount": {}}}}}',
    '{{"name": "computer_use", "arguments": {{"action": "scroll", "direction": "up", "amount": {}}}}}',
    "scroll('down', {})",
    "zoom({})",
    "zoom(step={})",
]


@pytest.mark.parametrize("template", WHOLE_NUMBER_FORMS)
def test_whole_number_fields_refuse_fractions(template):
    field = "step" if "zoom" in template else "amount"
    quote = "'" if "(" in template else '"'  # a string in a Python call or in JSON
    for value in ("2.5", '"2.5"', "2.000001", "1e-9", "49.9"):
        reply = template.format(value.replace('"', quote))
        assert f'"{field}" must be a whole number' in str(refused(reply))
    for value, whole in (("2", 2), ("2.0", 2), ('"2"', 2), ("2e0", 2), ("1", 1)):
        assert getattr(parse_action(template.format(value.replace('"', quote))).action, field) == whole


# ------------------------------------------------------------------------------ coordinate limits

#: every coordinate field of the forms our prompt teaches (space from the reply or the default)
COORDINATE_FORMS = [
    '{{"action": "click", "x": {v}, "y": 1}}',
    '{{"action": "click", "x": 1, "y": {v}}}',
    '{{"action": "drag", "x": 1, "y": 1, "to_x": {v}, "to_y": 1}}',
    '{{"action": "drag", "x": 1, "y": 1, "to_x": 1, "to_y": {v}}}',
    '{{"action": "type", "text": "t", "x": 1, "y": {v}}}',
    '{{"action": "scroll", "x": {v}, "y": 1}}',
    '{{"action": "select", "x": 1, "y": {v}, "value": "v"}}',
    '{{"action": "zoom", "step": 0, "box": [0, 0, {v}, 1]}}',
    '{{"action": "zoom", "step": 0, "box": [0, 0, 1, {v}]}}',
    '{{"action": "click", "coordinate": [{v}, 1]}}',
    '{{"name": "double_click", "arguments": {{"x": 1, "y": {v}}}}}',
    "right_click({v}, 1)",
    "drag(1, 1, 1, {v})",
]


@pytest.mark.parametrize("template", COORDINATE_FORMS)
@pytest.mark.parametrize("space,limit", [("norm1000", 1000), ("image_px", MAX_IMAGE_PX)])
def test_each_coordinate_limit_at_its_edge(template, space, limit):
    for value in (0, 0.0, limit - 0.5, limit):
        if "box" in template and value == 0:
            continue  # a box of no width or height: see test_a_zoom_box_has_area
        action = parse_action(template.format(v=value), default_space=space).action
        assert action.space == space
        assert value in _action_numbers(action)
    for value in (limit + 0.001, limit + 1, 10 * limit):
        refused(template.format(v=value), space)
    for value in (-0.001, -1):
        assert "is negative" in str(refused(template.format(v=value), space))


@pytest.mark.parametrize("limit,value,space", [(MAX_IMAGE_PX, MAX_IMAGE_PX, "image_px")])
def test_qwen_coordinates_are_pixels_up_to_max_image_px(limit, value, space):
    template = '{{"name": "computer_use", "arguments": {{"action": "left_click", "coordinate": [{}, 5]}}}}'
    assert parse_action(template.format(limit)).action == Click(x=value, y=5, space=space)
    assert parse_action(template.format(1001)).action.space == "image_px"  # above 1000, never an error
    assert "beyond any screenshot" in str(refused(template.format(limit + 1)))


@pytest.mark.parametrize("point,space", [
    ("(1000,5)", "norm1000"),      # at most 1000: ambiguous, the default space decides
    ("(5,1000)", "norm1000"),
    ("(1000.5,5)", "image_px"),    # above 1000: only pixels
    ("(5,1001)", "image_px"),
    ("(0,0)", "norm1000"),
    ("(10,10,1002,20)", "image_px"),  # a box: its corners decide, not its centre (506)
])
def test_uitars_switches_to_pixels_only_above_1000(point, space):
    action = parse_action(f"Action: click(start_box='{point}')").action
    assert action.space == space
    assert parse_action(f"Action: click(start_box='{point}')", default_space="image_px").action.space == "image_px"


@pytest.mark.parametrize("end,space", [("(1000,5)", "norm1000"), ("(1001,5)", "image_px")])
def test_uitars_drag_uses_one_space_for_both_points(end, space):
    action = parse_action(f"Action: drag(start_box='(1,2)', end_box='{end}')").action
    assert action.space == space and (action.x, action.y) == (1, 2)


@pytest.mark.parametrize("box,ok", [
    ([10, 10, 11, 11], True),
    ([0, 0, 1000, 1000], True),
    ([10, 10, 10, 50], False),   # zero width
    ([10, 50, 20, 50], False),   # zero height
    ([10, 10, 10, 10], False),   # a point
    ([20, 10, 10, 50], False),   # x0 > x1
    ([10, 50, 20, 10], False),   # y0 > y1
    ([10, 10, 20], False),
    ([10, 10, 20, 20, 30], False),
])
def test_a_zoom_box_has_area(box, ok):
    reply = json.dumps({"action": "zoom", "step": 1, "box": box})
    if ok:
        assert parse_action(reply).action == ZoomBack(step=1, box=tuple(box))
        assert parse_action(f"zoom(1, {box})").action == ZoomBack(step=1, box=tuple(box))
    else:
        assert "x0 < x1 and y0 < y1" in str(refused(reply))
        assert "x0 < x1 and y0 < y1" in str(refused(f"zoom(1, {box})"))


@pytest.mark.parametrize("numbers,ok", [(2, True), (4, True), (3, False), (5, False), (8, False), (9, False)])
def test_a_point_holds_two_numbers_or_a_box_four(numbers, ok):
    values = list(range(10, 10 + 10 * numbers, 10))
    reply = json.dumps({"action": "click", "coordinate": values})
    if ok:
        centre = ((values[0] + values[2]) / 2, (values[1] + values[3]) / 2) if numbers == 4 else None
        expected = (values[0], values[1]) if numbers == 2 else centre
        assert (parse_action(reply).action.x, parse_action(reply).action.y) == expected
    else:
        error = str(refused(reply))
        assert ("too many numbers" in error) is (numbers > 8)


def test_a_box_centre_is_the_mean_of_its_corners():
    for box, centre in (([0, 0, 1, 1], (0.5, 0.5)), ([100, 200, 300, 600], (200, 400)),
                        ([999, 0, 1000, 1000], (999.5, 500))):
        action = parse_action(f"Action: click(start_box='<|box_start|>({','.join(map(str, box))})<|box_end|>')").action
        assert (action.x, action.y) == centre


# ------------------------------------------------------------------------------ Qwen scroll pixels


@pytest.mark.parametrize("pixels,direction,notches", [
    (1, "up", 1), (100, "up", 1), (101, "up", 2), (250, "up", 3), (4999, "up", 50), (5000, "up", 50),
    (10**6, "up", 50), (-1, "down", 1), (-100, "down", 1), (-101, "down", 2), (-10**6, "down", 50),
    ("-300", "down", 3), (0.5, "up", 1),
])
def test_qwen_scroll_pixels_become_notches(pixels, direction, notches):
    arguments = {"action": "scroll", "pixels": pixels}
    action = parse_action(json.dumps({"name": "computer_use", "arguments": arguments})).action
    assert action == Scroll(direction=direction, amount=notches)
    arguments["action"] = "hscroll"
    action = parse_action(json.dumps({"name": "computer_use", "arguments": arguments})).action
    assert action == Scroll(direction={"up": "right", "down": "left"}[direction], amount=notches)


@pytest.mark.parametrize("pixels", [0, 0.0, "0", "-0"])
def test_qwen_scroll_of_zero_pixels_is_refused(pixels):
    reply = json.dumps({"name": "computer_use", "arguments": {"action": "scroll", "pixels": pixels}})
    assert "must not be 0" in str(refused(reply))


# ------------------------------------------------------------------------------ names and fields

#: action name as a model writes it -> (the action it is, with the fields given in ARGS)
ARGS = {
    "click": {"x": 5, "y": 6}, "double_click": {"x": 5, "y": 6}, "right_click": {"x": 5, "y": 6},
    "type": {"text": "hi"}, "key": {"keys": "Enter"}, "drag": {"x": 1, "y": 2, "to_x": 3, "to_y": 4},
    "goto": {"url": "https://a.test/"}, "back": {}, "wait": {"seconds": 2}, "select": {"x": 5, "y": 6, "value": "v"},
    "zoom": {"step": 1}, "done": {"text": "42"}, "fail": {"reason": "no"}, "scroll": {"direction": "up"},
}
EXPECTED = {
    "click": Click(x=5, y=6), "double_click": DoubleClick(x=5, y=6), "right_click": RightClick(x=5, y=6),
    "type": Type(text="hi"), "key": KeyPress(keys="Enter"), "drag": Drag(x=1, y=2, to_x=3, to_y=4),
    "goto": Goto(url="https://a.test/"), "back": Back(), "wait": Wait(seconds=2),
    "select": SelectOption(x=5, y=6, value="v"), "zoom": ZoomBack(step=1), "done": Done(text="42"),
    "fail": Fail(reason="no"), "scroll": Scroll(direction="up"),
}
NAMES = {
    **{tag: tag for tag in EXPECTED},
    "left_click": "click", "tap": "click", "left_single": "click",
    "doubleclick": "double_click", "dblclick": "double_click", "left_double": "double_click",
    "rightclick": "right_click", "right_single": "right_click", "context_click": "right_click",
    "type_text": "type", "input_text": "type", "input": "type", "write": "type",
    "press": "key", "key_press": "key", "keypress": "key", "press_key": "key", "hotkey": "key", "keys": "key",
    "left_click_drag": "drag", "drag_and_drop": "drag",
    "go_to": "goto", "navigate": "goto", "open_url": "goto", "visit_url": "goto",
    "go_back": "back", "navigate_back": "back", "history_back": "back", "press_back": "back",
    "sleep": "wait", "select_option": "select", "zoom_back": "zoom", "zoomback": "zoom",
    "answer": "done", "finish": "done", "finished": "done", "complete": "done", "task_complete": "done",
    "failed": "fail", "give_up": "fail", "infeasible": "fail", "call_user": "fail",
}


@pytest.mark.parametrize("name,tag", sorted(NAMES.items()))
def test_every_action_name_and_alias(name, tag):
    for written in (name, name.upper(), name.replace("_", "-"), f" {name} "):
        assert parse_action(json.dumps({"action": written, **ARGS[tag]})).action == EXPECTED[tag]
        assert parse_action(json.dumps({"name": written, "arguments": ARGS[tag]})).action == EXPECTED[tag]
    refused(json.dumps({"action": name + "x", **ARGS[tag]}))  # control: a near miss is no name


#: (action, a field name a model may use instead of ours, ours)
FIELD_ALIASES = [
    ("type", "content", "text"), ("key", "key", "keys"), ("key", "combo", "keys"), ("key", "hotkey", "keys"),
    ("key", "text", "keys"), ("select", "option", "value"), ("select", "label", "value"), ("select", "text", "value"),
    ("wait", "time", "seconds"), ("wait", "duration", "seconds"), ("wait", "secs", "seconds"),
    ("done", "answer", "text"), ("done", "content", "text"), ("done", "result", "text"),
    ("fail", "text", "reason"), ("fail", "message", "reason"), ("fail", "content", "reason"),
    ("fail", "error", "reason"), ("goto", "href", "url"), ("goto", "link", "url"),
]


@pytest.mark.parametrize("tag,alias,field", FIELD_ALIASES)
def test_every_field_alias(tag, alias, field):
    fields = dict(ARGS[tag])
    fields[alias] = fields.pop(field)
    assert parse_action(json.dumps({"action": tag, **fields})).action == EXPECTED[tag]
    # both names at once: refused, not one of them picked
    assert f'no field "{alias}"' in str(refused(json.dumps({"action": tag, **ARGS[tag], alias: ARGS[tag][field]})))


@pytest.mark.parametrize("typed,submit", [
    ("Action: type(content='hi\\n')", True),
    ("Action: type(content='hi')", False),
    ('{"name": "computer_use", "arguments": {"action": "type", "text": "hi", "press_enter": true}}', True),
    ('{"action": "type", "text": "hi", "press_enter": "yes"}', True),
    ('{"action": "type", "text": "hi", "enter": 0}', False),
])
def test_submit_spellings(typed, submit):
    assert parse_action(typed).action == Type(text="hi", submit=submit)


POINT_FIELDS = {"coordinate": "xy", "point": "xy", "position": "xy", "start": "xy", "start_coordinate": "xy",
                "start_point": "xy", "from": "xy", "end": "to", "to": "to", "end_coordinate": "to", "end_point": "to",
                "coordinate2": "to"}


@pytest.mark.parametrize("alias,ends", sorted(POINT_FIELDS.items()))
def test_every_point_field(alias, ends):
    if ends == "xy":
        assert parse_action(json.dumps({"action": "click", alias: [7, 8]})).action == Click(x=7, y=8)
        assert "both" in str(refused(json.dumps({"action": "click", alias: [7, 8], "x": 1})))
    else:
        reply = {"action": "drag", "x": 1, "y": 2, alias: [7, 8]}
        assert parse_action(json.dumps(reply)).action == Drag(x=1, y=2, to_x=7, to_y=8)
        assert "both" in str(refused(json.dumps({**reply, "to_y": 3})))


@pytest.mark.parametrize("note", ["thought", "thoughts", "reasoning", "explanation", "description", "note",
                                  "comment", "rationale", "reason"])
def test_every_commentary_field_becomes_the_thought(note):
    parsed = parse_action(json.dumps({"action": "back", note: "  the page is wrong  "}))
    assert parsed.action == Back() and parsed.thought == "the page is wrong"
    # except a fail's reason, which is the reason
    if note == "reason":
        assert parse_action(json.dumps({"action": "fail", note: "no"})).action == Fail(reason="no")


#: key spellings -> Playwright names (https://playwright.dev/python/docs/api/class-keyboard#keyboard-press)
KEYS = {
    "ctrl": "Control", "control": "Control", "ctl": "Control", "cmd": "Meta", "command": "Meta", "meta": "Meta",
    "win": "Meta", "windows": "Meta", "super": "Meta", "alt": "Alt", "option": "Alt", "opt": "Alt",
    "shift": "Shift", "enter": "Enter", "return": "Enter", "esc": "Escape", "escape": "Escape", "tab": "Tab",
    "backspace": "Backspace", "back_space": "Backspace", "del": "Delete", "delete": "Delete", "insert": "Insert",
    "ins": "Insert", "home": "Home", "end": "End", "pageup": "PageUp", "page_up": "PageUp", "pgup": "PageUp",
    "pagedown": "PageDown", "page_down": "PageDown", "pgdn": "PageDown", "up": "ArrowUp", "arrowup": "ArrowUp",
    "down": "ArrowDown", "arrowdown": "ArrowDown", "left": "ArrowLeft", "arrowleft": "ArrowLeft",
    "right": "ArrowRight", "arrowright": "ArrowRight", "space": "Space", "spacebar": "Space",
    "capslock": "CapsLock", "caps_lock": "CapsLock",
}
PLAYWRIGHT_KEYS = {"Control", "Meta", "Alt", "Shift", "Enter", "Escape", "Tab", "Backspace", "Delete", "Insert",
                   "Home", "End", "PageUp", "PageDown", "ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Space",
                   "CapsLock"}


@pytest.mark.parametrize("spelling,name", sorted(KEYS.items()))
def test_every_key_spelling(spelling, name):
    assert name in PLAYWRIGHT_KEYS
    for written in (spelling, spelling.upper(), spelling.capitalize()):
        assert parse_action(json.dumps({"action": "key", "keys": written})).action == KeyPress(keys=name)
        assert parse_action(json.dumps({"action": "key", "keys": f"{written}+x"})).action == KeyPress(keys=f"{name}+x")


@pytest.mark.parametrize("written,keys", [
    ("f1", "F1"), ("F12", "F12"), ("f24", "F24"), ("ctrl+f5", "Control+F5"), ("ctrl++", "Control++"),
    ("ctrl-shift-t", "Control+Shift+t"), ("-", "-"), ("ctrl+-", "Control+-"),
    ("ctrl   c", "Control+c"), ("NumpadEnter", "NumpadEnter"), ("ControlOrMeta+a", "ControlOrMeta+a"),
    ("Ä", "Ä"), ("ctrl ä", "Control+ä"),
])
def test_key_combinations(written, keys):
    assert parse_action(json.dumps({"action": "key", "keys": written})).action == KeyPress(keys=keys)


@pytest.mark.parametrize("written", ["f0", "f25", "f100", "ctrl+foo", "numpad_enter", "ctrl+1a", "   "])
def test_unknown_keys_are_refused(written):
    refused(json.dumps({"action": "key", "keys": written}))


def test_keys_as_a_list():
    assert parse_action('{"action": "key", "keys": ["ctrl", "shift", "t"]}').action == KeyPress(keys="Control+Shift+t")
    assert parse_action('{"action": "key", "keys": ["ctrl+shift", "t"]}').action == KeyPress(keys="Control+Shift+t")
    assert parse_action('press("ctrl", "c")').action == KeyPress(keys="Control+c")
    assert "is empty" in str(refused('{"action": "key", "keys": []}'))


# ------------------------------------------------------------------------------ bounds on the work


def test_the_reply_length_limit_is_inclusive():
    action = '{"action": "back"}'
    assert parse_action(" " * (MAX_REPLY_CHARS - len(action)) + action).action == Back()
    assert "characters long" in str(refused(" " * (MAX_REPLY_CHARS - len(action) + 1) + action))


def nested(depth: int, inner: str) -> str:
    return '{"a": ' * depth + inner + "}" * depth


def test_json_nesting_depth_limit():
    """Up to 32 levels a candidate is decoded (so bad JSON is reported); deeper ones are skipped unread."""
    assert "JSON is malformed" in str(refused(nested(31, "x")))
    assert "JSON is malformed" in str(refused(nested(32, "x")))
    assert "no action found" in str(refused(nested(33, "x")))
    assert "no action found" in str(refused(nested(500, "x")))
    for depth in (32, 33, 500):  # a skipped span does not hide the action after it
        assert parse_action(nested(depth, "1") + ' {"action": "back"}').action == Back()


def test_the_scan_budget_is_exact():
    """The budget counts every bracket, quote and backslash looked at, over all candidates of one reply.

    Here the unclosed first candidate scans its 3 opening characters, the n brackets and the 6 of the
    action (n + 9); the second (the last '[' before the action) 7; the action itself 6: n + 22 in all.
    """
    budget = 50_000
    reply = '{"k": ' + "[" * (budget - 22) + '{"action": "back"}'
    assert parse_action(reply).action == Back()
    over = '{"k": ' + "[" * (budget - 21) + '{"action": "back"}'
    assert "not closed" in str(refused(over))


def test_the_scan_budget_bounds_pathological_replies():
    """Thousands of unclosed candidates each scanning to the end would be quadratic; the budget stops it."""
    reply = '{"a": [' * 12_000 + '{"action": "back"}'
    assert len(reply) < MAX_REPLY_CHARS
    assert "not closed" in str(refused(reply))


def test_json_candidate_limit():
    """24 candidates are looked at; an action that is the 25th is not."""
    objects = '{"a": 1} '
    assert parse_action(objects * 23 + '{"action": "back"}').action == Back()
    assert "no action found" in str(refused(objects * 24 + '{"action": "back"}'))


def test_json_list_limit():
    items = ['{"a": 1}'] * 23
    assert parse_action("[" + ", ".join([*items, '{"action": "back"}']) + "]").action == Back()
    assert "no action found" in str(refused("[" + ", ".join([*items, '{"a": 2}', '{"action": "back"}']) + "]"))


def test_tool_calls_nesting_limit():
    one = {"tool_calls": [{"function": {"name": "back", "arguments": {}}}]}
    assert parse_action(json.dumps(one)).action == Back()
    two = {"tool_calls": [one]}
    assert "no action found" in str(refused(json.dumps(two)))


def test_call_limit():
    assert parse_action(" ".join(["back()"] * 24)).action == Back()  # repeats of one action count once
    assert "too many calls" in str(refused(" ".join(["back()"] * 25)))
    assert "24 different actions" in str(refused(" ".join(f"click({i}, 1)" for i in range(24))))


# ------------------------------------------------------------------------------ call forms


@pytest.mark.parametrize("reply", ["element.click(5, 5)", "pyautogui.click(500, 300)", "Action: page.click(x=1, y=2)",
                                   "a.b.type('hi')", "self.back()", "x.click(1,1) and y.click(2,2)",
                                   "_click(5, 5)", "click_(5, 5)", "1click(5, 5)"])
def test_a_dotted_or_longer_name_is_not_an_action(reply):
    assert "no action found" in str(refused(reply))


def test_a_plain_call_next_to_a_dotted_one_is_read():
    assert parse_action("element.click(5, 5) does nothing here; click(7, 8)").action == Click(x=7, y=8)
    assert parse_action("Click(5, 5)").action == Click(x=5, y=5)  # case does not matter
    assert parse_action("a.b(click(5, 5))").action == Click(x=5, y=5)  # an undotted call inside one


@pytest.mark.parametrize("reply", ["mouse_move(1, 2)", "hover(1, 2)", "long_press(start_box='(1,1)')",
                                   "press_home()", "open_app(app_name='x')", "keydown(key='a')", "move_to(1, 2)"])
def test_actions_a_browser_cannot_do_are_named(reply):
    error = refused(reply)
    assert reply.split("(")[0] in str(error)


@pytest.mark.parametrize("reply,problem", [
    ("click(x=1, x=2, y=3)", "got x twice"),
    ("Action: click(start_box='(1,1)', start_box='(2,2)')", "got start_box twice"),
    ("click(1, y=2, **kw)", "uses **"),
    ("click({1: 2}, 3)", "keys are not strings"),
    ("type('a', text='b')", "got text twice"),
    ("click(1, 2, 3)", "at most 2 positional"),
    ("back(1)", "at most 0 positional"),
])
def test_malformed_calls_say_what_is_wrong(reply, problem):
    assert problem in str(refused(reply))


@pytest.mark.parametrize("space", ["pixels", "norm", "", None, 1000])
def test_an_unknown_default_space_is_a_programming_error(space):
    from giraffe_core.errors import InputError

    with pytest.raises(InputError):
        parse_action("back()", default_space=space)  # type: ignore[arg-type]
