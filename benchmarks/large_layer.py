"""A 4096-wide float32 layer through the real command: time, the shrunk failure, peak memory.

The layer is ``y = tanh(x @ w)`` with ``x`` of shape B×T×W (B up to 4, T up to 8) and a W×W
weight, W = 4096 by default; its wrong twin reads the upstream gradient with its B and T axes
swapped (a T×B buffer taken for B×T), which only shows where B ≥ 2 and T ≥ 2.  This file is
also the model file the command loads (``--models-from benchmarks/large_layer.py``); the width
comes from ``GRADCHECK_LARGE_WIDTH``.

It measures, each command in a child process of its own:

- ``check large_layer`` in the quick profile: wall time, the cases that ran, whether the
  per-model time budget (``rules.QUICK_SECONDS``) cut them, and the verdict;
- ``check large_layer_swapped``: wall time, the shrunk case, the diagnosis kind and the
  ``look at:`` line; then its reproduce command, timed;
- peak memory: the child's ``ru_maxrss`` (``os.wait4``), less the resident size of a child
  that only imported torch, hypothesis and the harness, as a multiple of the same for one
  float64 forward and autograd backward of the layer at B=4, T=8.

It prints the load (``/proc/loadavg``) before and after and the torch thread count the
command ran with (``--threads``, default 1).

Usage: ``python benchmarks/large_layer.py [--width 4096] [--threads 1] [--skip-correct] [--case-timeout S]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from gradcheck_suite import Dim, Model

WIDTH = int(os.environ.get("GRADCHECK_LARGE_WIDTH", "4096"))
HERE = os.path.abspath(__file__)


def forward(p, d):
    y = torch.tanh(d.x @ p.w)
    return y, y


def backward(p, d, y, g):
    B, T, W = d.x.shape
    gz = g * (1 - y * y)
    return {"w": d.x.reshape(B * T, W).T @ gz.reshape(B * T, -1), "x": gz @ p.w.T}


def backward_swapped(p, d, y, g):
    B, T, W = d.x.shape
    g = g.transpose(0, 1).reshape(B, T, -1)       # the bug: a T×B buffer read as B×T
    gz = g * (1 - y * y)
    return {"w": d.x.reshape(B * T, W).T @ gz.reshape(B * T, -1), "x": gz @ p.w.T}


def _model(name: str, back) -> Model:
    return Model(name=name, dims={"B": Dim(1, 4, 4), "T": Dim(1, 8, 8)}, params={"w": (WIDTH, WIDTH)},
                 data={"x": ("B", "T", WIDTH)}, grad_data=("x",), dtype="float32", forward=forward, backward=back,
                 doc=f"y = tanh(x @ w), a {WIDTH}x{WIDTH} weight")


large_layer = _model("large_layer", backward)
large_layer_swapped = _model("large_layer_swapped", backward_swapped)

_IMPORTS = "import torch, hypothesis, gradcheck_suite.commands, gradcheck_suite.run.runner, gradcheck_suite.diagnose"
_FWD_BWD = f"""
{_IMPORTS}
import resource, sys
torch.set_num_threads(int(sys.argv[1]))
W = {WIDTH}
g = torch.Generator().manual_seed(0)
w = torch.randn(W, W, generator=g, dtype=torch.float64).requires_grad_(True)
x = torch.randn(4, 8, W, generator=g, dtype=torch.float64).requires_grad_(True)
y = torch.tanh(x @ w)
torch.autograd.grad(y, [w, x], grad_outputs=torch.randn(y.shape, generator=g, dtype=torch.float64))
"""


def _child(args: list[str], env: dict | None = None) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run a child to its end: (wall seconds, peak resident bytes, its output)."""
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=out, stderr=err, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    return wall, usage.ru_maxrss * 1024, subprocess.CompletedProcess(args, proc.returncode, out.read(), err.read())


def _check(name: str, threads: int, extra: list[str] = (), report: str | None = None, timeout: str = ""):
    env = {**os.environ, "GRADCHECK_LARGE_WIDTH": str(WIDTH), "GRADCHECK_SUITE_HEARTBEAT": "30"}
    args = [sys.executable, "-m", "gradcheck_suite", "check", name, "--models-from", HERE, "--threads", str(threads),
            *extra, *(["--case-timeout", timeout] if timeout else [])]
    if report:
        args += ["--json", report]
    return _child(args, env)


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=WIDTH)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-correct", action="store_true", help="only the wrong twin and the memory baseline")
    ap.add_argument("--case-timeout", default="", metavar="SECONDS",
                    help="passed to the command (default: its own, 60 s; 0 on a machine so loaded that one case "
                         "of the wrong twin takes longer)")
    args = ap.parse_args()
    if args.width != WIDTH:
        os.environ["GRADCHECK_LARGE_WIDTH"] = str(args.width)
        return subprocess.call([sys.executable, HERE, *sys.argv[1:]])
    print(f"large layer: W={WIDTH} (weight {WIDTH}x{WIDTH} float32), B<=4, T<=8; torch {torch.__version__}, "
          f"--threads {args.threads}; load before: {_load()}")
    _, base, _ = _child([sys.executable, "-c", _IMPORTS])
    _, fb, done = _child([sys.executable, "-c", _FWD_BWD, str(args.threads)])
    assert done.returncode == 0, done.stderr
    one = fb - base
    print(f"memory: imports alone {base / 1e9:.2f} GB resident; one float64 forward+backward at B=4, T=8 "
          f"adds {one / 1e9:.2f} GB (ru_maxrss)")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_correct:
            path = os.path.join(tmp, "right.json")
            wall, peak, done = _check("large_layer", args.threads, report=path, timeout=args.case_timeout)
            row = json.load(open(path))["models"][0]
            counts = row["counts"]
            print(f"correct: {row['verdict']} in {wall:.1f} s wall ({row['seconds']:.1f} s in the check), "
                  f"{counts['checked']} of {counts['planned']} cases, budget cut: {row['budget_cut']}; "
                  f"peak {peak / 1e9:.2f} GB = {(peak - base) / one:.1f}x one float64 forward+backward")
            for note in row["notes"]:
                print(f"  note: {note}")
        path = os.path.join(tmp, "wrong.json")
        wall, peak, done = _check("large_layer_swapped", args.threads, report=path, timeout=args.case_timeout)
        row = json.load(open(path))["models"][0]
        failure = row["failure"] or {}
        print(f"wrong twin: {row['verdict']} in {wall:.1f} s wall ({row['seconds']:.1f} s in the check), "
              f"{row['counts']['checked']} cases then {row['counts']['shrink_steps']} shrink steps; "
              f"peak {peak / 1e9:.2f} GB = {(peak - base) / one:.1f}x one float64 forward+backward")
        print(f"  shrunk case: {failure.get('case')}")
        for k in failure.get("diagnosis", []):
            print(f"  mistake: {k['tensor']}: {k['mistake']}: {k['text']}")
        loc = failure.get("location")
        print(f"  look at: {loc and (os.path.basename(loc['file']), loc['line'], loc['code'])}; "
              f"note: {failure.get('location_note')}; {failure.get('notes')}")
        if row.get("reproduce"):
            command = row["reproduce"].split()
            extra = command[command.index("--dims"):] if "--dims" in command else []
            wall, peak, done = _check("large_layer_swapped", args.threads, extra, timeout=args.case_timeout)
            print(f"  reproduce ({' '.join(extra)}): exit {done.returncode} in {wall:.1f} s wall, "
                  f"peak {peak / 1e9:.2f} GB = {(peak - base) / one:.1f}x")
        print(f"  problems: {row['problems']}; failure problems: {failure.get('problems')}")
    print(f"load after: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
