"""How often does the diagnosis name the right mistake, and the right line?

    python benchmarks/diagnosis_bank.py [--examples 20] [--only NAME]

Runs every wrong backward of ``tests/models/diagnosis_bank.py`` (tutorial, cs231n, numpy and
``autograd.Function`` styles, one bug each on a line marked ``# BUG``) through the checker, and
prints for each: the failing tensors, the mistakes named against the expected ones, and the
line reported against the marked one.  Then the shares: the line located exactly, and the
mistake named, among the entries whose expected mistakes are not all ``other``.  The correct
twins must pass with no diagnosis.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from gradcheck_suite import run_model  # noqa: E402
from tests.models.diagnosis_bank import BANK, bug_line  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--only", action="append", default=[])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    located = named = simple = wrong = 0
    rows = []
    for entry in BANK:
        if args.only and entry.model.name not in args.only:
            continue
        start = time.perf_counter()
        run = run_model(entry.model, examples=args.examples)
        seconds = time.perf_counter() - start
        if not entry.buggy:
            ok = run.verdict == "pass" and run.failure is None
            rows.append(f"| {entry.model.name} | correct | {run.verdict} {'✓' if ok else '✗'} | | |")
            continue
        wrong += 1
        res = run.failure
        if res is None:
            rows.append(f"| {entry.model.name} | wrong | {run.verdict} ✗ | | |")
            continue
        got = {k.tensor: k.mistake for k in res.diagnosis}
        want = {n: entry.mistakes.get(n, "?") for n in got}
        mistake_ok = bool(got) and got == want
        is_simple = any(k != "other" for k in entry.mistakes.values())
        simple += is_simple
        named += is_simple and mistake_ok
        file, line = bug_line(entry)
        loc = res.location
        line_ok = loc is not None and (os.path.abspath(loc.file), loc.line) == (file, line)
        located += line_ok
        where = f"line {loc.line} ({loc.variable})" if loc else f"none: {res.location_note}"
        rows.append(f"| {entry.model.name} | {', '.join(f'{n}: {k}' for n, k in got.items())} "
                    f"{'✓' if mistake_ok else '✗ want ' + str(want)} | {where} {'✓' if line_ok else f'✗ want {line}'} "
                    f"| {seconds:.2f}s |")
    print("| entry | mistakes named | line | time |\n|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nline located exactly: {located}/{wrong} ({100 * located / max(wrong, 1):.0f}%)")
    print(f"mistake named, among entries with a simple mistake: {named}/{simple} "
          f"({100 * named / max(simple, 1):.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
