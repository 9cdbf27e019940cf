"""The one page of rules: every tuned number is named once in ``verdict/rules.py`` with its
reason, and ``docs/rules.md`` tables exactly those numbers at exactly their values."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from gradcheck_suite.verdict import rules

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gradcheck_suite"
RULES = PACKAGE / "verdict" / "rules.py"
PAGE = ROOT / "docs" / "rules.md"

#: A row of the page's tables: | `NAME` | value | reason |
ROW = re.compile(r"^\|\s*`(?P<name>[A-Za-z_][A-Za-z0-9_]*)`\s*\|(?P<value>.*?)\|(?P<reason>.*)\|\s*$")


def _code_rules() -> dict[str, dict]:
    """Each module-level assignment of rules.py: its section (the ``# --- ... ---`` line above
    it, counted from 0), its ``#:`` reason (the comment lines right above it) and its line."""
    source = RULES.read_text()
    lines = source.split("\n")
    found: dict[str, dict] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            assert isinstance(target, ast.Name), f"rules.py line {node.lineno}: assign plain names only"
            above = lines[:node.lineno - 1]
            reason = []
            while above and above[-1].startswith("#:"):
                reason.insert(0, above.pop()[2:].strip())
            section = sum(line.startswith("# --- ") for line in lines[:node.lineno - 1]) - 1
            assert target.id not in found, f"rules.py names {target.id} twice (lines {found[target.id]['line']} " \
                                           f"and {node.lineno})"
            found[target.id] = {"reason": " ".join(reason), "section": section, "line": node.lineno}
    return found


def _page_rows() -> list[dict]:
    """Each table row of docs/rules.md that names a rule, with its section (the ``## `` heading
    above it, counted from 0) and line."""
    rows, section = [], -1
    for number, line in enumerate(PAGE.read_text().split("\n"), 1):
        if line.startswith("## "):
            section += 1
        match = ROW.match(line)
        if match:
            rows.append({"name": match["name"], "value": match["value"].strip().strip("`").strip(),
                         "reason": match["reason"].strip(), "section": section, "line": number})
    return rows


def _same(a, b) -> bool:
    """Equal values of one type: ``1e-10`` and ``1.0e-10`` agree, tuples and dicts compare
    element by element, ``60`` is not ``60.0``."""
    return type(a) is type(b) and a == b


def test_every_rule_has_a_reason():
    missing = [name for name, found in _code_rules().items() if not found["reason"]]
    assert not missing, ("rules.py: no '#:' reason on the line(s) right above " + ", ".join(missing)
                         + "; every tuned number says why it has its value")


def test_the_rules_page_and_rules_py_agree():
    code, rows = _code_rules(), _page_rows()
    problems = []
    for row in rows:
        if row["name"] not in code:
            problems.append(f"docs/rules.md:{row['line']}: `{row['name']}` is no rule in rules.py "
                            "(renamed or removed there? change the row too)")
    for name, found in code.items():
        mine = [r for r in rows if r["name"] == name]
        if len(mine) != 1:
            problems.append(f"{name} (rules.py:{found['line']}) has {len(mine)} rows in docs/rules.md; it needs "
                            "exactly one")
            continue
        row = mine[0]
        try:
            written = eval(row["value"], vars(rules).copy())     # the page's value, read as rules.py reads it
        except Exception as e:
            problems.append(f"docs/rules.md:{row['line']}: the value of {name}, {row['value']!r}, does not read as "
                            f"Python ({type(e).__name__}: {e})")
            continue
        actual = getattr(rules, name)
        if not _same(written, actual):
            problems.append(f"{name} drifted: docs/rules.md:{row['line']} says {row['value']} (= {written!r}), "
                            f"rules.py:{found['line']} has {actual!r}")
        if row["section"] != found["section"]:
            problems.append(f"{name} is in section {found['section'] + 1} of rules.py but in section "
                            f"{row['section'] + 1} of docs/rules.md (docs/rules.md:{row['line']})")
        if not row["reason"]:
            problems.append(f"docs/rules.md:{row['line']}: {name} has no reason")
    assert not problems, "\n".join(problems)


def test_the_page_has_the_sections_of_rules_py_in_order():
    headers = [line for line in RULES.read_text().split("\n") if line.startswith("# --- ")]
    sections = [line for line in PAGE.read_text().split("\n") if line.startswith("## ")]
    assert len(headers) == len(sections), (f"rules.py has {len(headers)} sections, docs/rules.md "
                                           f"{len(sections)}: one table per section, in the same order")


def test_rules_py_imports_only_the_standard_library():
    """The pytest plugin imports it at start-up, before any torch."""
    for node in ast.walk(ast.parse(RULES.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in {"__future__", "sys", "math", "dataclasses"}, \
                f"rules.py imports {name}: it stays stdlib-only"


def _float_constants() -> set[tuple[str, str]]:
    """Module-level UPPER_CASE names, outside rules.py, whose value has a float literal in it
    (``X = 0.5``, ``X = (1e-3, 1e3)``, ``X = 8.0 * eps``)."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == RULES:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            if not any(isinstance(c, ast.Constant) and type(c.value) is float for c in ast.walk(value)):
                continue
            for target in targets:
                if isinstance(target, ast.Name) and re.fullmatch(r"_?[A-Z][A-Z0-9_]*", target.id):
                    found.add((path.relative_to(PACKAGE).as_posix(), target.id))
    return found


def test_no_tuned_float_constant_outside_rules_py():
    found = _float_constants()
    new = sorted(found)
    assert not new, ("tuned numbers belong in gradcheck_suite/verdict/rules.py (named once, with a '#:' reason, "
                     "and a row in docs/rules.md), read as rules.NAME: "
                     + ", ".join(f"{name} in {path}" for path, name in new))
