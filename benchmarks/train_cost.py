"""What ``gradcheck-suite train`` costs next to training with autograd alone:

    python benchmarks/train_cost.py [--rounds 5] [--steps 100] [--threads 1]

Both sides train ``mlp_relu`` at the seed size (64x1000 -> 100 -> 10, float64) for the
same steps, with SGD at the record's learning rate, from the same start, in one process:

- ``train``: ``training.train``, the whole run (manual, autograd and the float32 envelope
  run, the distances and the verdict);
- ``autograd alone``: the loop a user writes: forward with ``requires_grad`` leaves, the
  loss, ``loss.backward()``, ``optimizer.step()`` and ``zero_grad()``.

Interleaved round by round; prints the medians, their ratio (the target is at most 3x),
the torch threads and the load before and after.
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

from gradcheck_suite.case import Case, build  # noqa: E402
from gradcheck_suite.registry import load  # noqa: E402
from gradcheck_suite.training import Options, train  # noqa: E402

SEED_DIMS = {"N": 64, "D_in": 1000, "H": 100, "D_out": 10}


def autograd_alone(model, steps: int, lr: float):
    p, d = build(model, Case(model.name, SEED_DIMS, "float64", "cpu", 0, 1.0))

    def run() -> float:
        params = {n: t.clone().requires_grad_(True) for n, t in p.items()}
        opt = torch.optim.SGD(list(params.values()), lr=lr)
        from gradcheck_suite.spec import Tensors
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
    model = load().get("mlp_relu")
    lr = model.train["lr"]
    alone = autograd_alone(model, args.steps, lr)

    def whole():
        r = train(model, Options(steps=args.steps, dims=SEED_DIMS))
        assert r.verdict == "same", r.message

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}", flush=True)
    whole(), alone()          # warm
    times: dict[str, list[float]] = {"train": [], "autograd alone": []}
    for _ in range(args.rounds):
        for what, fn in (("train", whole), ("autograd alone", alone)):
            start = time.perf_counter()
            fn()
            times[what].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:<16} median {v:7.3f} s over {args.rounds} rounds ({', '.join(f'{t:.3f}' for t in times[k])})")
    print(f"ratio train / autograd alone: {med['train'] / med['autograd alone']:.2f} "
          f"(mlp_relu at the seed size, {args.steps} steps; target <= 3)")
    print(f"load after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
