"""What a sharded record costs: the rank pool's start-up and a case, for world sizes 2 and 4,
and a whole quick check of one sharded record.

    python benchmarks/sharded_cost.py [--cases 20] [--rounds 3]

Start-up is measured three ways: cold (the process that forks the ranks starts too: one
import of torch), warm (that process is up: the ranks are forked and join the process
group), and a restart after a failed case (the pool is killed and started again).  A case is
measured as a bare round trip to the ranks (one all-reduce of 8 numbers) and as one whole
case of ``examples/tensor_parallel.py``'s ``column_parallel_linear`` through every stage
(``check_case``; its forward and backward calls each go to the ranks).  Each figure is the
median of its rounds; the machine's load (``uptime``) is printed before and after.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def echo(payload, rank, world_size):
    """A task: one all-reduce of 8 numbers, as a round trip to the ranks."""
    import torch
    import torch.distributed as dist

    t = torch.ones(8)
    dist.all_reduce(t)
    return float(t[0])


def fail(payload, rank, world_size):
    """A task whose rank 0 raises before the collective the others wait in."""
    import torch
    import torch.distributed as dist

    if rank == 0:
        raise ValueError("a failed case")
    dist.all_reduce(torch.ones(8))


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20, help="cases per world size (default: 20)")
    ap.add_argument("--rounds", type=int, default=3, help="start-ups of each kind per world size (default: 3)")
    ap.add_argument("--no-whole", action="store_true", help="leave out the whole quick check")
    args = ap.parse_args()

    import torch

    from gradcheck_suite import check_case, load, run_model
    from gradcheck_suite.check.case import Case
    from gradcheck_suite.kinds import ranks

    torch.set_num_threads(1)
    print("before:", _uptime())
    model = load([os.path.join(ROOT, "examples", "tensor_parallel.py")], builtin=False).get("column_parallel_linear")
    task = f"{__name__ if __name__ != '__main__' else 'sharded_cost'}:echo"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for world in (2, 4):
        cold, warm, restart, trip, case = [], [], [], [], []
        for _ in range(args.rounds):
            ranks.close_all()
            t = time.perf_counter()
            ranks.pool(world).run(task, [None] * world)
            cold.append(time.perf_counter() - t)
            ranks.pool(world).close()
            t = time.perf_counter()
            ranks.pool(world).run(task, [None] * world)
            warm.append(time.perf_counter() - t)
            try:
                ranks.pool(world).run(task.replace(":echo", ":fail"), [None] * world)
            except ranks.RankError:
                pass
            t = time.perf_counter()
            ranks.pool(world).run(task, [None] * world)
            restart.append(time.perf_counter() - t)
        pool = ranks.pool(world)
        for _ in range(args.cases):
            t = time.perf_counter()
            pool.run(task, [None] * world)
            trip.append(time.perf_counter() - t)
        dims = {"n": 4, "k": 6, "m": 8}
        for seed in range(args.cases):
            res = check_case(model, Case(model.name, dims, "float64", "cpu", seed, 1.0, {"world_size": world}))
            assert res.verdict == "pass", (res.verdict, res.problems)
            case.append(res.seconds)
        med = statistics.median
        rows.append((world, med(cold), med(warm), med(restart), med(trip), med(case)))
    print(f"{'world size':>10} {'cold start':>11} {'warm start':>11} {'restart':>9} {'round trip':>11} {'whole case':>11}")
    for world, cold, warm, restart, trip, case in rows:
        print(f"{world:>10} {cold:>10.2f}s {warm:>10.3f}s {restart:>8.3f}s {1e3 * trip:>9.1f}ms {1e3 * case:>9.1f}ms")
    if not args.no_whole:
        ranks.close_all()
        t = time.perf_counter()
        run = run_model(model)
        print(f"a whole quick check of {model.name} ({run.checked} cases, world sizes "
              f"{sorted(run.world_sizes)}, pools started from nothing): {time.perf_counter() - t:.1f}s, {run.verdict}")
    ranks.close_all()
    print("after:", _uptime())


if __name__ == "__main__":
    main()
