"""What ``gradcheck-suite train`` costs next to training with autograd alone:

    python benchmarks/train_cost.py [--rounds 5] [--steps 100] [--threads 1]

Both sides train at the seed size (64x1000 -> 100 -> 10) for the same steps, with SGD at
lr 1e-6, from the same start, in one process:

- ``train``: ``gradcheck_suite.train.train``, the whole run (the manual and autograd runs, the envelope
  run where it is needed, the distances and the verdict);
- ``autograd alone``: the loop a user writes: forward with ``requires_grad`` leaves, the
  loss, ``loss.backward()``, ``optimizer.step()`` and ``zero_grad()``, in the same dtype.

Four cases: ``mlp_relu`` in float64 (the target: at most 3x), where the manual run never
leaves the envelope's floor and the float32 run is not needed; ``mlp_no_mask`` of
``examples/wrong.py`` in float64, which parts at step 1, so the float32 run and a second
float64 run replay from the start (the most a float64 model costs); ``mlp_relu`` in
float32, which always runs autograd in float32 and in float64 next to the manual run; and
``mlp_no_mask`` in float32, which parts at step 1, so the two rounding twins start there
(the most a float32 model costs).
Interleaved round by round; prints the medians, their ratio, the torch threads and the
load before and after.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gradcheck_suite import Case  # noqa: E402

from gradcheck_suite.check.case import build
from gradcheck_suite import load  # noqa: E402
from gradcheck_suite.train import Options, train  # noqa: E402

SEED_DIMS = {"N": 64, "D_in": 1000, "H": 100, "D_out": 10}


def autograd_alone(model, steps: int, lr: float, dtype: str):
    from gradcheck_suite.check.case import torch_dtype
    from gradcheck_suite import Tensors
    p, d = build(model, Case(model.name, SEED_DIMS, "float64", "cpu", 0, 1.0))
    dt = torch_dtype(dtype)
    p = {n: t.to(dt) for n, t in p.items()}
    d = Tensors((n, t.to(dt)) for n, t in d.items())

    def run() -> float:
        params = {n: t.clone().requires_grad_(True) for n, t in p.items()}
        opt = torch.optim.SGD(list(params.values()), lr=lr)
        for _ in range(steps):
            loss = model.forward(Tensors(params.items()), d)[0].sum()
            loss.backward()
            opt.step()
            opt.zero_grad()
        return float(loss.detach())
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reg = load([os.path.join(ROOT, "examples", "wrong.py")])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}", flush=True)
    for name, dtype, verdict in (("mlp_relu", "float64", "same"), ("mlp_no_mask", "float64", "manual diverges"),
                                 ("mlp_relu", "float32", "same"), ("mlp_no_mask", "float32", "manual diverges")):
        model = reg.get(name)
        alone = autograd_alone(model, args.steps, 1e-6, dtype)

        def whole(model=model, dtype=dtype, verdict=verdict):
            r = train(model, Options(steps=args.steps, lr=1e-6, dims=SEED_DIMS, dtype=dtype))
            assert r.verdict == verdict, r.message

        whole(), alone()          # warm
        times: dict[str, list[float]] = {"train": [], "autograd alone": []}
        for _ in range(args.rounds):
            for what, fn in (("train", whole), ("autograd alone", alone)):
                start = time.perf_counter()
                fn()
                times[what].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name} {dtype}, {args.steps} steps: train {med['train']:.3f} s, autograd alone "
              f"{med['autograd alone']:.3f} s (medians of {args.rounds}): ratio "
              f"{med['train'] / med['autograd alone']:.2f}", flush=True)
    print(f"load after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
