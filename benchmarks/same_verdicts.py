"""Do two versions of the checker reach the same verdicts?  For speed work, whose rule is that
verdicts must not change.

    python benchmarks/same_verdicts.py REV [--cases 40] [--dtype float32]

Checks out ``REV`` (a commit, a branch) into a temporary git worktree and runs the same fixed
cases under it and under this working tree, each in its own process: ``--cases`` per model
over the built-in models and the correct models of ``tests/models/verdict_trust.py``, with
dims drawn over each model's range, scales log-uniform on 1e-3..1e3 and seeds 0, 1, 2, ...
(the draws depend only on the model's name).  Each case gives its verdict, its score (the
worst error over tolerance, to 6 significant digits) and its failing tensors; the script
prints the cases that differ, a count of the verdicts, and exits 1 where any differ.
``--dtype`` runs every model in that dtype instead of its own.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: Runs inside the checkout given as argv[1]: the same cases for every checkout.
CASES = r"""
import importlib.util, json, random, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from gradcheck_suite import Case, check_case, load
cases, dtype, trust = int(sys.argv[2]), sys.argv[3] or None, sys.argv[4]
spec = importlib.util.spec_from_file_location("verdict_trust", trust)
vt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vt)
registry = load()
models = [registry.get(n) for n in registry.names()]
models += [getattr(vt, n) for n in ("HINGE", "SATURATED_BCE", "SATURATED_LSTM", "SOFTMAX_DOT", "REORDERED", "LOG_SUM")]
rows = []
for m in models:
    draw = random.Random(m.name)
    for seed in range(cases):
        dims = {n: draw.randint(d.low, d.high) for n, d in m.dims.items()}
        scale = 10 ** draw.uniform(-3, 3)
        hyper = {n: h[0] if isinstance(h, tuple) else h.low for n, h in (m.hyper or {}).items()}
        res = check_case(m, Case(m.name, dims, dtype or m.dtype, "cpu", seed, scale, hyper))
        rows.append([m.name, seed, res.verdict, float(f"{res.score:.6g}"), res.failing])
json.dump(rows, sys.stdout)
"""


def _verdicts(tree: str, cases: int, dtype: str | None) -> list:
    trust = os.path.join(ROOT, "tests", "models", "verdict_trust.py")
    out = subprocess.run([sys.executable, "-c", CASES, tree, str(cases), dtype or "", trust],
                         capture_output=True, text=True, cwd=tempfile.gettempdir())
    if out.returncode:
        sys.exit(f"the cases failed to run under {tree}:\n{out.stderr}")
    return [tuple(map(lambda x: tuple(x) if isinstance(x, list) else x, row)) for row in json.loads(out.stdout)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the commit or branch to compare this working tree with")
    ap.add_argument("--cases", type=int, default=40, help="cases per model (default: 40)")
    ap.add_argument("--dtype", help="run every model in this dtype (default: each model's own)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        old = os.path.join(scratch, "old")
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", old, args.rev], check=True)
        try:
            before = _verdicts(old, args.cases, args.dtype)
        finally:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", old], check=False)
    after = _verdicts(ROOT, args.cases, args.dtype)
    differ = [(a, b) for a, b in zip(before, after) if a != b]
    for a, b in differ:
        print(f"{a[0]} seed {a[1]}: {a[2:]} at {args.rev}, {b[2:]} here")
    counts = collections.Counter(row[2] for row in after)
    print(f"{len(after)} cases ({args.dtype or 'each model in its own dtype'}), {len(differ)} differ from "
          f"{args.rev}; here: " + ", ".join(f"{n} {v}" for v, n in counts.most_common()))
    return 1 if differ or len(before) != len(after) else 0


if __name__ == "__main__":
    sys.exit(main())
