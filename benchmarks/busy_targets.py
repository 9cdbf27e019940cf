"""Whole-process speed, quiet and with one core busy, interleaved run by run.

    python benchmarks/busy_targets.py [--rounds 3] [--pytest]

For each condition (quiet, then a busy loop holding one core), it alternates:

- ``gradcheck fast``: a script that imports torch and runs torch.autograd.gradcheck
  (fast_mode=True) once on mlp_relu at its seed size (64x1000->100->10, float64);
- ``check``: ``gradcheck-suite check mlp_relu --dims N=64,D_in=1000,H=100,D_out=10
  --dtype float64`` (20 cases, corner cases first), torch import included;
- with ``--pytest``, the default ``pytest`` run of this repository.

It prints the median wall time of each, the ratio check / gradcheck fast, and each
one's busy / quiet ratio, with the load before and after.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from targets import BENCH, GRADCHECK, ROOT  # noqa: E402

BUSY = "import time\nend = time.monotonic() + 900\nwhile time.monotonic() < end:\n    pass\n"


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    took = time.perf_counter() - start
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv[:4])} ... exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return took


def _round(jobs: dict[str, list[str]], rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(rounds):
        for name, argv in jobs.items():
            times[name].append(_wall(argv))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pytest", action="store_true", help="also time the default pytest run (minutes)")
    args = ap.parse_args()
    jobs = {
        "gradcheck fast": [sys.executable, "-c", GRADCHECK],
        "check (20 cases)": [sys.executable, "-m", "gradcheck_suite", "check", "mlp_relu", "--dims", BENCH,
                             "--dtype", "float64", "--no-progress"],
    }
    if args.pytest:
        jobs["default pytest"] = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    results = {}
    print(f"load before: {os.getloadavg()}, {os.cpu_count()} cores")
    results["quiet"] = _round(jobs, args.rounds)
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(1.0)
        results["busy"] = _round(jobs, args.rounds)
    finally:
        busy.kill()
    print(f"load after: {os.getloadavg()}")
    print(f"{'job':<20} {'quiet s':>8} {'busy s':>8} {'busy/quiet':>11}")
    for name in jobs:
        q, b = results["quiet"][name], results["busy"][name]
        print(f"{name:<20} {q:8.2f} {b:8.2f} {b / q:11.2f}")
    for cond in ("quiet", "busy"):
        r = results[cond]
        print(f"{cond}: check / gradcheck fast = {r['check (20 cases)'] / r['gradcheck fast']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
