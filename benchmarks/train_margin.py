"""How close correct models come to parting: ``train`` swept across the stability limit.

    python benchmarks/train_margin.py [--margin 10] [--steps 200] [--twins 2]

Correct models (``linear_regression``, ``mlp_relu``, ``two_layer_scalar``, and the tests'
tanh net with three backwards: its own, one that sums the batch last chunk first, one that
sums in float64) train at learning rates from a tenth of the stable step to several times
it, with SGD, momentum and Adam, in float32 and float64.  With ``--margin M`` the parting
line is M x the measured drift instead of ``rules.TRAIN_MARGIN``: at 1, the runs that would part
show how much room the chosen margin leaves.  ``--twins K`` trains with K rounding twins
instead of ``rules.TRAIN_TWINS`` (0: the float64 line alone).  Prints every run that parts, the
count of verdicts and the closest any run came (its distance over the drift); a correct model
must never come out ``manual diverges`` at the margin in use.

``--edges``: instead, the built-in models at their benchmark size and with every dim at 1, at
value scales 1e-3, 1 and 1e3, in float64, float32, float16 and bfloat16, 50 steps each, at
their own or the default learning rate; prints every run that is not ``same``.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gradcheck_suite.train import MANUAL, SAME, Options, train  # noqa: E402
from gradcheck_suite.verdict import rules  # noqa: E402
from gradcheck_suite import load  # noqa: E402
from tests.test_train import _tanh_net, _tanh_net_summed  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--margin", type=float, default=rules.TRAIN_MARGIN)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--twins", type=int, default=rules.TRAIN_TWINS, help="rounding twins (default %(default)s)")
    ap.add_argument("--edges", action="store_true", help="the built-in models at size 1, scales and dtypes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rules.TRAIN_MARGIN, rules.TRAIN_TWINS = args.margin, args.twins
    if args.edges:
        return edges()
    print(f"torch {torch.__version__}, 1 thread, {torch.backends.cpu.get_cpu_capability()} kernels, margin "
          f"{args.margin:g}, {args.twins} twins, load {os.getloadavg()}", flush=True)
    reg = load()
    counts: collections.Counter = collections.Counter()
    closest = (0.0, "")
    tanh = (0.003, 0.01, 0.03, 0.06, 0.1, 0.2, 0.4)
    for model, lrs in ((reg.get("linear_regression"), (1e-4, 3e-4, 4.4e-4, 4.7e-4, 5e-4, 8e-4)),
                       (_tanh_net("float32"), tanh), (_tanh_net_summed("reversed"), tanh),
                       (_tanh_net_summed("float64"), tanh),
                       (reg.get("mlp_relu"), (3e-7, 1e-6, 3e-6, 1e-5)),
                       (reg.get("two_layer_scalar"), (0.01, 0.1, 0.3, 1.0))):
        for optimizer, factor in (("sgd", 1), ("momentum", 2), ("adam", 30)):
            for lr in lrs:
                for dtype in ("float32", "float64"):
                    r = train(model, Options(lr=lr * factor, dtype=dtype, optimizer=optimizer,
                                                               steps=args.steps))
                    counts[r.verdict] += 1
                    ratio = max((d / e * args.margin for d, e in zip(r.distance, r.envelope) if d is not None and e),
                                default=0.0)
                    if r.verdict in (SAME, MANUAL) and ratio > closest[0]:
                        closest = (ratio, f"{model.name} {optimizer} lr {lr * factor:.3g} {dtype}")
                    if r.verdict == MANUAL:
                        print(f"{model.name} {optimizer} lr {lr * factor:.3g} {dtype}: {r.message}", flush=True)
    print(dict(counts), f"closest: {closest[0]:.3g} x the drift ({closest[1]})", f"load after {os.getloadavg()}")
    return 1 if counts[MANUAL] else 0


def edges() -> int:
    print(f"torch {torch.__version__}, 1 thread, edges, load {os.getloadavg()}", flush=True)
    reg = load()
    counts: collections.Counter = collections.Counter()
    for name in reg.names():
        model = reg.get(name)
        for dims in (None, {k: 1 for k in model.dims}):
            for scale in (1e-3, 1.0, 1e3):
                for dtype in ("float64", "float32", "float16", "bfloat16"):
                    r = train(model, Options(steps=50, dtype=dtype, dims=dims, scale=scale))
                    counts[r.verdict] += 1
                    if r.verdict != SAME:
                        size = "size 1" if dims else "bench size"
                        print(f"{name} {size} scale {scale:g} {dtype}: {r.verdict}: {r.message}", flush=True)
    print(dict(counts), f"load after {os.getloadavg()}")
    return 1 if counts[MANUAL] else 0


if __name__ == "__main__":
    sys.exit(main())
