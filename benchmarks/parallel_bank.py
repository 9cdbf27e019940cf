"""How do sharded checks judge real parallel code?  A bank of public parallel Functions
(``benchmarks/parallel_bank/``: Megatron-LM's tensor- and sequence-parallel mappings and vocab-parallel
cross entropy, DeepSpeed-Ulysses' all-to-all, torch.distributed.nn.functional, flash-attention's
collectives, torchtitan's DTensor boundary), each labelled correct or wrong with the world sizes where a wrong one's bug shows.

    python benchmarks/parallel_bank.py                 # the table (about 2 minutes on 2 cores)
    python benchmarks/parallel_bank.py --json rows.json
    python benchmarks/parallel_bank.py --only megatron_copy_to_tp_region --worlds 1,2

Two columns judge each entry:
  brute force   ``parallel_bank/verify.py``: every world size of the record (1 to 4) on real gloo
                ranks, the assembled gradients against float64 autograd of the unsharded reference;
                it shows the world sizes where the gradient is wrong, marked ✓ when they are the
                label's ``bug_world_sizes`` (none for a correct entry)
  harness       ``gradcheck_suite.run_model`` on the entry's sharded record, where the harness has
                ``sharded_model``; "pass" counts as judging the code correct, "fail" or "error" as wrong
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

from parallel_bank import ParallelEntry, entries  # noqa: E402
from parallel_bank._entry import harness_has_sharded_model  # noqa: E402
from parallel_bank.verify import WORLD_SIZES, check_bank, label_holds  # noqa: E402


@dataclasses.dataclass
class Row:
    code: str
    source: str
    expected: str
    reason: str
    bug_world_sizes: list[int]
    brute_wrong_at: list[int] = dataclasses.field(default_factory=list)
    brute_holds: bool = False
    brute_detail: str = ""
    harness: str = "n/a"
    harness_detail: str = ""
    harness_seconds: float = 0.0


def _first_line(text: str, limit: int = 240) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def run_harness(entry: ParallelEntry, examples: int, case_timeout: float) -> tuple[str, str, float]:
    if not harness_has_sharded_model():
        return "n/a", "harness has no sharded_model", 0.0
    from gradcheck_suite import run_model

    start = time.perf_counter()
    try:
        record = entry.record.build()
    except Exception as e:  # a record the harness refuses
        return "error", f"record refused: {type(e).__name__}: {_first_line(e)}", time.perf_counter() - start
    try:
        run = run_model(record, examples=examples, case_timeout=case_timeout)
    except Exception as e:  # the harness itself crashed on this record
        return "error", f"run_model raised {type(e).__name__}: {_first_line(e)}", time.perf_counter() - start
    detail = ""
    if run.failure is not None:
        f = run.failure
        detail = f"{f.verdict}: {_first_line(f.summary or '; '.join(f.problems[:1]) or ', '.join(f.failing))}"
    elif run.problems:
        detail = _first_line(run.problems[0])
    return run.verdict, detail, time.perf_counter() - start


def _worlds(ws) -> str:
    return ",".join(str(w) for w in ws) if ws else "-"


def _harness_cell(r: Row) -> str:
    if r.harness == "n/a":
        return "n/a: harness has no sharded_model" if r.harness_detail == "harness has no sharded_model" else "n/a"
    right = (r.harness == "pass") == (r.expected == "correct")
    return f"{r.harness} {'✓' if right else '✗'}"


def _short_source(source: str) -> str:
    return source.split(";")[0].split(" (")[0]


def table(rows: list[Row]) -> str:
    lines = ["| entry | source | expected | bug world sizes | brute force: wrong at | harness |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.code} | {_short_source(r.source)} | {r.expected} | {_worlds(r.bug_world_sizes)} | "
              f"{_worlds(r.brute_wrong_at)} {'✓' if r.brute_holds else '✗'} | {_harness_cell(r)} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20, help="harness cases per entry (20)")
    parser.add_argument("--case-timeout", type=float, default=60.0, help="seconds per harness case (60)")
    parser.add_argument("--only", action="append", metavar="NAME", help="run this entry (repeatable)")
    parser.add_argument("--worlds", default=",".join(map(str, WORLD_SIZES)), help="world sizes (1,2,3,4)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    bank = entries()
    if args.only:
        unknown = sorted(set(args.only) - {e.code for e in bank})
        if unknown:
            parser.error(f"no entry named {', '.join(unknown)}")
        bank = [e for e in bank if e.code in args.only]
    worlds = tuple(int(w) for w in args.worlds.split(","))

    start = time.perf_counter()
    brute = check_bank(bank, worlds, log=lambda line: print(line, file=sys.stderr, flush=True))
    brute_seconds = time.perf_counter() - start
    rows = []
    for e in bank:
        holds, wrong_at = label_holds(e, brute[e.code])
        first = next((p[0] for _, p in sorted(brute[e.code].items()) if p), "")
        row = Row(e.code, e.source, e.expected, e.reason, [w for w in e.bug_world_sizes if w in worlds],
                  list(wrong_at), holds, first)
        row.harness, row.harness_detail, row.harness_seconds = run_harness(e, args.examples, args.case_timeout)
        rows.append(row)
    print(table(rows))
    n_correct = sum(r.expected == "correct" for r in rows)
    print(f"\n{len(rows)} entries ({n_correct} correct, {len(rows) - n_correct} wrong); brute force agrees with "
          f"{sum(r.brute_holds for r in rows)}/{len(rows)} labels, world sizes {_worlds(worlds)}, "
          f"{brute_seconds:.0f}s")
    judged = [r for r in rows if r.harness != "n/a"]
    if judged:
        right = sum((r.harness == "pass") == (r.expected == "correct") for r in judged)
        print(f"harness right on {right}/{len(judged)}")
    notes = [f"- {r.code}: brute force: {r.brute_detail}" for r in rows if r.brute_detail]
    notes += [f"- {r.code}: harness {r.harness}: {r.harness_detail}" for r in judged if r.harness_detail]
    if notes:
        print("\nFirst wrong case of each (brute force), and the harness's reason:\n" + "\n".join(notes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=2)
    return 0 if all(r.brute_holds for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
