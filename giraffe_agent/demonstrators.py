"""Scripted MiniWoB++ demonstrators: the replies a good model would write, computed from the DOM.

:func:`miniwob_demonstrator` returns a function for :class:`~giraffe_agent.backends.ScriptedBackend`
that solves one MiniWoB++ task step by step. It writes MODEL-STYLE TEXT (a short ``Thought:`` line
and one action, in our canonical JSON, UI-TARS or plain-function form; ``thoughts=False`` drops the
``Thought:`` line from the JSON and function forms), never Playwright calls, so everything it does
goes through the agent loop's parser, coordinate transform and act path, exactly like a model's
reply. That makes its runs usable as training trajectories::

    from giraffe_agent import Agent, BrowserConfig, MiniWoBEnv, MiniWoBServer, ScriptedBackend
    from giraffe_agent.demonstrators import miniwob_demonstrator

    with MiniWoBServer() as server:
        env = MiniWoBEnv("login-user", 7, server, config=BrowserConfig(viewport_css=(160, 210),
                                                                       capture_elements=True))
        backend = ScriptedBackend(miniwob_demonstrator("login-user", style="uitars"), name="demo")
        result = Agent("Solve the task shown at the top of the screen.", env, backend, out_dir="runs/demo").run()
    result.info["reward"]   # 1.0: MiniWoB's own reward

What a demonstrator reads (and nothing else, so that its trajectories hold only what a model could
have known plus the page's DOM):

* the DOM elements of the current observation (``request.observation.elements``; the environment
  must be created with ``BrowserConfig(capture_elements=True)``): boxes in CSS pixels, texts, ids,
  classes, and the current values of inputs. The instruction is the text of the element with id
  ``"query"`` (MiniWoB's yellow box at the top of the screen);
* the coordinate transform of the current frame (``request.transform``): an element's centre in
  CSS pixels (or, when another element covers the centre, its uncovered point nearest to it)
  becomes model coordinates with ``transform.from_css`` (0-1000 by default);
* its own previous reply, as it appears in the rendered context (the last assistant turn): the
  UI-TARS form has no "type at a position", so a field is clicked first and typed into on the
  next step, and a field holding wrong text is clicked, then select-all, then typed over.

Multi-step tasks decide from the page's current state, so they recover after an interruption:
``login-user`` types the username into the username field while that field does not hold it, then
the password, then clicks Login; ``enter-password`` types the password into the password field,
then into the verify field, then clicks Submit.

With ``keyboard=True`` forms are filled in as a keyboard user does: Tab from the page to the first
field, type into the focused field, Tab to the next field and finally to the form's button, then
Enter (the task pages put their fields and the button in that tab order). It reads the focus from
the DOM (``Element.focused``), so where the focus is not where Tab would come from (e.g. after an
interruption) it clicks, as without the keyboard mode. ``focus-text`` is then one Tab.

Tasks (:data:`MINIWOB_DEMONSTRATED_TASKS`): ``click-test``, ``click-test-2``, ``click-button``,
``click-link``, ``click-dialog``, ``focus-text``, ``focus-text-2``, ``enter-text``,
``enter-text-2`` (the name in all lower or all upper case letters), ``enter-text-dynamic``,
``enter-password``, ``login-user``. When what the task needs is not on the
screen (no instruction, no matching element), the reply is a ``fail`` action saying why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from giraffe_agent.actions import Click, CoordinateSpace, KeyPress, Type
from giraffe_agent.backends.base import BackendRequest
from giraffe_agent.envs.base import Element
from giraffe_agent.parser import ParseError, parse_action
from giraffe_core.errors import InputError

__all__ = ["DemoStyle", "MINIWOB_DEMONSTRATED_TASKS", "UnknownTaskError", "miniwob_demonstrator"]

#: the forms a demonstrator writes its actions in (:data:`~giraffe_agent.parser.ParseStyle` names)
DemoStyle = Literal["json", "uitars", "function"]

_SELECT_ALL = "Control+a"


class UnknownTaskError(InputError):
    """No demonstrator exists for the task (the message lists the tasks that have one)."""


@dataclass(frozen=True)
class _Intent:
    """What to do next: click an element, type (at a field or into the focused one), press keys, or give up."""

    kind: Literal["click", "type", "key", "fail"]
    thought: str
    element: Element | None = None
    text: str = ""


_Solver = Callable[[list[Element], str, "_Context"], _Intent]


@dataclass(frozen=True)
class _Context:
    """What a solver may use besides the DOM: the style, and its own previous action on this screen."""

    style: DemoStyle
    previous: Click | Type | KeyPress | None
    to_css: Callable[[float, float, CoordinateSpace], tuple[float, float]]
    keyboard: bool = False


# ------------------------------------------------------------------------------------------------
# reading the page
# ------------------------------------------------------------------------------------------------


def _query(elements: list[Element]) -> str | None:
    """MiniWoB's instruction: the text of the element with id ``query``."""
    return next((e.text for e in elements if e.id == "query"), None)


def _by_id(elements: list[Element], element_id: str) -> Element | None:
    return next((e for e in elements if e.id == element_id), None)


def _inside(element: Element, x: float, y: float) -> bool:
    left, top, width, height = element.box
    return left <= x <= left + width and top <= y <= top + height


def _points_at(action: Click | Type | KeyPress | None, element: Element, ctx: _Context) -> bool:
    """Whether the previous action clicked ``element`` (a click, or a type that clicked first)."""
    if isinstance(action, (Click, Type)) and action.x is not None and action.y is not None:
        return _inside(element, *ctx.to_css(action.x, action.y, action.space))
    return False


def _visible_point(target: Element, elements: list[Element]) -> tuple[float, float] | None:
    """Where to click ``target``, CSS px: its centre, or when an element painted later covers the
    centre (e.g. click-test-2's buttons may overlap), the uncovered point of a grid over it nearest
    to the centre; ``None`` when it is covered everywhere.

    Elements later in document order that overlap ``target`` without lying inside it are taken as
    covering it (what lies inside it is its own content, such as a label in a button).
    """
    left, top, width, height = target.box
    later = elements[elements.index(target) + 1:] if target in elements else []

    def contained(e: Element) -> bool:
        x, y, w, h = e.box
        return x >= left and y >= top and x + w <= left + width and y + h <= top + height

    covers = [e for e in later if not contained(e)]
    cx, cy = target.center_css
    if not any(_inside(e, cx, cy) for e in covers):
        return cx, cy
    margin_x, margin_y = min(2.0, width / 4), min(2.0, height / 4)
    grid = [(left + margin_x + (width - 2 * margin_x) * i / 8, top + margin_y + (height - 2 * margin_y) * j / 8)
            for i in range(9) for j in range(9)]
    free = [(x, y) for x, y in grid if not any(_inside(e, x, y) for e in covers)]
    return min(free, key=lambda p: (p[0] - cx) ** 2 + (p[1] - cy) ** 2) if free else None


def _fail(why: str) -> _Intent:
    return _Intent("fail", f"I cannot go on: {why}.", text=why)


def _fill(field: Element, wanted: str, what: str, ctx: _Context) -> _Intent | None:
    """The next action that makes ``field`` hold ``wanted``; ``None`` when it already does."""
    value = field.value or ""
    if value == wanted:
        return None
    previous = ctx.previous
    if value and isinstance(previous, KeyPress) and previous.keys == _SELECT_ALL:
        return _Intent("type", f"The {what} is selected; I type {wanted!r} over it.", text=wanted)
    if value and _points_at(previous, field, ctx):
        return _Intent("key", f"The {what} holds the wrong text; I select all of it.", text=_SELECT_ALL)
    if value:
        return _Intent("click", f"The {what} holds the wrong text; I click into it first.", field)
    if ctx.style == "uitars":  # UI-TARS types into the focused field: click it first
        if _points_at(previous, field, ctx):
            return _Intent("type", f"The {what} is focused; I type {wanted!r}.", text=wanted)
        return _Intent("click", f"I click into the {what} to type {wanted!r} there.", field)
    return _Intent("type", f"I type {wanted!r} into the {what}.", field, wanted)


def _has_focus(element: Element | None, elements: list[Element]) -> bool:
    """Whether the keyboard focus is on ``element`` (``None``: on no element, i.e. the page body)."""
    if element is None:
        return not any(e.focused for e in elements)
    return element.focused


def _form(fields: list[tuple[Element, str, str]], button: Element, click_thought: str, elements: list[Element],
          ctx: _Context) -> _Intent:
    """The next action of a form: make each field hold its value, in order, then press ``button``.

    ``fields`` are ``(field, wanted, what)`` in the page's tab order, ``button`` right after them.
    Without ``keyboard`` fields are typed into at their position and the button is clicked. With it
    the focus moves as a keyboard user moves it: Tab from the page (to the first field) or from the
    field before, type into the focused field, select-all over a wrong value, and Tab to the button,
    then Enter. Where the focus is elsewhere (e.g. after an interruption) it clicks, as without.
    """
    tab_from: list[Element | None] = [None, *(f for f, _, _ in fields)]  # where Tab to each field comes from
    for i, (field, wanted, what) in enumerate(fields):
        value = field.value or ""
        if value == wanted:
            continue
        if ctx.keyboard and field.focused:
            previous = ctx.previous
            if not value or (isinstance(previous, KeyPress) and previous.keys == _SELECT_ALL):
                return _Intent("type", f"The {what} has the focus; I type {wanted!r}.", text=wanted)
            return _Intent("key", f"The {what} holds the wrong text; I select all of it.", text=_SELECT_ALL)
        if ctx.keyboard and _has_focus(tab_from[i], elements):
            return _Intent("key", f"I move the focus to the {what} with Tab.", text="Tab")
        step = _fill(field, wanted, what, ctx)
        if step is not None:  # always: the field does not hold its value
            return step
    if ctx.keyboard and button.focused:
        return _Intent("key", f"The {button.text} button has the focus; I press Enter.", text="Enter")
    if ctx.keyboard and _has_focus(tab_from[-1], elements):  # the last field
        return _Intent("key", f"The form is filled in; I move the focus to the {button.text} button with Tab.",
                       text="Tab")
    return _Intent("click", click_thought, button)


def _instruction(elements: list[Element], pattern: str) -> re.Match[str] | _Intent:
    query = _query(elements)
    if query is None:
        return _fail("the task's instruction is not on the screen")
    match = re.fullmatch(pattern, query.strip())
    if match is None:
        return _fail(f"I do not understand the instruction {query!r}")
    return match


# ------------------------------------------------------------------------------------------------
# the tasks
# ------------------------------------------------------------------------------------------------


def _click_test(elements: list[Element], query: str, ctx: _Context) -> _Intent:
    button = _by_id(elements, "subbtn")
    if button is None:
        return _fail("there is no button on the screen")
    return _Intent("click", f"The task says {query!r}; I click the {button.text!r} button.", button)


def _click_test_2(elements: list[Element], query: str, ctx: _Context) -> _Intent:
    match = _instruction(elements, r"Click button (\S+)\.")
    if isinstance(match, _Intent):
        return match
    label = match.group(1)
    button = next((e for e in elements if e.tag == "button" and e.text == label), None)
    if button is None:
        return _fail(f"there is no button labelled {label!r}")
    return _Intent("click", f"I click the button labelled {label!r}.", button)


def _click_button(elements: list[Element], query: str, ctx: _Context) -> _Intent:
    match = _instruction(elements, r'Click on the "(.*)" button\.')
    if isinstance(match, _Intent):
        return match
    label = match.group(1)
    button = next((e for e in elements if e.tag == "button" and e.text == label), None)
    if button is None:
        return _fail(f"there is no button labelled {label!r}")
    return _Intent("click", f"The task asks for the {label!r} button; I click it.", button)


def _click_link(elements: list[Element], query: str, ctx: _Context) -> _Intent:
    match = _instruction(elements, r'Click on the link "(.*)"\.')
    if isinstance(match, _Intent):
        return match
    label = match.group(1)
    link = next((e for e in elements if "alink" in e.classes.split() and e.text == label), None)
    if link is None:
        return _fail(f"there is no link {label!r}")
    return _Intent("click", f"I click the link {label!r}.", link)


def _click_dialog(elements: list[Element], query: str, ctx: _Context) -> _Intent:
    close = next((e for e in elements if e.tag == "button" and "ui-dialog-titlebar-close" in e.classes.split()),
                 None)
    if close is None:
        return _fail("there is no dialog with a close button")
    return _Intent("click", "I close the dialog with the x in its title bar.", close)


def _focus_text(elements: list[Element], query: str, ctx: _Context) -> _Intent:
    field = _by_id(elements, "tt")
    if field is None:
        return _fail("there is no text field")
    if ctx.keyboard and _has_focus(None, elements):  # Tab from the page focuses its one field
        return _Intent("key", "I move the focus into the text field with Tab.", text="Tab")
    return _Intent("click", "I click into the text field to focus it.", field)


def _text_field_form(elements: list[Element], wanted: str, ctx: _Context) -> _Intent:
    """The enter-text pages' one text field (``tt``): make it hold ``wanted``, then press Submit."""
    field, submit = _by_id(elements, "tt"), _by_id(elements, "subbtn")
    if field is None or submit is None:
        return _fail("the text field or the Submit button is missing")
    return _form([(field, wanted, "text field")], submit, f"The field holds {wanted!r}; I press Submit.", elements, ctx)


def _enter_text(elements: list[Element], query: str, ctx: _Context) -> _Intent:
    match = _instruction(elements, r'Enter "(.*)" into the text field and press Submit\.')
    if isinstance(match, _Intent):
        return match
    return _text_field_form(elements, match.group(1), ctx)


def _enter_text_2(elements: list[Element], query: str, ctx: _Context) -> _Intent:
    match = _instruction(elements, r'Type "(.*)" in all (lower|upper) case letters in the text input '
                                   r'and press Submit\.')
    if isinstance(match, _Intent):
        return match
    wanted = match.group(1).lower() if match.group(2) == "lower" else match.group(1).upper()
    return _text_field_form(elements, wanted, ctx)


def _focus_text_2(elements: list[Element], query: str, ctx: _Context) -> _Intent:
    match = _instruction(elements, r"Focus into the (\d+)(?:st|nd|rd|th) input textbox\.")
    if isinstance(match, _Intent):
        return match
    n = int(match.group(1))
    inputs = [e for e in elements if e.tag == "input"]
    # the page names its fields tt1, tt2, tt3 in document order; without those ids, the n-th input
    field = _by_id(elements, f"tt{n}") or (inputs[n - 1] if 1 <= n <= len(inputs) else None)
    if field is None:
        return _fail(f"there is no text field number {n}")
    return _Intent("click", f"The task asks for text field number {n}; I click into it to focus it.", field)


def _enter_password(elements: list[Element], query: str, ctx: _Context) -> _Intent:
    match = _instruction(elements, r'Enter the password "(.*)" into both text fields and press submit\.')
    if isinstance(match, _Intent):
        return match
    password, verify = _by_id(elements, "password"), _by_id(elements, "verify")
    submit = _by_id(elements, "subbtn")
    if password is None or verify is None or submit is None:
        return _fail("the password form is incomplete")
    wanted = match.group(1)
    return _form([(password, wanted, "password field"), (verify, wanted, "verify password field")], submit,
                 "Both fields hold the password; I click Submit.", elements, ctx)


def _login_user(elements: list[Element], query: str, ctx: _Context) -> _Intent:
    match = _instruction(elements, r'Enter the username "(.*)" and the password "(.*)" into the text fields '
                                   r'and press login\.')
    if isinstance(match, _Intent):
        return match
    user, password = _by_id(elements, "username"), _by_id(elements, "password")
    login = _by_id(elements, "subbtn")
    if user is None or password is None or login is None:
        return _fail("the login form is incomplete")
    return _form([(user, match.group(1), "username field"), (password, match.group(2), "password field")], login,
                 "Username and password are filled in; I click Login.", elements, ctx)


_TASKS: dict[str, _Solver] = {
    "click-test": _click_test,
    "click-test-2": _click_test_2,
    "click-button": _click_button,
    "click-link": _click_link,
    "click-dialog": _click_dialog,
    "focus-text": _focus_text,
    "focus-text-2": _focus_text_2,
    "enter-text": _enter_text,
    "enter-text-dynamic": _enter_text,  # the same page and instruction; the answer is a random string
    "enter-text-2": _enter_text_2,
    "enter-password": _enter_password,
    "login-user": _login_user,
}

#: the MiniWoB++ tasks :func:`miniwob_demonstrator` can solve
MINIWOB_DEMONSTRATED_TASKS: tuple[str, ...] = tuple(_TASKS)


# ------------------------------------------------------------------------------------------------
# writing the reply
# ------------------------------------------------------------------------------------------------


def _quote_single(text: str) -> str:
    """A Python single-quoted string literal (UI-TARS writes ``content='...'``)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _reply(intent: _Intent, request: BackendRequest, style: DemoStyle, space: CoordinateSpace,
           thoughts: bool = True) -> str:
    point: tuple[int, int] | None = None
    if intent.element is not None:
        css = _visible_point(intent.element, list(request.observation.elements or ()))
        if css is None:
            intent = _fail(f"the {intent.element.tag} {intent.element.text!r} is covered by other elements")
        else:
            x, y = request.transform.from_css(*css, space)
            point = (round(x), round(y))
    extra = {"space": space} if space != "norm1000" else {}
    if style == "json":
        if intent.kind == "click":
            data: dict = {"action": "click", "x": point[0], "y": point[1], **extra}  # type: ignore[index]
        elif intent.kind == "type":
            data = {"action": "type", "text": intent.text}
            if point is not None:
                data.update(x=point[0], y=point[1], **extra)
        elif intent.kind == "key":
            data = {"action": "key", "keys": intent.text}
        else:
            data = {"action": "fail", "reason": intent.text}
        action = json.dumps(data)
    elif style == "function":
        suffix = ', space="image_px"' if extra else ""
        if intent.kind == "click":
            action = f"click({point[0]}, {point[1]}{suffix})"  # type: ignore[index]
        elif intent.kind == "type":
            where = f", {point[0]}, {point[1]}{suffix}" if point is not None else ""
            action = f"type({json.dumps(intent.text)}{where})"
        elif intent.kind == "key":
            action = f"key({json.dumps(intent.text)})"
        else:
            action = f"fail({json.dumps(intent.text)})"
    else:  # uitars
        if intent.kind == "click":
            action = f"click(start_box='({point[0]},{point[1]})')"  # type: ignore[index]
        elif intent.kind == "type":
            action = f"type(content={_quote_single(intent.text)})"
        elif intent.kind == "key":
            action = f"hotkey(key={_quote_single(intent.text.replace('+', ' ').lower())})"
        else:
            action = "call_user()"
        return f"Thought: {intent.thought}\nAction: {action}"  # the UI-TARS form always has its Thought
    return f"Thought: {intent.thought}\n{action}" if thoughts else action


def _previous_action(request: BackendRequest, space: CoordinateSpace) -> Click | Type | KeyPress | None:
    """The action of the last assistant turn of the context (this demonstrator's previous reply, with
    or without its ``Thought:`` line)."""
    replies = [m["content"] for m in request.context.messages if m.get("role") == "assistant"]
    if not replies or not isinstance(replies[-1], str):
        return None
    try:
        action = parse_action(replies[-1], default_space=space).action
    except ParseError:
        return None
    return action if isinstance(action, (Click, Type, KeyPress)) else None


def miniwob_demonstrator(task: str, *, style: DemoStyle = "json", space: CoordinateSpace = "norm1000",
                         thoughts: bool = True, keyboard: bool = False) -> Callable[[BackendRequest], str]:
    """A scripted demonstrator of a MiniWoB++ task, for :class:`~giraffe_agent.backends.ScriptedBackend`.

    The returned function reads the current observation's DOM elements and the frame's transform
    (see the module doc for exactly what it may read) and returns one model-style reply: a
    ``Thought:`` line and one action (only the action with ``thoughts=False``).

    Args:
        task: a task of :data:`MINIWOB_DEMONSTRATED_TASKS`, e.g. ``"login-user"``.
        style: the form of the action: ``"json"`` (``{"action": "click", "x": 412, "y": 305}``),
            ``"uitars"`` (``Action: click(start_box='(412,305)')``; typing is a click into the field
            then ``type(content='...')`` on the next step) or ``"function"`` (``click(412, 305)``,
            ``type("text", 412, 305)``).
        space: the coordinate space written: ``"norm1000"`` (0-1000 over the screenshot) or
            ``"image_px"`` (pixels of the resized screenshot the model saw; the JSON and function
            forms say so with a ``space`` field, the UI-TARS form does not, so run the agent with
            ``AgentConfig(coordinate_space="image_px")`` for it).
        thoughts: whether the reply starts with a ``Thought:`` line. With ``False`` the JSON and
            function forms are the action alone (``{"action": "click", "x": 412, "y": 305}``), e.g.
            to train tiny models for which the thought text is only noise; the UI-TARS form keeps
            its ``Thought:`` line either way, since that format requires it.
        keyboard: fill in forms (``enter-text``, ``enter-text-2``, ``enter-text-dynamic``,
            ``enter-password``, ``login-user``) with the keyboard: Tab to the first field, type,
            Tab to the next field, ..., Tab to the form's button, Enter; no click (and
            ``focus-text``: Tab into its field). A keyboard
            user's policy, and one that needs no locating of fields and buttons whose positions
            vary from episode to episode. The environment must capture the focus with the elements
            (:class:`~giraffe_agent.envs.BrowserEnv` does).

    Returns:
        ``(BackendRequest) -> str``.

    Raises:
        UnknownTaskError: no demonstrator for ``task`` (an :class:`~giraffe_core.errors.InputError`).
        InputError: an unknown ``style`` or ``space``.

    The function raises :class:`InputError` when the observation carries no DOM elements (create
    the environment with ``BrowserConfig(capture_elements=True)``).
    """
    solver = _TASKS.get(task)
    if solver is None:
        raise UnknownTaskError(f"no MiniWoB++ demonstrator for task {task!r}",
                               hint=f"demonstrated tasks: {', '.join(MINIWOB_DEMONSTRATED_TASKS)}")
    if style not in get_args(DemoStyle):
        raise InputError(f"unknown demonstrator style {style!r}", hint=f"use one of {list(get_args(DemoStyle))}")
    if space not in ("norm1000", "image_px"):
        raise InputError(f"unknown coordinate space {space!r}", hint="use 'norm1000' or 'image_px'")

    def demonstrate(request: BackendRequest) -> str:
        elements = request.observation.elements
        if elements is None:
            raise InputError(f"the {task} demonstrator needs the page's DOM elements, and the observation has none",
                             hint="create the environment with BrowserConfig(capture_elements=True)")
        ctx = _Context(style=style, previous=_previous_action(request, space),
                       to_css=request.transform.to_css, keyboard=keyboard)
        intent = solver(list(elements), _query(elements) or "", ctx)
        return _reply(intent, request, style, space, thoughts)

    demonstrate.__name__ = f"demonstrate_{task.replace('-', '_')}"
    demonstrate.__doc__ = (f"Scripted {style}-style demonstrator of the MiniWoB++ task {task}"
                           f"{'' if thoughts or style == 'uitars' else ', without Thought lines'}"
                           f"{', filling in forms with the keyboard' if keyboard else ''}.")
    return demonstrate
