"""The package's layout holds: one idea per folder, layers that import downward only, no import
circle, no private name crossing a module, no module a newcomer must read for an hour.

The layers, lowest first (a module may import its own folder and any folder below it):
record -> verdict -> kinds -> check -> diagnose -> run -> train -> bench -> commands -> the
package's face (``__init__``, ``__main__``, ``plugin``).  Imports inside functions count: a lazy
import still ties the two modules together.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "gradcheck_suite"
LAYERS = ("record", "verdict", "kinds", "check", "diagnose", "run", "train", "bench", "commands", "")
#: The one import up the layers, and why it is no circle: a record names its kind, so the record
#: validates the name against the registry of kinds; that registry (kinds/__init__.py, base.py and
#: the declarations it lists) imports nothing of the package outside kinds/ (tested below), while
#: the factories that wrap a Function or numpy layers (kinds/op.py, layers.py) import the record.
ALLOWED_UP = {("record.spec", "kinds")}
#: the registry of kinds: what record.spec may import
KIND_REGISTRY = {"kinds", "kinds.base", "kinds.record", "kinds.function", "kinds.custom_op", "kinds.numpy"}
#: what ``import gradcheck_suite`` gives without importing torch: the record, re-exported
FACE_EAGER = {"Dim", "Model", "SpecError", "Tensors", "__version__"}
#: a module longer than this is split along its ideas
MAX_LINES = 600


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(p for p in parts if p != "__init__") or ""] = path
    return out


MODULES = _modules()


def _layer(module: str, names: list[str] | None = None) -> int:
    if module == "" and names and set(names) <= FACE_EAGER:
        return LAYERS.index("record")      # the face's own eager names are the record's
    top = module.split(".")[0]
    if top == "models":            # the built-in examples are models a user could have written
        return LAYERS.index("record")
    return LAYERS.index(top) if top in LAYERS else LAYERS.index("")


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every import of the package in ``module``."""
    path = MODULES[module]
    is_pkg = path.name == "__init__.py"
    here = module.split(".") if module else []
    package = here if is_pkg else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "gradcheck_suite":
                target = node.module.partition(".")[2]
            else:
                continue
            names = [a.name for a in node.names]
            for name in names:         # `from . import x` imports the module x
                sub = f"{target}.{name}" if target else name
                if sub in MODULES:
                    out.append((sub, [], node.lineno))
            rest = [n for n in names if f"{target}.{n}".lstrip(".") not in MODULES]
            if target in MODULES and rest:
                out.append((target, rest, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "gradcheck_suite":
                    target = a.name.partition(".")[2]
                    if target in MODULES:
                        out.append((target, [], node.lineno))
    return out


@pytest.mark.parametrize("module", sorted(MODULES), ids=lambda m: m or "gradcheck_suite")
def test_a_module_imports_its_own_layer_or_below(module):
    if _layer(module) == LAYERS.index(""):
        return                     # the face may import anything
    upward = [f"line {line}: {target or 'gradcheck_suite'}" for target, names, line in _imports(module)
              if _layer(target, names) > _layer(module) and target.split(".")[0] != module.split(".")[0]
              and (module, target) not in ALLOWED_UP]
    assert not upward, f"{module} imports a layer above its own ({LAYERS[_layer(module)]}): {upward}"


def _related(a: str, b: str) -> bool:
    """A package and one of its own modules: its __init__ re-exporting them is no circle."""
    return a == "" or b == "" or a.startswith(b + ".") or b.startswith(a + ".")


def test_the_registry_of_kinds_imports_nothing_outside_kinds():
    for module in sorted(KIND_REGISTRY):
        outside = [f"line {line}: {target or 'gradcheck_suite'}" for target, names, line in _imports(module)
                   if target.split(".")[0] != "kinds"]
        assert not outside, f"{module} is imported by the record, so it imports nothing above it: {outside}"


def test_no_import_circle():
    graph = {m: sorted({t for t, _, _ in _imports(m) if t != m and not _related(m, t)}) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def strongly_connected(m: str) -> None:        # Tarjan's algorithm
        index[m] = low[m] = len(index)
        stack.append(m)
        for t in graph[m]:
            if t not in index:
                strongly_connected(t)
                low[m] = min(low[m], low[t])
            elif t in stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            group = []
            while True:
                group.append(stack.pop())
                if group[-1] == m:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for m in MODULES:
        if m not in index:
            strongly_connected(m)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


@pytest.mark.parametrize("module", sorted(MODULES), ids=lambda m: m or "gradcheck_suite")
def test_no_private_name_crosses_a_module(module):
    crossing = [f"line {line}: {name} from {target}" for target, names, line in _imports(module)
                for name in names if name.startswith("_") and not name.startswith("__")]
    assert not crossing, f"{module} takes private names of another module: {crossing}"


@pytest.mark.parametrize("module", sorted(MODULES), ids=lambda m: m or "gradcheck_suite")
def test_no_module_is_too_long_to_read(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(PACKAGE.parent)}: {lines} lines, over {MAX_LINES}"


def test_the_layers_are_the_folders():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYERS[:-1]) | {"models"}, folders ^ (set(LAYERS[:-1]) | {"models"})
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "plugin"}, top
