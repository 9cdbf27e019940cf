"""How long does a correct collective wait on CPU gloo, and what does comparing the ranks'
collectives before each one cost?  The figures behind ``rules.SHARDED_TIMEOUT`` and the
mismatch check of ``gradcheck_suite/kinds/collectives.py``.

    python benchmarks/collective_wait.py                 # world size 4, tests' and the parallel bank's records
    python benchmarks/collective_wait.py --world 2 --examples 6 --rounds 5
    python benchmarks/collective_wait.py --part cost --tests-only     # part 2 on the tests' records

Part 1: every right record of tests/sharded_models.py and every correct entry of the parallel
bank (where its modules are present) is checked at the world size, and the longest time any
rank spent in one collective (from its call, waiting for the others included, to its return)
is printed: the timeout must be far above it under the machine's load (shown by ``uptime``).

Part 2: the same checks side by side with the comparison on and off (interleaved rounds, so
that the machine's load falls on both alike), and a task of 200 all-reduces of 4x8 doubles.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from gradcheck_suite import run_model  # noqa: E402
from gradcheck_suite.kinds import ranks  # noqa: E402
from tests import sharded_models as sm  # noqa: E402

RIGHT = ["copy_allreduce", "copy_identity_replicated", "reduce_identity", "gather_reduce_scatter", "scatter_last",
         "column_linear", "row_linear", "row_linear_partial"]


def gradcheck_models() -> list:
    """The parallel bank's correct entries as records of this module (the ranks load them from
    here, by this factory), where the bank's modules are present."""
    import gradcheck_suite
    try:
        from parallel_bank import entries
        bank = entries()
    except (SystemExit, ImportError) as e:
        print(f"(parallel bank left out: {e})")
        return []
    found = []
    for e in bank:
        if e.expected != "correct":
            continue
        try:
            found.append(gradcheck_suite.sharded_model(e.record.op, **e.record.kwargs()))
        except Exception as err:   # a record the harness refuses: not a timing
            print(f"(left out {e.code}: {type(err).__name__})")
    return found


def records(world: int, tests_only: bool = False) -> list:
    found = [getattr(sm, n) for n in RIGHT] + ([] if tests_only else gradcheck_models())
    return [m for m in found if world in m.hyper.get("world_size", ())]


def many_all_reduces(payload, rank, world_size):
    import torch
    import torch.distributed as dist
    t = torch.ones(4, 8, dtype=torch.float64)
    for _ in range(200):
        dist.all_reduce(t)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=4)
    parser.add_argument("--examples", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--part", choices=["wait", "cost", "both"], default="both")
    parser.add_argument("--tests-only", action="store_true", help="the records of tests/sharded_models.py only")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    pool = ranks.pool(args.world)
    pool.measure = True
    models = records(args.world, args.tests_only)
    if args.part != "cost":
        wait(models, pool, args)
    if args.part != "wait":
        cost(models, args)
    ranks.close_all()


def wait(models: list, pool, args) -> None:
    longest: dict[str, float] = {}
    for m in models:
        pool.longest = 0.0
        run = run_model(m, examples=args.examples, hyper={"world_size": args.world})
        longest[m.name] = pool.longest
        print(f"{m.name:40s} {run.verdict:5s} longest collective {pool.longest * 1e3:8.1f} ms")
    worst = max(longest, key=longest.get)
    print(f"slowest correct collective at world size {args.world}: {longest[worst] * 1e3:.1f} ms ({worst}); "
          f"rules.SHARDED_TIMEOUT is {ranks.rules.SHARDED_TIMEOUT:g} s")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


def cost(models: list, args) -> None:
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    times: dict[bool, list[float]] = {True: [], False: []}
    micro: dict[bool, list[float]] = {True: [], False: []}
    task = "collective_wait:many_all_reduces"
    for _ in range(args.rounds):
        for match in (True, False):
            pool = ranks.pool(args.world)
            pool.match = match
            begun = time.perf_counter()
            for m in models:
                run_model(m, examples=args.examples, hyper={"world_size": args.world})
            times[match].append(time.perf_counter() - begun)
            begun = time.perf_counter()
            pool.run(task, [None] * args.world)
            micro[match].append((time.perf_counter() - begun) / 200)
    pool.match = True
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"checks of {len(models)} records, {args.examples} examples, world size {args.world}: "
          f"compared {on:.2f} s, not compared {off:.2f} s (medians of {args.rounds}; {100 * (on - off) / off:+.1f}%)")
    print(f"one all_reduce of 4x8 float64: compared {statistics.median(micro[True]) * 1e3:.3f} ms, "
          f"not compared {statistics.median(micro[False]) * 1e3:.3f} ms")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
