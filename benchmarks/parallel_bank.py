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
                ``sharded_model``: once as a user runs it (the world size drawn with the rest of the
                case: the verdict, the world size of the case it reports, and its one-line message),
                then once per world size (``--world-examples`` cases at that world size only: the
                world sizes where the harness flags the entry, beside the label's); "pass" counts
                as judging the code correct, "fail" or "error" as wrong

torch.autograd.gradcheck has no column: it runs the Function in one plain process, where the first
collective raises (no process group); run on each rank of a group, it would perturb and compare
each rank's local Jacobian while the backward's collectives sum the ranks' one-hot upstream
gradients, so its verdict would not be about the sharded Function.
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
    brute_ran: bool = True
    harness: str = "n/a"
    harness_detail: str = ""
    harness_seconds: float = 0.0
    harness_world: int | None = None            # the world size of the case the harness reports
    harness_flags_at: list[int] = dataclasses.field(default_factory=list)   # world sizes where it does not pass
    harness_per_world: dict = dataclasses.field(default_factory=dict)       # W -> [verdict, seconds, message]


def _first_line(text: str, limit: int = 400) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def run_harness(entry: ParallelEntry, examples: int, case_timeout: float,
                hyper: dict | None = None) -> tuple[str, str, float, int | None]:
    """The harness's verdict on the entry, its one-line message, the seconds it took, and the
    world size of the case it reports (None where it passes)."""
    if not harness_has_sharded_model():
        return "n/a", "harness has no sharded_model", 0.0, None
    from gradcheck_suite import run_model

    start = time.perf_counter()
    try:
        record = entry.record.build()
    except Exception as e:  # a record the harness refuses
        return "error", f"record refused: {type(e).__name__}: {_first_line(e)}", time.perf_counter() - start, None
    try:
        run = run_model(record, examples=examples, case_timeout=case_timeout, hyper=hyper)
    except Exception as e:  # the harness itself crashed on this record
        return "error", f"run_model raised {type(e).__name__}: {_first_line(e)}", time.perf_counter() - start, None
    detail, world = "", None
    if run.failure is not None:
        f = run.failure
        detail = _first_line(f.summary or '; '.join(f.problems[:1]) or ', '.join(f.failing))
        world = f.case.hyper.get("world_size")
    elif run.problems:
        detail = _first_line(run.problems[0])
    return run.verdict, detail, time.perf_counter() - start, world


def _worlds(ws) -> str:
    return ",".join(str(w) for w in ws) if ws else "-"


def _harness_cell(r: Row) -> str:
    if r.harness == "n/a":
        return "n/a: harness has no sharded_model" if r.harness_detail == "harness has no sharded_model" else "n/a"
    right = (r.harness == "pass") == (r.expected == "correct")
    return f"{r.harness} {'✓' if right else '✗'}"


def _short_source(source: str) -> str:
    return source.split(";")[0].split(" (")[0]


def _brute_cell(r: Row) -> str:
    return f"{_worlds(r.brute_wrong_at)} {'✓' if r.brute_holds else '✗'}" if r.brute_ran else "not run"


def table(rows: list[Row]) -> str:
    lines = ["| entry | source | expected | label: bug at W | brute force: wrong at W | harness | harness: case W "
             "| harness flags at W | s | harness message |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flags = "" if r.harness == "n/a" else _worlds(r.harness_flags_at) + (
            "" if r.harness_flags_at == r.bug_world_sizes else " ≠")
        message = r.harness_detail.replace("|", "\\|") if (r.harness != "pass" or r.expected == "wrong") else ""
        lines.append(f"| {r.code} | {_short_source(r.source)} | {r.expected} | {_worlds(r.bug_world_sizes)} | "
                     f"{_brute_cell(r)} | {_harness_cell(r)} | "
                     f"{r.harness_world or '-'} | {flags} | {r.harness_seconds:.1f} | {message} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20, help="harness cases per entry (20)")
    parser.add_argument("--world-examples", type=int, default=6,
                        help="harness cases at each world size alone, for the world sizes it flags (6; 0: skip)")
    parser.add_argument("--no-brute", action="store_true", help="skip the brute-force column (the harness only)")
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
    brute = {e.code: {} for e in bank} if args.no_brute else \
        check_bank(bank, worlds, log=lambda line: print(line, file=sys.stderr, flush=True))
    brute_seconds = time.perf_counter() - start
    rows = []
    load = os.getloadavg()
    harness_start = time.perf_counter()
    for e in bank:
        holds, wrong_at = label_holds(e, brute[e.code])
        first = next((p[0] for _, p in sorted(brute[e.code].items()) if p), "")
        row = Row(e.code, e.source, e.expected, e.reason, [w for w in e.bug_world_sizes if w in worlds],
                  list(wrong_at), holds, first, not args.no_brute)
        row.harness, row.harness_detail, row.harness_seconds, row.harness_world = run_harness(
            e, args.examples, args.case_timeout)
        if args.world_examples and row.harness != "n/a":
            for w in [w for w in worlds if w in e.record.world_sizes]:
                verdict, detail, seconds, _ = run_harness(e, args.world_examples, args.case_timeout,
                                                          hyper={"world_size": w})
                row.harness_per_world[w] = [verdict, round(seconds, 2), detail]
                if verdict != "pass":
                    row.harness_flags_at.append(w)
        print(f"  {e.code}: harness {row.harness} ({row.harness_seconds:.1f} s), flags at "
              f"{_worlds(row.harness_flags_at)}", file=sys.stderr, flush=True)
        rows.append(row)
    harness_seconds = time.perf_counter() - harness_start
    print(table(rows))
    n_correct = sum(r.expected == "correct" for r in rows)
    print(f"\n{len(rows)} entries ({n_correct} correct, {len(rows) - n_correct} wrong); brute force agrees with "
          f"{sum(r.brute_holds for r in rows)}/{len(rows)} labels, world sizes {_worlds(worlds)}, "
          f"{brute_seconds:.0f}s")
    judged = [r for r in rows if r.harness != "n/a"]
    if judged:
        right = sum((r.harness == "pass") == (r.expected == "correct") for r in judged)
        print(f"harness right on {right}/{len(judged)}; flags exactly the label's world sizes on "
              f"{sum(r.harness_flags_at == r.bug_world_sizes for r in judged)}/{len(judged)}; "
              f"{harness_seconds:.0f} s in all ({sum(r.harness_seconds for r in judged):.0f} s as a user runs it, "
              f"{args.examples} cases each; the rest per world size, {args.world_examples} each); "
              f"load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    notes = [f"- {r.code}: brute force: {r.brute_detail}" for r in rows if r.brute_detail]
    notes += [f"- {r.code}: harness {r.harness}: {r.harness_detail}" for r in judged if r.harness_detail]
    notes += [f"- {r.code}: harness at W={w}: {v[0]}: {v[2]}" for r in judged for w, v in r.harness_per_world.items()
              if v[0] != "pass" and (r.expected == "correct" or w not in r.bug_world_sizes)]
    if notes:
        print("\nFirst wrong case of each (brute force), and the harness's reason:\n" + "\n".join(notes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=2)
    return 0 if args.no_brute or all(r.brute_holds for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
