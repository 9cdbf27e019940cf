"""How well does the harness judge real code?  A bank of public code with hand-written
gradients (``benchmarks/public_bank/``), each labelled correct or wrong, judged by the
harness and by ``torch.autograd.gradcheck(fast_mode=True)``.

    python benchmarks/public_bank.py                  # the table (52 entries: about 10 s on 2 cores)
    python benchmarks/public_bank.py --examples 50 --json rows.json
    python benchmarks/public_bank.py --only timm_mish_me_inplace
    python benchmarks/public_bank.py --verify-labels  # brute-force check of every label
    python benchmarks/public_bank.py --dtype float32 --examples 30   # the correct ones in float32
    python benchmarks/public_bank.py --paths          # the paths bank (issue 26): jvp, vmap, ...
    python benchmarks/public_bank.py --paths jvp,complex --verify-labels

``--paths`` runs the entries tagged with torch paths beyond eager reverse mode
(``Entry.paths``: jvp, vmap, generate_vmap_rule, materialize_grads, mark_dirty, indices,
custom_op_fake, complex; a comma list selects those) instead of the original bank.  Their
harness column runs with the nightly profile's settings for those paths: each case also
under torch.compile (``rules.COMPILE_BACKEND``, aot_eager) and torch.library.opcheck on
custom ops (``with_opcheck``, as ``run_model(profile="nightly")`` sets them), on the quick
profile's reproducible draws.  gradcheck gets the flags a user sets for the path:
``check_forward_ad=True`` where the Function has a jvp, ``check_batched_grad=True`` where it
has a vmap rule (``check_undefined_grad`` is on by default); an in-place Function is passed
clones, as PyTorch's own OpInfos pass them.  A third column runs ``torch.library.opcheck`` on
custom ops at the benchmark dims ("n/a" elsewhere).  The totals count a row under every path
it names, and each row once under "all".

The harness runs each record with ``run_model(record, examples=N, case_timeout=...)``:
"pass" counts as judging the code correct, "fail" or "error" as judging it wrong.
gradcheck gets what a user would write: float64, contiguous, fresh inputs requiring grad,
at the entry's benchmark dims, seed 0; any exception counts as a failure.  numpy layers
have no gradcheck ("n/a").  An entry that cannot be wrapped is that row's error, with
its message below the table; it never stops the run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

from public_bank import Entry, entries  # noqa: E402  (the package beside this script)
from public_bank._entry import PATHS  # noqa: E402

SUBSETS = (("Functions", "function"), ("custom ops", "custom op"), ("numpy layers", "numpy"))


@dataclasses.dataclass
class Row:
    code: str
    kind: str
    expected: str
    reason: str
    source: str
    harness: str = "error"            # pass, fail or error
    harness_detail: str = ""
    harness_seconds: float = 0.0
    gradcheck: str = "n/a"            # pass, fail or n/a
    gradcheck_detail: str = ""
    gradcheck_seconds: float = 0.0
    paths: tuple[str, ...] = ()       # the entry's torch paths (--paths)
    license: str = ""
    gradcheck_flags: str = ""         # the flags gradcheck ran with beyond fast_mode (--paths)
    opcheck: str = "n/a"              # pass, fail or n/a: torch.library.opcheck, custom ops (--paths)
    opcheck_detail: str = ""
    opcheck_seconds: float = 0.0

    def right(self, verdict: str) -> bool | None:
        if verdict == "n/a":
            return None
        return (verdict == "pass") == (self.expected == "correct")


def _first_line(text: str, limit: int = 240) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def run_harness(entry: Entry, examples: int, case_timeout: float, dtype: str | None = None,
                nightly_paths: bool = False) -> tuple[str, str, float]:
    """``nightly_paths``: the nightly profile's settings for the paths (compile with
    ``rules.COMPILE_BACKEND``, opcheck on custom ops), on the quick profile's draws."""
    from gradcheck_suite import run_model
    from gradcheck_suite.kinds.op import with_opcheck
    from gradcheck_suite.verdict import rules

    start = time.perf_counter()
    try:
        record = entry.record()
    except Exception as e:  # a record the harness refuses today
        return "error", f"record refused: {type(e).__name__}: {_first_line(e)}", time.perf_counter() - start
    extra = {}
    if nightly_paths:
        record = with_opcheck(record)
        extra["compile"] = rules.COMPILE_BACKEND
    try:
        run = run_model(record, examples=examples, case_timeout=case_timeout, dtype=dtype, **extra)
    except Exception as e:  # the harness itself crashed on this record
        return "error", f"run_model raised {type(e).__name__}: {_first_line(e)}", time.perf_counter() - start
    detail = ""
    if run.failure is not None:
        f = run.failure
        what = f.summary or "; ".join(f.problems[:1]) or ", ".join(f.failing)
        detail = f"{f.verdict}: {_first_line(what)} ({f.case.describe()})"
    elif run.problems:
        detail = _first_line(run.problems[0])
    return run.verdict, detail, time.perf_counter() - start


def gradcheck_flags(entry: Entry) -> dict[str, bool]:
    """The flags a user sets for the entry's paths (none for the original bank)."""
    flags = {}
    if "jvp" in entry.paths:
        flags["check_forward_ad"] = True
    if {"vmap", "generate_vmap_rule"} & set(entry.paths):
        flags["check_batched_grad"] = True
    return flags


def run_gradcheck(entry: Entry) -> tuple[str, str, float]:
    made = entry.gradcheck_call()
    if made is None:
        return "n/a", "", 0.0
    fn, inputs = made
    if "mark_dirty" in entry.paths:      # in place: on clones, as PyTorch's OpInfos call it (leaves refuse)
        call = fn
        fn = lambda *tensors: call(*[t.clone() for t in tensors])  # noqa: E731
    start = time.perf_counter()
    try:
        ok = torch.autograd.gradcheck(fn, inputs, fast_mode=True, **gradcheck_flags(entry))
    except Exception as e:  # GradcheckError, or the op raising: both a failure to the user
        return "fail", f"{type(e).__name__}: {_first_line(e)}", time.perf_counter() - start
    verdict, detail = ("pass", "") if ok else ("fail", "returned False")
    return verdict, detail, time.perf_counter() - start


def run_opcheck(entry: Entry) -> tuple[str, str, float]:
    """``torch.library.opcheck`` on a custom op at the benchmark dims; n/a for anything else."""
    if entry.kind != "custom op":
        return "n/a", "", 0.0
    start = time.perf_counter()
    try:
        report = torch.library.opcheck(entry.spec.op, entry.op_args(), raise_exception=False)
    except Exception as e:  # the op raising: a failure to the user
        return "fail", f"{type(e).__name__}: {_first_line(e)}", time.perf_counter() - start
    failed = [f"{test}: {_first_line(str(r), 160)}" for test, r in report.items() if r != "SUCCESS"]
    return ("fail" if failed else "pass"), "; ".join(failed), time.perf_counter() - start


def judge(entry: Entry, examples: int, case_timeout: float, paths: bool = False) -> Row:
    row = Row(entry.name, entry.kind, entry.expected, entry.reason, entry.source, paths=entry.paths,
              license=entry.license)
    row.harness, row.harness_detail, row.harness_seconds = run_harness(entry, examples, case_timeout,
                                                                      nightly_paths=paths)
    row.gradcheck, row.gradcheck_detail, row.gradcheck_seconds = run_gradcheck(entry)
    row.gradcheck_flags = ", ".join(f"{k}=True" for k in gradcheck_flags(entry))
    if paths:
        row.opcheck, row.opcheck_detail, row.opcheck_seconds = run_opcheck(entry)
    return row


def _mark(row: Row, verdict: str) -> str:
    right = row.right(verdict)
    return verdict if right is None else f"{verdict} {'✓' if right else '✗'}"


def table(rows: list[Row]) -> str:
    lines = ["| code | kind | expected | harness | s | gradcheck | s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.code} | {r.kind} | {r.expected} | {_mark(r, r.harness)} | {r.harness_seconds:.1f} | "
              f"{_mark(r, r.gradcheck)} | {r.gradcheck_seconds:.1f} |" for r in rows]
    return "\n".join(lines)


def paths_table(rows: list[Row]) -> str:
    lines = ["| code | paths | kind | expected | harness | s | gradcheck | s | opcheck | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.code} | {', '.join(r.paths)} | {r.kind} | {r.expected} | {_mark(r, r.harness)} | "
              f"{r.harness_seconds:.1f} | {_mark(r, r.gradcheck)} | {r.gradcheck_seconds:.1f} | "
              f"{_mark(r, r.opcheck)} | {r.opcheck_seconds:.1f} |" for r in rows]
    return "\n".join(lines)


def paths_totals(rows: list[Row]) -> str:
    """Right counts per path (a row under every path it names), then all rows once."""
    lines = ["| path | labels | n | harness right | gradcheck right | opcheck right |", "|---|---|---|---|---|---|"]
    groups = [(p, [r for r in rows if p in r.paths]) for p in PATHS] + [("all", rows)]
    for title, group in groups:
        for label in ("correct", "wrong", "both"):
            part = group if label == "both" else [r for r in group if r.expected == label]
            if part:
                lines.append(f"| {title} | {label} | {len(part)} | {_score(part, 'harness')} | "
                             f"{_score(part, 'gradcheck')} | {_score(part, 'opcheck')} |")
    return "\n".join(lines)


def _score(rows: list[Row], which: str) -> str:
    judged = [r.right(getattr(r, which)) for r in rows]
    judged = [j for j in judged if j is not None]
    return f"{sum(judged)}/{len(judged)}" if judged else "n/a"


def totals(rows: list[Row]) -> str:
    lines = ["| subset | labels | n | harness right | gradcheck right |", "|---|---|---|---|---|"]
    groups = [(title, [r for r in rows if r.kind == kind]) for title, kind in SUBSETS] + [("all", rows)]
    for title, group in groups:
        for label in ("correct", "wrong", "both"):
            part = group if label == "both" else [r for r in group if r.expected == label]
            if part:
                lines.append(f"| {title} | {label} | {len(part)} | {_score(part, 'harness')} | "
                             f"{_score(part, 'gradcheck')} |")
    return "\n".join(lines)


def details(rows: list[Row]) -> str:
    out = []
    for r in rows:
        if r.harness != "pass" and r.harness_detail:
            out.append(f"- {r.code}: harness {r.harness}: {r.harness_detail}")
        if r.gradcheck == "fail" and r.gradcheck_detail:
            out.append(f"- {r.code}: gradcheck: {r.gradcheck_detail}")
        if r.opcheck == "fail" and r.opcheck_detail:
            out.append(f"- {r.code}: opcheck: {r.opcheck_detail}")
    return "\n".join(out)


def verify_labels(bank: list[Entry]) -> int:
    from public_bank.verify import check_label

    wrong = 0
    for entry in bank:
        start = time.perf_counter()
        check = check_label(entry)
        wrong += not check.holds
        print(f"{'ok  ' if check.holds else 'FAIL'} {entry.name:34s} {entry.expected:8s} "
              f"{check.evidence()}  ({time.perf_counter() - start:.1f}s)", flush=True)
    print(f"\n{len(bank) - wrong} of {len(bank)} labels hold")
    return 1 if wrong else 0


def in_dtype(bank: list[Entry], dtype: str, examples: int, case_timeout: float) -> int:
    """Do the correct Functions and custom ops pass in ``dtype`` too?  Each verdict, then the count."""
    chosen = [e for e in bank if e.kind != "numpy" and e.expected == "correct"]
    passed = 0
    for entry in chosen:
        verdict, detail, seconds = run_harness(entry, examples, case_timeout, dtype)
        passed += verdict == "pass"
        print(f"{entry.name}: {verdict} ({seconds:.1f}s){' ' + detail if detail else ''}")
    print(f"\n{dtype}: {passed}/{len(chosen)} correct Functions and custom ops pass, examples={examples}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20, help="harness cases per entry (20)")
    parser.add_argument("--case-timeout", type=float, default=20.0, help="seconds per harness case (20)")
    parser.add_argument("--only", action="append", metavar="NAME", help="run this entry (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    parser.add_argument("--verify-labels", action="store_true", help="check every label by brute force")
    parser.add_argument("--paths", nargs="?", const="all", metavar="PATH,...",
                        help="the paths bank instead of the original one: entries tagged with torch paths "
                             f"({', '.join(PATHS)}); a comma list selects those (all)")
    parser.add_argument("--dtype", metavar="DTYPE",
                        help="instead of the table: the correct Functions and custom ops checked in this dtype "
                             "(their labels hold in float64; numpy layers work in float64 only)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*saved_variables.*", category=DeprecationWarning)
    bank = entries()
    if args.paths:
        wanted = set(PATHS) if args.paths == "all" else set(args.paths.split(","))
        unknown = sorted(wanted - set(PATHS))
        if unknown:
            parser.error(f"no path named {', '.join(unknown)}; choose from {', '.join(PATHS)}")
        bank = [e for e in bank if wanted & set(e.paths)]
    elif not args.only:
        bank = [e for e in bank if not e.paths]        # the original bank, as before --paths
    if args.only:
        unknown = sorted(set(args.only) - {e.name for e in bank})
        if unknown:
            parser.error(f"no entry named {', '.join(unknown)}")
        bank = [e for e in bank if e.name in args.only]
    if args.verify_labels:
        return verify_labels(bank)
    if args.dtype:
        return in_dtype(bank, args.dtype, args.examples, args.case_timeout)

    rows = []
    start = time.perf_counter()
    for entry in bank:
        try:
            row = judge(entry, args.examples, args.case_timeout, paths=bool(args.paths))
        except Exception as e:  # never let one entry stop the table
            row = Row(entry.name, entry.kind, entry.expected, entry.reason, entry.source,
                      harness_detail=f"{type(e).__name__}: {_first_line(e)}", paths=entry.paths,
                      license=entry.license)
            traceback.print_exc()
        rows.append(row)
        print(f"{row.code}: harness {row.harness} ({row.harness_seconds:.1f}s), gradcheck {row.gradcheck}"
              + (f", opcheck {row.opcheck}" if args.paths else ""), file=sys.stderr, flush=True)
    print(paths_table(rows) if args.paths else table(rows))
    print()
    print(paths_totals(rows) if args.paths else totals(rows))
    notes = details(rows)
    if notes:
        print("\nWhy (first failure of each):\n" + notes)
    print(f"\n{len(rows)} entries in {time.perf_counter() - start:.0f}s, examples={args.examples}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
