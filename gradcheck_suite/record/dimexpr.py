"""Expressions of dimensions: derived shapes (``"L + K - 1"``), bounds that depend on
other dims (``Dim(1, "L", 3)``) and constraints (``"K <= L"``).

Only whole-number arithmetic, comparisons, ``and``/``or``/``not``, ``min``/``max`` and
names are allowed; anything else is refused when the record is built, so a model file
never runs arbitrary code through a shape.
"""
from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}
_CALLS = {"min": min, "max": max}


class ExprError(ValueError):
    pass


def parse(text: str) -> ast.Expression:
    """The parsed expression; ExprError names what is not allowed."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ExprError(f"{text!r} is not an expression of dimensions") from None
    for node in ast.walk(tree):
        allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.UAdd, ast.Not, ast.BoolOp, ast.And,
                   ast.Or, ast.Compare, ast.Name, ast.Load, ast.Constant, *_BINARY, *_COMPARE)
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _CALLS and not node.keywords):
                raise ExprError(f"{text!r}: only min(...) and max(...) may be called")
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float)) or isinstance(node.value, bool):
                raise ExprError(f"{text!r}: {node.value!r} is not a number")
        elif not isinstance(node, allowed):
            raise ExprError(f"{text!r}: {type(node).__name__} is not allowed in an expression of dimensions")
    return tree


def names(text: str) -> set[str]:
    """The dimension names an expression reads."""
    return {n.id for n in ast.walk(parse(text)) if isinstance(n, ast.Name) and n.id not in _CALLS}


def evaluate(text: str, values: Mapping[str, object]):
    return _eval(parse(text).body, values, text)


def _eval(node, values, text):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in values:
            raise ExprError(f"{text!r} reads {node.id!r}, which has no value yet")
        return values[node.id]
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, values, text)
        return -v if isinstance(node.op, ast.USub) else (not v if isinstance(node.op, ast.Not) else +v)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, values, text), _eval(node.right, values, text))
    if isinstance(node, ast.BoolOp):
        parts = [_eval(v, values, text) for v in node.values]
        return all(parts) if isinstance(node.op, ast.And) else any(parts)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values, text)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, values, text)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        return _CALLS[node.func.id](*(_eval(a, values, text) for a in node.args))
    raise ExprError(f"{text!r}: cannot evaluate {type(node).__name__}")


def is_name(entry: object) -> bool:
    return isinstance(entry, str) and entry.isidentifier()


def size(entry: str | int | Callable, values: Mapping[str, object]) -> int:
    """One shape entry: a fixed size, a dimension name, an expression, or a callable of the values."""
    if isinstance(entry, int):
        return entry
    if is_name(entry):
        return values[entry]
    if callable(entry):
        return entry(dict(values))
    return evaluate(entry, values)


def order(bounds: Mapping[str, set[str]]) -> list[str]:
    """Names in an order where each comes after the names its bounds read; ExprError on a cycle."""
    done: list[str] = []
    pending = dict(bounds)
    while pending:
        ready = [n for n, deps in pending.items() if not (deps & set(pending)) - {n} and n not in deps]
        if not ready:
            raise ExprError(f"the bounds of {', '.join(sorted(pending))} depend on each other in a cycle")
        for n in ready:
            done.append(n)
            del pending[n]
    return done
