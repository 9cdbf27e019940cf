"""One check against torch.autograd.gradcheck(fast_mode=True), in process, imports excluded.

For mlp_relu at 0.25x, 1x, 2x and 4x its seed size (64x1000->100->10, float64), this times
three things in interleaved rounds, so that drift on a shared machine hits all alike; in
each round each runs ``--block`` times in a row and the median is kept, so that each is
timed in the memory state it leaves itself (as in a run of many cases), not in the one the
other left behind (with glibc's default allocator that switch alone costs a few ms of page
faults, to either side):

- ``check``: one full case of the harness (both oracles, every contract check);
- ``gradcheck fast``: torch's fast mode on the same manual backward wrapped in an
  autograd.Function (w1 and w2 as the inputs);
- ``floor``: one manual forward+backward plus one autograd forward+backward.

It prints the medians and the ratios check/gradcheck and check/floor, with the thread
count and the load, and the median page faults per run of each (memory first touched,
which the C library's allocator decides).  With ``--cli-allocator`` the process first makes
the allocator setting the CLI makes (``limits.keep_freed_memory``: freed memory is kept for reuse, not
faulted in again page by page); both sides then run with it.

Usage: ``python benchmarks/check_speed.py [--rounds N] [--block K] [--threads T] [--cli-allocator]``.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

from gradcheck_suite import Case, check_case, load
from gradcheck_suite import Tensors


def _function(model, d):
    class Manual(torch.autograd.Function):
        @staticmethod
        def forward(ctx, w1, w2):
            out, cache = model.forward(Tensors(w1=w1, w2=w2), d)
            ctx.save_for_backward(w1, w2)
            ctx.cache = cache
            return out

        @staticmethod
        def backward(ctx, g):
            w1, w2 = ctx.saved_tensors
            grads = model.backward(Tensors(w1=w1, w2=w2), d, ctx.cache, g)
            return grads["w1"], grads["w2"]

    return Manual


def _timed(fn, faults: list[int]) -> float:
    """``fn``'s wall time; the page faults it took (memory first touched) go on ``faults``."""
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    ap.add_argument("--factors", default="0.25,1,2,4")
    ap.add_argument("--block", type=int, default=5,
                    help="runs of each in a row per round, their median kept (default: 5): each then runs "
                         "in the memory state it leaves itself, as in a run of many cases, not in the one "
                         "the other left (with glibc's default allocator, a switch can cost a few ms in page faults)")
    ap.add_argument("--cli-allocator", action="store_true",
                    help="keep freed memory for reuse, as gradcheck-suite check does (glibc only)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.cli_allocator:
        from gradcheck_suite.run.limits import keep_freed_memory
        print(f"allocator keeps freed memory: {keep_freed_memory()}")
    model = load().get("mlp_relu")
    from gradcheck_suite.check.case import build
    from gradcheck_suite.verdict.oracles import autograd

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}")
    print(f"{'size':>6} {'check ms':>9} {'gradcheck ms':>13} {'floor ms':>9} {'check/gc':>9} {'check/floor':>12} "
          f"{'faults: check':>14} {'gradcheck':>10}")
    for factor in (float(f) for f in args.factors.split(",")):
        dims = {k: max(1, round(v * factor)) for k, v in model.bench_dims.items()}
        case = Case(model.name, dims, "float64", "cpu", 1, 1.0)
        p, d = build(model, case)
        Manual = _function(model, d)
        w1, w2 = (p[n].clone().requires_grad_(True) for n in ("w1", "w2"))
        g = torch.tensor(1.7, dtype=torch.float64)

        def check():
            res = check_case(model, case)
            assert res.verdict == "pass", res.problems

        def gradcheck():
            assert torch.autograd.gradcheck(Manual.apply, (w1, w2), fast_mode=True)

        def floor():
            out, cache = model.forward(p, d)
            model.backward(p, d, cache, g)
            autograd(model, p, d, g)

        times = {"check": [], "gradcheck": [], "floor": []}
        faults = {name: [] for name in times}
        for fn in (check, gradcheck, floor):      # warm-up
            fn()
        for _ in range(args.rounds):
            for name, fn in (("check", check), ("gradcheck", gradcheck), ("floor", floor)):
                times[name].append(statistics.median(_timed(fn, faults[name]) for _ in range(args.block)))
        ratio_gc = statistics.median(c / g_ for c, g_ in zip(times["check"], times["gradcheck"]))
        ratio_floor = statistics.median(c / f for c, f in zip(times["check"], times["floor"]))
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        print(f"{factor:>5}x {med['check']:>9.2f} {med['gradcheck']:>13.2f} {med['floor']:>9.2f} "
              f"{ratio_gc:>9.2f} {ratio_floor:>12.2f} {statistics.median(faults['check']):>14.0f} "
              f"{statistics.median(faults['gradcheck']):>10.0f}")
    _wrong_backward(model)
    print(f"load after: {os.getloadavg()}")


def _wrong_backward(model) -> None:
    """A backward without the ReLU mask at the seed size: time to the report, shrinking included."""
    import dataclasses

    from gradcheck_suite import run_model

    def backward(p, d, cache, g):
        a, r = cache
        gy = (2 * g) * r
        return {"w1": d.x.T @ (gy @ p.w2.T), "w2": a.T @ gy}

    wrong = dataclasses.replace(model, name="mlp_no_mask", backward=backward)
    t0 = time.perf_counter()
    run = run_model(wrong, dims=model.bench_dims)
    seconds = time.perf_counter() - t0
    print(f"wrong backward at the seed size: {run.verdict} on {run.failure.failing} in {seconds:.2f} s "
          f"({run.checked} case(s) judged, {run.shrink_steps} shrink steps; case {run.failure.case.describe()})")


if __name__ == "__main__":
    main()
