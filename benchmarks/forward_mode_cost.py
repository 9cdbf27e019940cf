"""What the forward-mode stage costs, against the same check without it, interleaved:

    python benchmarks/forward_mode_cost.py [--rounds 5] [--cases 10]

An ``autograd.Function`` with ``jvp`` for y = tanh(x @ w) at the seed MLP's first layer
(x 64x1000, w 1000x100, float64), ``--cases`` cases in process, with and without the
``forward mode`` stage of ``check.pipeline.STAGES``.  Prints the medians, the ratio, the
torch threads (1) and the load before and after.  The same ``tanh_linear`` record serves
``feature_costs.py --stage "forward mode" --models-from benchmarks/forward_mode_cost.py
--model tanh_linear`` (20 cases at its benchmark size, the same sizes).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from gradcheck_suite import Case, Dim, check_case, op_model
from gradcheck_suite.check import pipeline


class TanhLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        y = torch.tanh(x @ w)
        ctx.save_for_backward(x, w, y)
        ctx.save_for_forward(x, w, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, w, y = ctx.saved_tensors
        gz = g * (1 - y * y)
        return gz @ w.T, x.T @ gz

    @staticmethod
    def jvp(ctx, tx, tw):
        x, w, y = ctx.saved_tensors
        return (1 - y * y) * (tx @ w + x @ tw)


MODEL = op_model(TanhLinear, name="tanh_linear",
                 dims={"N": Dim(1, 64, 64), "I": Dim(1, 1000, 1000), "O": Dim(1, 100, 100)},
                 inputs={"x": ("N", "I"), "w": ("I", "O")}, reference=lambda x, w: torch.tanh(x @ w))
SEED_DIMS = {"N": 64, "I": 1000, "O": 100}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}", flush=True)
    cases = [Case(MODEL.name, SEED_DIMS, "float64", "cpu", seed, 1.0) for seed in range(args.cases)]
    stages = pipeline.STAGES
    without = tuple(s for s in stages if s.name != "forward mode")
    assert len(without) == len(stages) - 1

    def run_all(with_stage: bool):
        pipeline.STAGES = stages if with_stage else without
        try:
            verdicts = {check_case(MODEL, c).verdict for c in cases}
        finally:
            pipeline.STAGES = stages
        assert verdicts == {"pass"}, verdicts

    on, off = [], []
    for _ in range(args.rounds):
        for flag, into in ((True, on), (False, off)):
            start = time.perf_counter()
            run_all(flag)
            into.append(time.perf_counter() - start)
    a, b = statistics.median(on), statistics.median(off)
    print(f"{'forward mode, tanh_linear 64x1000->100, ' + str(args.cases) + ' cases':<44} with {a:7.3f} s   "
          f"without {b:7.3f} s   ratio {a / b:5.2f}   difference {1000 * (a - b) / args.cases:+7.1f} ms a case",
          flush=True)
    print(f"load after {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
