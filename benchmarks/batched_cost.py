"""What the ``batched`` stage (the backward under vmap) costs, against the same check without it,
interleaved as ``feature_costs.py`` does:

    python benchmarks/batched_cost.py [--rounds 5] [--cases 10]

The seed MLP (64x1000->100->10, float64, relu) held as an ``autograd.Function``, in two
forms: with ``generate_vmap_rule = True`` (both halves of the stage: the backward over a
batch of upstream gradients, and the Function under ``torch.vmap`` against a loop) and
without a vmap rule (the first half only).  Prints the medians, the ratio, the torch threads
(1) and the load before and after.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from feature_costs import interleaved, show  # noqa: E402

SEED_DIMS = {"N": 64, "D_in": 1000, "H": 100, "D_out": 10}


def _mlp(generate: bool):
    def forward(x, w1, w2):
        h = x @ w1
        return h.clamp(min=0) @ w2

    def setup_context(ctx, inputs, output):
        x, w1, w2 = inputs
        ctx.save_for_backward(x, w1, w2)

    def backward(ctx, g):
        x, w1, w2 = ctx.saved_tensors
        h = x @ w1
        gh = (g @ w2.T) * (h > 0)
        return None, x.T @ gh, h.clamp(min=0).T @ g

    body = {"forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward)}
    if generate:
        body["generate_vmap_rule"] = True
    return type("MLP" + ("Vmap" if generate else ""), (torch.autograd.Function,), body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", type=int, default=10)
    args = parser.parse_args(argv)

    from gradcheck_suite import Case, Dim, check_case, op_model
    from gradcheck_suite.check import pipeline
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}", flush=True)
    dims = {n: Dim(1, 8, v) for n, v in SEED_DIMS.items()}
    stages = pipeline.STAGES
    without = tuple(s for s in stages if s.name != "batched")
    for generate in (True, False):
        model = op_model(_mlp(generate), name="mlp_function", dims=dims,
                         inputs={"w1": ("D_in", "H"), "w2": ("H", "D_out")}, data={"x": ("N", "D_in")},
                         args=("x", "w1", "w2"), reference=lambda x, w1, w2: (x @ w1).clamp(min=0) @ w2)
        cases = [Case("mlp_function", SEED_DIMS, "float64", "cpu", seed, 1.0) for seed in range(args.cases)]
        verdicts = set()

        def check(stage_list):
            pipeline.STAGES = stage_list
            try:
                for c in cases:
                    verdicts.add(check_case(model, c).verdict)
            finally:
                pipeline.STAGES = stages

        on, off = interleaved(args.rounds, lambda: check(stages), lambda: check(without))
        show(f"{args.cases} cases, {'generate_vmap_rule' if generate else 'no vmap rule'}", on, off)
        print(f"  verdicts: {sorted(verdicts)}", flush=True)
    print(f"load {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
