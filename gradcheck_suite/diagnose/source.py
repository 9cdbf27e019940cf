"""Reading the user's source: a line's code and the names in it, the names that say "the
gradient of", and the loops and writes of a function, from its syntax tree."""
from __future__ import annotations

import ast
import io
import linecache
import re
import tokenize

from ..record.blame import shown_path

_GRAD_NAME = [re.compile(p) for p in (r"^grad_(?P<x>\w+)$", r"^(?P<x>\w+)_grad$", r"^d_?(?P<x>\w+)$",
                                      r"^g_?(?P<x>\w+)$", r"^grad(?P<x>[A-Z]\w*)$")]

#: Names a backward gives the upstream gradient: the gradient of the forward's output.
UPSTREAM_NAMES = ("dout", "grad_output", "grad_out", "g")


def gradient_of(name: str) -> list[str]:
    """The names ``name`` says it is the gradient of: grad_h, h_grad, dh, d_h, gh -> h."""
    found = []
    for pattern in _GRAD_NAME:
        hit = pattern.match(name)
        if hit and hit.group("x"):
            found.append(hit.group("x"))
    return found


def code_at(file: str, line: int) -> str:
    """The source line, its comment left out."""
    text = linecache.getline(file, line).strip()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return text
    comment = next((t for t in tokens if t.type == tokenize.COMMENT), None)
    return text[:comment.start[1]].rstrip() if comment else text


def names_in(code: str) -> list[str]:
    """The names a line of code uses, in order (keywords too)."""
    try:
        return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.NAME]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return re.findall(r"[A-Za-z_]\w*", code)


def at(file: str, line: int) -> str:
    """``examples/wrong.py:11``: every line a message names comes with its file."""
    return f"{shown_path(file)}:{line}"


def read_as_is(code: str) -> bool:
    """An assignment that computes nothing: ``h, y = cache``, ``(x,) = ctx.saved_tensors``."""
    try:
        tree = ast.parse(code.strip())
    except SyntaxError:
        return False
    node = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(node, ast.Assign):
        return False
    return all(isinstance(n, (ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.List, ast.Load, ast.Constant,
                              ast.Slice)) for n in ast.walk(node.value))


def writes_to(file: str, made: int, name: str) -> list[int]:
    """Lines after ``made``, in the function that holds it, that write into ``name[...]``."""
    try:
        tree = ast.parse("".join(linecache.getlines(file)))
    except (SyntaxError, ValueError):
        return []
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
             and n.lineno <= made <= (n.end_lineno or n.lineno)]
    if not funcs:
        return []
    func = max(funcs, key=lambda n: n.lineno)
    lines = []
    for n in ast.walk(func):
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AugAssign) else []
        if any(isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == name
               for t in targets) and n.lineno > made:
            lines.append(n.lineno)
    return sorted(lines)


def enclosing_loop(file: str, line: int) -> int | None:
    """The line of the innermost ``for`` or ``while`` around ``line``, or None."""
    try:
        tree = ast.parse("".join(linecache.getlines(file)))
    except (SyntaxError, ValueError):
        return None
    loops = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While, ast.AsyncFor))
             and n.lineno < line <= (n.end_lineno or n.lineno)]
    return max(loops) if loops else None
