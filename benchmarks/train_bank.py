"""``gradcheck-suite train`` over the public bank: correct entries must train the same.

    python benchmarks/train_bank.py [--steps 100]

Each entry of ``benchmarks/public_bank/`` (other people's Functions, custom ops and numpy
layers, labelled correct or wrong and verified by ``public_bank.py --verify-labels``) trains
for K steps in its own dtype and in float32.  Prints one line per run, the count of
(label, verdict) pairs, and every correct entry that did not come out ``same``.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.public_bank import entries  # noqa: E402
from gradcheck_suite.train import Options, train  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, load {os.getloadavg()}", flush=True)
    counts: collections.Counter = collections.Counter()
    blamed = []
    start = time.perf_counter()
    for entry in entries():
        if entry.paths:        # the paths bank (public_bank.py --paths) is judged there, not trained here
            continue
        model = entry.record()
        for dtype in (None, "float32"):
            r = train(model, Options(steps=args.steps, dtype=dtype))
            counts[(entry.expected, r.verdict)] += 1
            if entry.expected == "correct" and r.verdict != "same":
                blamed.append(f"{entry.name} {r.dtype}: {r.message}")
            print(f"{entry.name:<36} {entry.expected:<8} {r.dtype:<8} {r.verdict:<16} {r.message[:70]}", flush=True)
    print()
    for (label, verdict), n in sorted(counts.items()):
        print(f"{label:<8} {verdict:<16} {n}")
    print("correct entries not 'same':", blamed or "none")
    print(f"{time.perf_counter() - start:.1f} s, load after {os.getloadavg()}")
    return 1 if blamed else 0


if __name__ == "__main__":
    sys.exit(main())
