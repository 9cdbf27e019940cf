"""What the compiled stage costs, against the same work without it, interleaved:

    python benchmarks/compile_cost.py [--rounds 3] [--main /work/main/.venv/bin/gradcheck-suite]

- stage: an ``autograd.Function`` (y = x · sigmoid(w), with ``setup_context``, so torch.func
  takes it too) at the seed size, 64x1000, float64: ``check_case`` on 5 cases with the case's
  ``compile="aot_eager"`` against the same cases with ``compile=None``; and the same per
  case at a small size (4x4), where compiling is all the cost;
- quick: ``gradcheck-suite check --no-progress`` over the built-in models, whole processes,
  this checkout (the stage is off in the quick profile) against ``--main``'s command where
  given.

Each prints the medians, the ratio, the torch threads (1) and the load before and after.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from feature_costs import CLI, interleaved, show  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--main", default=None, help="another checkout's gradcheck-suite command, for the quick run")
    args = parser.parse_args(argv)

    import torch

    from gradcheck_suite import Case, Dim, check_case, op_model
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}", flush=True)

    class Scaled(torch.autograd.Function):
        @staticmethod
        def forward(x, w):
            return x * torch.sigmoid(w)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            s = torch.sigmoid(w)
            return g * s, g * x * s * (1 - s)

    model = op_model(Scaled, name="scaled", dims={"N": Dim(1, 64, 64), "F": Dim(1, 1000, 1000)},
                     inputs={"x": ("N", "F"), "w": ("N", "F")}, reference=lambda x, w: x * torch.sigmoid(w))
    for dims, label in (({"N": 64, "F": 1000}, "64x1000"), ({"N": 4, "F": 4}, "4x4")):
        cases = [Case("scaled", dims, "float64", "cpu", seed, 1.0) for seed in range(5)]
        compiled = [dataclasses.replace(c, compile="aot_eager") for c in cases]
        for c in compiled:
            res = check_case(model, c)
            assert res.verdict == "pass" and not any("compile" in n for n in res.notes), (res.verdict, res.notes)
        on, off = interleaved(args.rounds, lambda: [check_case(model, c) for c in compiled],
                              lambda: [check_case(model, c) for c in cases])
        show(f"Function {label}, 5 cases, aot_eager", on, off)

    if args.main:
        env = dict(os.environ, GRADCHECK_SUITE_HEARTBEAT="0")

        def quick(cmd):
            return lambda: subprocess.run([cmd, "check", "--builtin", "--no-progress"], cwd="/tmp", env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        on, off = interleaved(args.rounds, quick(CLI[0]), quick(args.main))
        show("quick check of the built-ins, this vs main", on, off)
    print(f"load after {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
