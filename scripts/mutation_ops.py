"""The mutation operators of ``scripts/mutation.py``: one small change to a module's syntax tree at a time.

Each mutant is one of these changes, aimed at the bugs that slip through tests which only compare
exact values on the happy path (defaults, limits, normalisation and guards):

* a comparison flipped at its boundary or negated (``<`` -> ``<=``, ``==`` -> ``!=``, ``in`` -> ``not in``);
* ``and`` <-> ``or``; a ``not`` or a unary minus removed;
* an arithmetic operator swapped (``+`` <-> ``-``, ``*`` <-> ``/``, ``//`` -> ``/``, ``%`` -> ``//``, ``**`` -> ``*``);
* a number changed (``n`` -> ``n + 1``; ``0.0`` -> ``1.0``, any other float doubled); ``True`` <-> ``False``;
* a short identifier-like string changed (``"wss"`` -> ``"wss§"``: a dict key, a compared or looked-up name);
* ``min`` <-> ``max``, ``any`` <-> ``all``;
* an ``if`` condition replaced by ``False`` (the guard or branch never runs);
* a statement deleted: a ``raise`` not directly under an ``if``, a call statement, an assignment to an
  item or attribute (``params["x"] = ...``).

Never mutated (a change there is not a behaviour a test should pin): docstrings, f-strings, the
arguments of exceptions and of ``logging`` calls (messages), ``raise`` statements' expressions, type
annotations and ``Literal[...]`` types, ``__all__``, and strings holding whitespace longer than two
characters (prose).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Mutant", "apply", "import_time_lines", "mutants"]

_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BINARY = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
           ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}
_SWAPPED_CALLS = {"min": "max", "max": "min", "any": "all", "all": "any"}
_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
_ERROR_FUNCTIONS = {"_error", "_validation_problem"}
_MARK = "\u00a7"


@dataclass(frozen=True)
class Mutant:
    """One change: the index of the node in ``ast.walk`` order, what is done to it, where it is (1-based lines)."""

    index: int
    kind: str
    line: int
    end_line: int
    description: str


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_docstring(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    expr = parents.get(node)
    owner = parents.get(expr) if isinstance(expr, ast.Expr) else None
    body = getattr(owner, "body", None)
    return bool(body) and body[0] is expr and isinstance(owner, ast.Module | ast.ClassDef | ast.FunctionDef
                                                        | ast.AsyncFunctionDef)


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _is_message_call(node: ast.AST) -> bool:
    """An exception being built or a logging call: its arguments are messages."""
    if not isinstance(node, ast.Call):
        return False
    name = _call_name(node)
    logging_call = (isinstance(node.func, ast.Attribute) and name in _LOG_METHODS
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("logger", "logging"))
    return name.endswith(("Error", "Exception")) or name in _ERROR_FUNCTIONS or logging_call


def _excluded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """True when ``node`` lies in a message, an annotation, a ``Literal[...]``, ``__all__`` or a raise."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.JoinedStr | ast.Raise) or _is_message_call(parent):
            return True
        if isinstance(parent, ast.keyword) and parent.arg in ("hint", "feedback"):
            return True
        if isinstance(parent, ast.arg) or (isinstance(parent, ast.FunctionDef) and child is parent.returns):
            return True
        if isinstance(parent, ast.AnnAssign) and child is parent.annotation:
            return True
        if isinstance(parent, ast.Subscript) and isinstance(parent.value, ast.Name) and parent.value.id == "Literal":
            return True
        if isinstance(parent, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                  for t in parent.targets):
            return True
        child, parent = parent, parents.get(parent)
    return False


def _constant_change(value: object) -> tuple[object, str] | None:
    if isinstance(value, bool):
        return (not value), f"{value} -> {not value}"
    if isinstance(value, int):
        return value + 1, f"{value} -> {value + 1}"
    if isinstance(value, float):
        new = 1.0 if value == 0 else value * 2
        return new, f"{value!r} -> {new!r}"
    if isinstance(value, str) and (len(value) <= 2 or not any(c.isspace() for c in value)) and len(value) <= 60:
        return value + _MARK, f"{value!r} -> {value + _MARK!r}"
    return None


def _deletable(node: ast.stmt, parents: dict[ast.AST, ast.AST]) -> bool:
    if isinstance(node, ast.Raise):
        parent = parents.get(node)
        return not (isinstance(parent, ast.If) and node in parent.body)
    if isinstance(node, ast.Expr):
        return isinstance(node.value, ast.Call)
    if isinstance(node, ast.Assign | ast.AugAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return all(isinstance(t, ast.Subscript | ast.Attribute) for t in targets)
    return False


def _node_mutants(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> Iterator[tuple[str, str]]:
    """(kind, description) of every change that applies to ``node``."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _COMPARE:
                yield f"compare:{i}", f"{type(op).__name__} -> {_COMPARE[type(op)].__name__}"
    elif isinstance(node, ast.BoolOp):
        yield "boolop", "and -> or" if isinstance(node.op, ast.And) else "or -> and"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        yield "unary", f"drop {type(node.op).__name__}"
    elif isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _BINARY:
        yield "binop", f"{type(node.op).__name__} -> {_BINARY[type(node.op)].__name__}"
    elif isinstance(node, ast.Constant) and not _is_docstring(node, parents):
        change = _constant_change(node.value)
        if change is not None:
            yield "constant", change[1]
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _SWAPPED_CALLS:
        yield "call", f"{node.func.id} -> {_SWAPPED_CALLS[node.func.id]}"
    if isinstance(node, ast.If):
        yield "if-false", "if condition -> False"
    if isinstance(node, ast.stmt) and _deletable(node, parents):
        yield "delete", f"delete {type(node).__name__}"


def mutants(source: str) -> list[Mutant]:
    """Every mutant of ``source``, in a stable order."""
    tree = ast.parse(source)
    parents = _parents(tree)
    found = []
    for index, node in enumerate(ast.walk(tree)):
        if not hasattr(node, "lineno") or _excluded(node, parents):
            continue
        for kind, description in _node_mutants(node, parents):
            line = node.test.lineno if isinstance(node, ast.If) and kind == "if-false" else node.lineno
            end = node.test.end_lineno if isinstance(node, ast.If) and kind == "if-false" else node.end_lineno
            found.append(Mutant(index, kind, line, end or line, description))
    return found


def import_time_lines(source: str) -> set[int]:
    """Lines run when the module is imported: module and class bodies, decorators, ``def`` headers
    (defaults and annotations), each statement with all its lines (a table written over many lines
    runs as one line event, so tracing alone would miss its continuation lines)."""
    lines: set[int] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines.update(range(first, node.body[0].lineno))
                if isinstance(node, ast.ClassDef):
                    visit(node.body)
            else:
                lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))

    visit(ast.parse(source).body)
    return lines


def apply(source: str, mutant: Mutant, filename: str):
    """Compile ``source`` with ``mutant`` applied (a fresh tree each time)."""
    tree = ast.parse(source)
    parents = _parents(tree)
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == mutant.index)
    kind = mutant.kind
    if kind.startswith("compare:"):
        i = int(kind.split(":")[1])
        node.ops[i] = _COMPARE[type(node.ops[i])]()
    elif kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "unary":
        _replace(parents, node, node.operand)
    elif kind == "binop":
        node.op = _BINARY[type(node.op)]()
    elif kind == "constant":
        node.value = _constant_change(node.value)[0]
    elif kind == "call":
        node.func.id = _SWAPPED_CALLS[node.func.id]
    elif kind == "if-false":
        node.test = ast.copy_location(ast.Constant(False), node.test)
    elif kind == "delete":
        _replace(parents, node, ast.copy_location(ast.Pass(), node))
    else:
        raise ValueError(f"unknown mutant kind {kind!r}")
    return compile(ast.fix_missing_locations(tree), filename, "exec")


def _replace(parents: dict[ast.AST, ast.AST], old: ast.AST, new: ast.AST) -> None:
    """Put ``new`` where ``old`` is in its parent (a field or an item of a list field)."""
    parent = parents[old]
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list) and any(item is old for item in value):
            value[next(i for i, item in enumerate(value) if item is old)] = new
            return
    raise ValueError("node not found in its parent")
