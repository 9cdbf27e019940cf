"""Text and JSON reports: a failure message that points at the element, the shape and
the seed, a table per run, and a JSON document for machines."""
from __future__ import annotations

import math
from collections.abc import Sequence

from .check import ERROR, FAIL, CaseResult
from .compare import TensorComparison
from .runner import ModelRun

JSON_VERSION = 1


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.6e}" if abs(x) >= 1e-300 else f"{x:.1e}"


def _err(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def _element_rows(c: TensorComparison, only_bad: bool) -> list[str]:
    rows = [e for e in c.worst if e.ratio > 1 or not only_bad]
    head = f"{'index':<14}{'manual':>15}{'autograd':>15}{'finite diff':>15}{'abs err':>10}{'rel err':>10}"
    lines = [head]
    for e in rows:
        fd = "kink" if e.kink and e.finite_diff is None else _num(e.finite_diff) + (" (kink)" if e.kink else "")
        lines.append(f"{str(list(e.index)):<14}{_num(e.manual):>15}{_num(e.autograd):>15}{fd:>15}"
                     f"{_err(e.abs_err):>10}{_err(e.rel_err):>10}")
    return lines


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
    lines = [f"{res.model}: {res.verdict} — {head}", f"  case       {case.describe()}"]
    for extra in (res.problems[1:] if res.verdict == ERROR else []) + (res.notes if res.verdict == FAIL else []):
        lines.append(f"  note       {extra}")
    for name, c in res.tensors.items():
        size = "×".join(map(str, c.shape)) or "scalar"
        if c.ok:
            lines.append(f"  {name:<10} ok: shape {size}, worst relative error {_err(c.max_rel_err)}")
            continue
        lines.append(f"  {name:<10} shape {size}: {c.mismatched} of {max(1, math.prod(c.shape))} elements "
                     f"outside tolerance; worst relative error {_err(c.max_rel_err)}")
        lines += ["             " + row for row in _element_rows(c, only_bad=True)]
    lines.append(f"  reproduce: {case.command(models_from)}")
    return "\n".join(lines)


def table(runs: Sequence[ModelRun]) -> str:
    """One row per model run."""
    head = ("model", "dtype", "device", "checked", "non-diff", "skipped", "rel err autograd", "rel err fd", "verdict", "time")
    rows = [head] + [
        (r.model, r.dtype, r.device, str(r.checked), str(r.nondiff), str(r.skipped),
         "none (fd only)" if r.two_way else _err(r.worst_autograd), _err(r.worst_fd), r.verdict.upper() if r.verdict != "pass" else "pass",
         f"{r.seconds:.2f}s")
        for r in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) if i < 3 or i == 8 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
           for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def run_details(r: ModelRun, models_from: str | None = None) -> str:
    parts = [f"{r.model}: {p}" for p in r.problems]
    if r.failure is not None:
        parts.append(case_message(r.failure, models_from))
    return "\n".join(parts)


def case_json(res: CaseResult, models_from: str | None = None) -> dict:
    return {
        "verdict": res.verdict,
        "case": res.case.to_json(),
        "failing": res.failing,
        "problems": res.problems,
        "notes": res.notes,
        "parameters": {
            n: {"shape": list(c.shape), "mismatched": c.mismatched, "max_rel_err": c.max_rel_err,
                "worst": [e.to_json() for e in c.worst if e.ratio > 1 or c.ok][:5]}
            for n, c in res.tensors.items()
        },
        "message": case_message(res, models_from),
        "reproduce": res.case.command(models_from),
    }


def run_json(r: ModelRun, models_from: str | None = None) -> dict:
    return {
        "name": r.model,
        "dtype": r.dtype,
        "device": r.device,
        "verdict": r.verdict,
        "counts": {"checked": r.checked, "non_differentiable": r.nondiff, "skipped": r.skipped,
                   "shrink_steps": r.shrink_steps},
        "worst_rel_err": {"autograd": None if r.two_way else r.worst_autograd, "finite_diff": r.worst_fd},
        "oracles": ["finite_diff"] if r.two_way else ["autograd", "finite_diff"],
        "coverage": r.coverage(),
        "seconds": round(r.seconds, 4),
        "problems": r.problems,
        "failure": None if r.failure is None else case_json(r.failure, models_from),
        "reproduce": None if r.failure is None else r.failure.case.command(models_from),
    }
