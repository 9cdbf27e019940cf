"""The reports of a check run, for people and for machines.

For people, in lines of at most ``WIDTH`` columns:

- :func:`case_message`: one case's whole story: the verdict and what broke, each tensor's
  shape and worst elements (manual, autograd, finite differences, errors), the mistake the
  diagnosis named, the line to look at, and the command that reproduces exactly that case;
- :class:`Table`: the summary table, one row per model as each run finishes;
- :func:`run_details`: what a run found beyond its row (problems, notes, the failing case);
- :func:`aside_details`: why cases were set aside, and how many the verdict rests on.

For machines: :func:`case_json` and :func:`run_json`, the per-case and per-model parts of the
``--json`` report (``docs/json.md``).  The command (``commands/check.py``) and the pytest plugin
print these; nothing here decides a verdict.
"""
from __future__ import annotations

import math
import shlex
import textwrap
from collections.abc import Sequence

from ..verdict import rules
from ..check import ERROR, FAIL, CaseResult
from ..record.blame import shown_path
from ..verdict.tolerance import TensorComparison
from .runner import ASIDE_REASONS, ModelRun

#: what each set-aside reason asks the user to do, by the reason as the runner words it
_ADVICE = {reason: todo for _, reason, todo in ASIDE_REASONS}
#: the reason of a kink or tie: a matter of convention at any scale, never an overflow
_KINK = next(reason for key, reason, _ in ASIDE_REASONS if key == "a kink or tie")


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.6e}" if abs(x) >= 1e-300 else f"{x:.1e}"


def _err(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def _over(x: float) -> str:
    """An error over its tolerance, for the table: ``0.31`` is 31% of what is allowed."""
    if x == 0:
        return "0"
    if x < 0.01:
        return f"{x:.0e}"
    if x < 10:
        return f"{x:.2f}"
    return f"{x:.0f}" if x < 1e6 else ">1e6"


def _element_rows(c: TensorComparison, only_bad: bool) -> list[str]:
    rows = [e for e in c.worst if e.ratio > 1 or not only_bad]
    cells = [(str(list(e.index)), _num(e.manual), _num(e.autograd), "kink" if e.kink else _num(e.finite_diff),
              _err(e.abs_err), _err(e.rel_err)) for e in rows]
    first = max([len("index")] + [len(r[0]) for r in cells])
    return [f"{r[0]:<{first}}{r[1]:>14}{r[2]:>14}{r[3]:>14}{r[4]:>9}{r[5]:>9}"
            for r in [("index", "manual", "autograd", "finite diff", "abs err", "rel err"), *cells]]


def _wrap(text: str, indent: int) -> list[str]:
    """``text`` in lines of at most WIDTH columns, continued ``indent`` columns in."""
    return textwrap.wrap(text, rules.WIDTH, subsequent_indent=" " * indent, break_long_words=False,
                         break_on_hyphens=False) or [""]


def wrap_command(command: str, first: str, indent: int = 4) -> list[str]:
    """A shell command after ``first``, continued with backslashes so that every line fits
    WIDTH columns and the lines still paste into a shell as one command."""
    words = shlex.split(command)
    # an option stays on one line with its value
    groups = [[w] for w in words[:3]]
    for w in words[3:]:
        if groups[-1][0].startswith("--") and len(groups[-1]) == 1 and not w.startswith("--"):
            groups[-1].append(w)
        else:
            groups.append([w])
    lines, line = [], first.rstrip()
    for g in groups:
        piece = shlex.join(g)
        if len(line) + 1 + len(piece) + 2 > rules.WIDTH and line.strip():
            lines.append(line + " \\")
            line = " " * indent + piece
        else:
            line = f"{line} {piece}" if line.strip() else line + piece
    return lines + [line]


def case_message(res: CaseResult, models_from: str | None = None) -> str:
    """The whole story of one case: what broke, where, and how to run exactly it again."""
    case = res.case
    if res.summary:
        head = res.summary
    elif res.verdict == FAIL:
        head = f"the manual gradient of {', '.join(res.failing)} disagrees with autograd and finite differences"
    elif res.verdict == ERROR:
        head = res.problems[0] if res.problems else "error"
    else:
        head = "; ".join(res.problems or res.notes) or res.verdict
    label = max([len("case"), *(len(n) for n in res.tensors)])
    pad = 2 + label + 1                 # where the text after a label starts

    def labelled(name: str, text: str) -> list[str]:
        return _wrap(f"  {name:<{label}} {text}", pad)

    lines = _wrap(f"{res.model}: {res.verdict} — {head}", 4) + labelled("case", case.describe())
    for extra in (res.problems[1:] if res.verdict == ERROR else []) + (res.notes if res.verdict == FAIL else []):
        lines += labelled("note", extra)
    for name, c in res.tensors.items():
        size = "×".join(map(str, c.shape)) or "scalar"
        if c.ok:
            lines += labelled(name, f"ok: shape {size}, worst relative error {_err(c.max_rel_err)}")
            continue
        mistake = next((k.text for k in res.diagnosis if k.tensor == name), None)
        lines += labelled(name, f"shape {size}: {c.mismatched} of {max(1, math.prod(c.shape))} outside "
                                f"tolerance{': ' + mistake if mistake else ''}, worst relative error "
                                f"{_err(c.max_rel_err)} (error/tolerance {_over(c.max_ratio)})")
        lines += [" " * pad + row for row in _element_rows(c, only_bad=True)]
    lines += _look_at(res)
    lines += wrap_command(case.command(models_from), "  reproduce:")
    if res.internal and res.traceback:
        lines += ["  traceback (gradcheck-suite's own):", *("    " + t for t in res.traceback.rstrip().splitlines())]
    return "\n".join(lines)


class Table:
    """The summary table, one row at a time as each run finishes; it fits WIDTH columns.

    Columns: the model, dtype, device, cases checked, cases set aside (non-differentiable
    points, or a forward that is not finite), the value scales the cases reached (powers of
    ten), the worst error against autograd over its tolerance ("fd only" where there is no
    autograd oracle) and the worst distance from finite differences over their allowance
    (what decided the verdict: at most 1 on a pass), the verdict and the time.  A name too
    long for its column gets a line of its own.
    """

    _HEAD = ("model", "dtype", "dev", "cases", "aside", "scales", "autograd", "fin diff", "verdict", "time")
    _LEFT = {0, 1, 2, 8}

    def __init__(self, names: Sequence[str], dtypes: Sequence[str], devices: Sequence[str], sharded: bool = False):
        samples = [dtypes, devices, ["99999"], ["99999"], ["-3..+3"], ["1.0e+00"], ["1.0e+00"], ["ERROR"], ["999.99s"]]
        # with a sharded record among the models: a column of the world sizes its cases ran on
        self.sharded = sharded
        self._head = (*self._HEAD[:3], "ranks", *self._HEAD[3:]) if sharded else self._HEAD
        self._left = {i + (sharded and i > 2) for i in self._LEFT}
        if sharded:
            samples.insert(2, ["1..4"])
        rest = [max([len(h), *map(len, values)]) for h, values in zip(self._head[1:], samples)]
        room = rules.WIDTH - sum(rest) - len(rest)
        self.widths = [max(len("model"), min(room, max(map(len, names), default=0))), *rest]

    def _line(self, cells: Sequence[str]) -> str:
        return " ".join(c.ljust(w) if i in self._left else c.rjust(w)
                        for i, (c, w) in enumerate(zip(cells, self.widths))).rstrip()

    def head(self) -> str:
        first = 6 + self.sharded                 # the first of the two error columns
        over = sum(self.widths[:first]) + first  # where they start
        group = "error/tolerance".center(self.widths[first] + 1 + self.widths[first + 1]).rstrip()
        return (" " * over + group + "\n" + self._line(self._head) + "\n"
                + " ".join("-" * w for w in self.widths))

    def row(self, r: ModelRun) -> str:
        # an error before any comparison (a broken contract, a timeout) has no errors to show
        compared = r.checked > (r.failure is not None and not r.failure.tensors)
        worst = (r.worst_autograd_ratio, r.worst_fd_ratio)
        if r.failure is not None and r.failure.tensors:
            # a failing model shows the figures of the case its message shows (the shrunk one)
            worst = (max(c.max_ratio for c in r.failure.tensors.values()), r.failure.fd_ratio)
        errs = [_over(e) if compared else "-" for e in worst]
        if r.two_way:
            errs[0] = "fd only"
        if compared and r.checked and r.fd_missing >= r.checked:
            errs[1] = "not run"    # no second oracle: the forward fails in float64
        cells = [r.model, r.dtype, r.device, str(r.checked), str(r.nondiff + r.skipped), _scales(r), *errs,
                 r.verdict.upper() if r.verdict != "pass" else "pass", _seconds(r.seconds)]
        if self.sharded:
            sizes = sorted(r.world_sizes)
            cells.insert(3, "-" if not sizes else str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}..{sizes[-1]}")
        if len(r.model) <= self.widths[0]:
            return self._line(cells)
        return r.model + "\n" + self._line(["", *cells[1:]])


def _scales(r: ModelRun) -> str:
    """The value scales the cases reached, as powers of ten: ``-3..+3``."""
    if not r.scales:
        return "-"
    low, high = (round(math.log10(s)) for s in (min(r.scales), max(r.scales)))
    return f"{low:+d}..{high:+d}" if low != high else f"{low:+d}"


def _seconds(s: float) -> str:
    return f"{s:.2f}s" if s < 100 else f"{s:.0f}s"


def run_details(r: ModelRun, models_from: str | None = None) -> str:
    """What a run found beyond its row: its problems, its notes, and the failing case."""
    parts = ["\n".join(_wrap(f"{r.model}: {p}", 4)) for p in r.problems]
    shown = r.failure.notes if r.failure is not None and r.failure.verdict == FAIL else []
    parts += ["\n".join(_wrap(f"{r.model}: note: {n}", 4)) for n in r.notes.values()
              if not any(n.startswith(s) for s in shown)]
    if r.failure is not None:
        parts.append(case_message(r.failure, models_from))
    return "\n".join(parts)


def aside_details(r: ModelRun) -> str:
    """Why cases were set aside, and how many the verdict rests on: one line per model that
    set any aside, ``''`` for the others."""
    aside = r.nondiff + r.skipped
    if not aside or r.failure is not None:
        return ""
    parts = []
    for reason, (count, example, scales) in sorted(r.aside.items(), key=lambda kv: -kv[1][0]):
        todo = _ADVICE.get(reason, "")
        if scales and min(scales) > 1 and reason != _KINK:
            # only at large scales: the values overflow the dtype, not a domain
            todo = f"all at scale {min(scales):g} or more, an overflow in {r.dtype}? lower the record's scale_range"
        parts.append(f"{count} with {reason} (e.g. {example})" + (f": {todo}" if todo else ""))
    text = (f"{r.model} in {r.dtype}: {aside} of {aside + r.checked} cases set aside, "
            f"{'; '.join(parts) or 'reason unknown'}; "
            f"the verdict rests on the {r.checked} case{'s' * (r.checked != 1)} judged")
    return "\n".join(_wrap(text, 4))


def _look_at(res: CaseResult) -> list[str]:
    """``look at: file:line  code`` and what the variable should have been."""
    loc = res.location
    if loc is None:
        return []
    path = shown_path(loc.file)
    head = f"  look at: {path}:{loc.line}   {loc.code}"
    lines = [head] if len(head) <= rules.WIDTH else [f"  look at: {path}:{loc.line}", *_wrap(" " * 11 + loc.code, 13)]
    return lines + _wrap(" " * 11 + loc.sentence(), 11)


def case_json(res: CaseResult, models_from: str | None = None) -> dict:
    """One case for ``--json``: its verdict, tensors, diagnosis, location, message and reproduce command."""
    return {
        "verdict": res.verdict,
        "case": res.case.to_json(),
        "failing": res.failing,
        "problems": res.problems,
        "notes": res.notes,
        "parameters": {
            n: {"shape": list(c.shape), "mismatched": c.mismatched, "max_rel_err": c.max_rel_err,
                "max_over_tolerance": c.max_ratio,
                "worst": [e.to_json() for e in c.worst if e.ratio > 1 or c.ok][:5]}
            for n, c in res.tensors.items()
        },
        "over_tolerance": {"autograd": res.autograd_ratio, "finite_diff": res.fd_ratio},
        "diagnosis": [k.to_json() for k in res.diagnosis],
        "location": None if res.location is None else res.location.to_json(),
        "location_note": res.location_note,
        "message": case_message(res, models_from),
        "reproduce": res.case.command(models_from),
    }


def run_json(r: ModelRun, models_from: str | None = None) -> dict:
    """One model's run for ``--json``: its counts, worst errors, coverage, and the failing case."""
    return {
        "name": r.model,
        "dtype": r.dtype,
        "device": r.device,
        "verdict": r.verdict,
        "counts": {"checked": r.checked, "non_differentiable": r.nondiff, "skipped": r.skipped,
                   "shrink_steps": r.shrink_steps, "planned": r.planned},
        "budget_cut": r.budget_cut,
        "aside": [{"reason": reason, "count": count, "example": example, "scales": sorted(scales)}
                  for reason, (count, example, scales) in r.aside.items()],
        "worst_rel_err": {"autograd": None if r.two_way else r.worst_autograd, "finite_diff": r.worst_fd},
        "worst_over_tolerance": {"autograd": None if r.two_way else r.worst_autograd_ratio,
                                 "finite_diff": r.worst_fd_ratio},
        "oracles": ["finite_diff"] if r.two_way else ["autograd"] if r.checked and r.fd_missing >= r.checked
        else ["autograd", "finite_diff"],
        "coverage": r.coverage(),
        "seconds": round(r.seconds, 4),
        "problems": r.problems,
        "notes": list(r.notes.values()),
        "failure": None if r.failure is None else case_json(r.failure, models_from),
        "reproduce": None if r.failure is None else r.failure.case.command(models_from),
    }
