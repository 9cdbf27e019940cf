"""What the ``batched`` stage's layouts after dim 0 (a Function's vmap rule with the batch at the
last dim of each input, and with inputs unbatched) cost, against the same check without them,
interleaved as ``feature_costs.py`` does:

    python benchmarks/vmap_dims_cost.py [--rounds 5] [--cases 10]

The seed MLP (64x1000->100->10, float64, relu) held as an ``autograd.Function`` in two forms: with
a ``vmap`` staticmethod of its own (``mlp_vmap_rule``) and with ``generate_vmap_rule = True``
(``mlp_generate``).  Prints the medians, the ratio, the torch threads (1) and the load before and
after.  This file is also a models file, for the whole stage's cost:

    python benchmarks/feature_costs.py --stage batched --models-from benchmarks/vmap_dims_cost.py --model mlp_vmap_rule
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from gradcheck_suite import Dim, op_model

SEED_DIMS = {"N": 64, "D_in": 1000, "H": 100, "D_out": 10}


def _mlp(generate: bool):
    def forward(x, w1, w2):
        return (x @ w1).clamp(min=0) @ w2

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, g):
        x, w1, w2 = ctx.saved_tensors
        h = x @ w1
        gh = (g @ w2.mT) * (h > 0)
        return None, x.mT @ gh, h.clamp(min=0).mT @ g

    def vmap(info, in_dims, x, w1, w2):
        front = [t.movedim(d, 0) if d is not None else t.expand(info.batch_size, *t.shape)
                 for t, d in zip((x, w1, w2), in_dims)]
        return fn.apply(*front), 0

    body = {"forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward)}
    if generate:
        body["generate_vmap_rule"] = True
    else:
        body["vmap"] = staticmethod(vmap)
    fn = type("MLPGenerate" if generate else "MLPVmapRule", (torch.autograd.Function,), body)
    return fn


def _model(generate: bool):
    return op_model(_mlp(generate), name="mlp_generate" if generate else "mlp_vmap_rule",
                    dims={n: Dim(1, 8, v) for n, v in SEED_DIMS.items()},
                    inputs={"w1": ("D_in", "H"), "w2": ("H", "D_out")}, data={"x": ("N", "D_in")},
                    args=("x", "w1", "w2"), reference=lambda x, w1, w2: (x @ w1).clamp(min=0) @ w2)


mlp_vmap_rule = _model(False)
mlp_generate = _model(True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", type=int, default=10)
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from feature_costs import interleaved, show

    from gradcheck_suite import Case, check_case
    from gradcheck_suite.check.stages import batched
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}", flush=True)
    layouts = batched._other_layouts
    for model in (mlp_vmap_rule, mlp_generate):
        cases = [Case(model.name, SEED_DIMS, "float64", "cpu", seed, 1.0) for seed in range(args.cases)]
        verdicts = set()

        def check(with_layouts: bool):
            batched._other_layouts = layouts if with_layouts else (lambda *a: [])
            try:
                for c in cases:
                    verdicts.add(check_case(model, c).verdict)
            finally:
                batched._other_layouts = layouts

        check(True)    # warm
        on, off = interleaved(args.rounds, lambda: check(True), lambda: check(False))
        show(f"{args.cases} cases of {model.name}, in_dims layouts", on, off)
        print(f"  verdicts: {sorted(verdicts)}", flush=True)
    print(f"load {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
