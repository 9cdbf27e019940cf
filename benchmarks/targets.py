"""The harness's own targets, measured as whole processes (torch import included).

    python benchmarks/targets.py

1. a full check of mlp_relu at 64×1000→100→10 in float64 (both oracles), against a
   script running torch.autograd.gradcheck(fast_mode=True) on the same function;
2. a wrong backward at that size (the ReLU mask left out), reported with its worst elements;
3. peak memory of checking linear_layer at 64×1000→100 with the input's gradient;
4. the default `pytest` run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BENCH = "N=64,D_in=1000,H=100,D_out=10"

GRADCHECK = textwrap.dedent("""
    import torch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1000, generator=gen, dtype=torch.float64)
    t = torch.randn(64, 10, generator=gen, dtype=torch.float64)
    w1 = torch.randn(1000, 100, generator=gen, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(100, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    f = lambda w1, w2: ((x.mm(w1).clamp(min=0).mm(w2) - t) ** 2).sum()
    print(torch.autograd.gradcheck(f, (w1, w2), fast_mode=True, raise_exception=False))
""")

NO_MASK = textwrap.dedent("""
    from gradcheck_suite import Dim, Model

    def forward(p, d):
        h = d.x @ p.w1
        y = h.clamp(min=0) @ p.w2
        return ((y - d.t) ** 2).sum(), (h, y)

    def backward(p, d, cache, g):          # the ReLU mask left out
        h, y = cache
        gy = 2 * g * (y - d.t)
        return {"w1": d.x.T @ (gy @ p.w2.T), "w2": h.clamp(min=0).T @ gy}

    model = Model(name="mlp_no_mask", dims={"N": Dim(1, 32, 64), "D_in": Dim(1, 40, 1000), "H": Dim(1, 40, 100),
                  "D_out": Dim(1, 12, 10)}, params={"w1": ("D_in", "H"), "w2": ("H", "D_out")},
                  data={"x": ("N", "D_in"), "t": ("N", "D_out")}, forward=forward, backward=backward)
""")


PEAK = textwrap.dedent("""
    import resource
    from gradcheck_suite.commands import main
    rc = main(["check", "linear_layer", "--dims", "N=64,I=1000,O=100", "--seed", "0", "--scale", "1", "--no-progress"])
    print(f"exit {rc}; peak RSS of the whole process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
""")


def timed(argv: list[str], repeat: int = 3) -> tuple[float, int, str]:
    """Best wall time of ``repeat`` runs, the last exit code and output, peak RSS of the child."""
    best, rc, out = float("inf"), 0, ""
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        best = min(best, time.perf_counter() - start)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    return best, rc, out


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gradcheck_suite", *args, "--no-progress"]


def main() -> int:
    rows = []
    t_ref, _, out_ref = timed([sys.executable, "-c", GRADCHECK])
    rows.append(("gradcheck(fast_mode=True), mlp_relu 64×1000→100→10 float64", t_ref, out_ref.strip().splitlines()[-1]))
    t_one, rc, _ = timed(cli("check", "mlp_relu", "--dims", BENCH, "--dtype", "float64", "--seed", "0", "--scale", "1"))
    rows.append(("gradcheck-suite, one case (both oracles)", t_one, f"exit {rc}; {t_one / t_ref:.2f}× gradcheck fast"))
    t_all, rc, _ = timed(cli("check", "mlp_relu", "--dims", BENCH, "--dtype", "float64"), repeat=1)
    rows.append(("gradcheck-suite, 20 generated seeds and scales", t_all, f"exit {rc}; {t_all / t_ref:.2f}× gradcheck fast"))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "no_mask.py")
        with open(path, "w") as f:
            f.write(NO_MASK)
        report = os.path.join(tmp, "report.json")
        t_bad, rc, out = timed(cli("check", "mlp_no_mask", "--models-from", path, "--dims", BENCH, "--dtype", "float64",
                                   "--seed", "0", "--scale", "1", "--json", report))
        with open(report) as f:
            inside = json.load(f)["models"][0]["seconds"]
        located = "worst elements listed" if "finite diff" in out and "w1" in out else "NOT LOCATED"
        rows.append(("wrong backward (no ReLU mask), whole process", t_bad, f"exit {rc}; {located}"))
        rows.append(("wrong backward (no ReLU mask), the check itself", inside, "from the JSON report's seconds"))
    t_mem, rc, out = timed([sys.executable, "-c", PEAK], repeat=1)
    rows.append(("linear_layer 64×1000→100 with dx, peak memory", t_mem, out.strip().splitlines()[-1]))
    t_py, rc, out = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], repeat=1)
    rows.append(("default pytest run", t_py, f"exit {rc}; {out.strip().splitlines()[-1]}"))

    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'seconds':>8}  result")
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds:8.2f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
