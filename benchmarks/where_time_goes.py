"""Where a check's time goes: one case under cProfile, and the garbage collector in a CLI run.

    python benchmarks/where_time_goes.py [--factor 1] [--cases 200] [--cli-allocator]

1. ``--cases`` cases of mlp_relu at ``--factor`` times its seed size (64x1000->100->10,
   float64, one torch thread), under cProfile: the calls that take the most time of
   their own, per case.
2. ``gradcheck-suite check mlp_relu --dims N=64,D_in=1000,H=100,D_out=10 --dtype float64``
   run in this process with a callback on the garbage collector: how many collections of
   each generation ran, and for how long, against the whole run; once as the CLI runs,
   and once with its ``gc.freeze`` left out, so that every full collection scans torch's
   objects again.
3. In a fresh process with torch imported, the import that torch.autograd.grad's
   ``grad_outputs`` path triggers on its first use (``torch.fx.experimental.symbolic_shapes``,
   sympy with it), which the checker avoids.

It prints the load and the thread count with the figures.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import subprocess
import sys
import time

import torch


def _profile(factor: float, cases: int) -> None:
    from gradcheck_suite import Case, check_case, load

    model = load().get("mlp_relu")
    dims = {k: max(1, round(v * factor)) for k, v in model.bench_dims.items()}
    case = Case(model.name, dims, "float64", "cpu", 1, 1.0)
    for _ in range(3):
        check_case(model, case)
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    for _ in range(cases):
        check_case(model, case)
    prof.disable()
    per_case = (time.perf_counter() - start) / cases
    print(f"mlp_relu at {factor}x ({dims}): {1e3 * per_case:.2f} ms a case under the profiler")
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]   # by time of their own
    print(f"{'ms/case':>8} {'calls/case':>10}  function")
    for (path, line, name), (_, calls, own, _, _) in rows:
        where = f"{os.path.basename(path)}:{line}({name})" if line else name
        print(f"{1e3 * own / cases:8.3f} {calls / cases:10.1f}  {where}")


def _collections(freeze: bool) -> None:
    from gradcheck_suite.commands import main

    spans: list[list] = []

    def watch(phase, info):
        if phase == "start":
            spans.append([info["generation"], time.perf_counter()])
        else:
            spans[-1].append(time.perf_counter())

    gc.unfreeze()
    saved = gc.freeze
    if not freeze:
        gc.freeze = lambda: None
    gc.callbacks.append(watch)
    start = time.perf_counter()
    try:
        main(["check", "mlp_relu", "--dims", "N=64,D_in=1000,H=100,D_out=10", "--dtype", "float64",
              "--no-progress"])
    finally:
        gc.callbacks.remove(watch)
        gc.freeze = saved
    total = time.perf_counter() - start
    print(f"\nCLI run {'as it runs' if freeze else 'without gc.freeze'}: {total:.2f} s")
    for gen in (0, 1, 2):
        mine = [end - begin for g, begin, *rest in spans if g == gen for end in rest[:1]]
        print(f"  generation {gen}: {len(mine)} collections, {1e3 * sum(mine):.1f} ms")


def _grad_outputs_import() -> None:
    code = ("import time, torch\nt = time.perf_counter()\nimport torch.fx.experimental.symbolic_shapes\n"
            "print(time.perf_counter() - t)")
    took = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(3)]
    print(f"\ngrad_outputs' first-use import: {min(took):.2f}-{max(took):.2f} s (3 fresh processes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factor", type=float, default=1.0)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--cli-allocator", action="store_true",
                    help="keep freed memory for reuse first, as gradcheck-suite check does (glibc only)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cli_allocator:
        from gradcheck_suite.run.limits import keep_freed_memory
        print(f"allocator keeps freed memory: {keep_freed_memory()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}")
    _profile(args.factor, args.cases)
    _collections(freeze=False)
    _collections(freeze=True)
    _grad_outputs_import()
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
