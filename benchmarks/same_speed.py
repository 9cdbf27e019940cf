"""Is this working tree as fast as another commit?  For a change whose rule is that speed must
not get worse (a restructure, a refactor): both trees measured side by side, run by run.

    python benchmarks/same_speed.py REV [--rounds 4] [--no-busy] [--cli-only] [--check-args "..."]

Checks out ``REV`` into a temporary git worktree and alternates, run by run with the order
rotating, between it and this working tree (each run is its own process, with the tree's own
package first on the path):

- ``check_speed``: the tree's own ``benchmarks/check_speed.py --factors 1,4`` (one case of the
  harness next to one manual plus one autograd forward+backward, mlp_relu at 1x and 4x its seed
  size, in process), whose ratio check/floor cancels the machine's speed at the moment; and its
  last line, a wrong backward found and shrunk at the seed size, in seconds;
- ``cli``: ``python -m gradcheck_suite check mlp_relu --dims N=64,D_in=1000,H=100,D_out=10
  --dtype float64`` (what ``benchmarks/busy_targets.py`` times), wall time with the torch import,
  on a quiet machine and (unless ``--no-busy``) with a busy loop holding one core.

``--check-args`` times another command line instead (``"--models-from examples/"``: the
examples, several of them ``autograd.Function``s and a custom op), and ``--cli-only`` leaves
out ``check_speed``.

It prints each figure's median per tree and the ratio this tree / REV, with the load and the
torch thread count (one, as the checks run).  A ratio above 1 is slower here.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BENCH = "N=64,D_in=1000,H=100,D_out=10"
BUSY = "import time\nend = time.monotonic() + 1800\nwhile time.monotonic() < end:\n    pass\n"
ROW = re.compile(r"^\s*([\d.]+)x\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")
WRONG = re.compile(r"wrong backward at the seed size: \S+ .* in ([\d.]+) s")


def _env(tree: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}


def _check_speed(tree: str) -> dict[str, float]:
    """One run of the tree's own check_speed.py: check/floor and check/gradcheck per size, and
    the seconds to a shrunk failure."""
    out = subprocess.run([sys.executable, os.path.join(tree, "benchmarks", "check_speed.py"), "--rounds", "5",
                          "--block", "3", "--factors", "1,4"], capture_output=True, text=True, cwd=tree,
                         env=_env(tree))
    if out.returncode:
        sys.exit(f"check_speed.py failed under {tree}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    figures = {}
    for line in out.stdout.splitlines():
        if m := ROW.match(line):
            size = f"{float(m.group(1)):g}x"
            figures[f"check/floor {size}"] = float(m.group(6))
            figures[f"check/gradcheck {size}"] = float(m.group(5))
        elif m := WRONG.search(line):
            figures["wrong backward to report, s"] = float(m.group(1))
    return figures


CHECK = ["mlp_relu", "--dims", BENCH, "--dtype", "float64"]


def _cli(tree: str, args: list[str] = CHECK) -> float:
    argv = [sys.executable, "-m", "gradcheck_suite", "check", *args, "--no-progress"]
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, cwd=tree, env=_env(tree))
    took = time.perf_counter() - start
    if out.returncode not in (0, 1):      # 1: a model failed, as examples/wrong.py does
        sys.exit(f"the check failed under {tree} (exit {out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return took


def _which(tree: str) -> str:
    out = subprocess.run([sys.executable, "-c", "import gradcheck_suite; print(gradcheck_suite.__file__)"],
                         capture_output=True, text=True, cwd=tree, env=_env(tree))
    return out.stdout.strip()


def _alternate(trees: dict[str, str], rounds: int, job) -> dict[str, list]:
    got: dict[str, list] = {name: [] for name in trees}
    names = list(trees)
    for r in range(rounds):
        for name in names[r % 2:] + names[:r % 2]:      # the order rotates, so drift hits both alike
            got[name].append(job(trees[name]))
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the commit or branch to compare this working tree with")
    ap.add_argument("--rounds", type=int, default=4, help="runs of each figure per tree (default: 4)")
    ap.add_argument("--no-busy", action="store_true", help="skip the CLI timing with one core busy")
    ap.add_argument("--cli-only", action="store_true", help="skip check_speed.py: the command's wall time alone")
    ap.add_argument("--check-args", help="what `check` runs (default: mlp_relu at its seed size, float64)")
    args = ap.parse_args()
    check = args.check_args.split() if args.check_args else CHECK

    def cli(tree: str) -> float:
        return _cli(tree, check)

    with tempfile.TemporaryDirectory() as scratch:
        old = os.path.join(scratch, "old")
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", old, args.rev], check=True)
        try:
            trees = {args.rev: old, "here": ROOT}
            for name, tree in trees.items():
                if not _which(tree).startswith(tree):
                    sys.exit(f"{name}: gradcheck_suite imports from {_which(tree)!r}, not from {tree}")
            print(f"load before: {os.getloadavg()}, {os.cpu_count()} cores, 1 torch thread")
            rows: dict[str, dict[str, float]] = {name: {} for name in trees}
            speed = {} if args.cli_only else _alternate(trees, args.rounds, _check_speed)
            for name, runs in speed.items():
                for key in runs[0]:
                    rows[name][key] = statistics.median(run[key] for run in runs)
            for name, runs in _alternate(trees, args.rounds, cli).items():
                rows[name]["cli check, quiet, s"] = statistics.median(runs)
            if not args.no_busy:
                busy = subprocess.Popen([sys.executable, "-c", BUSY])
                try:
                    time.sleep(1.0)
                    for name, runs in _alternate(trees, args.rounds, cli).items():
                        rows[name]["cli check, one core busy, s"] = statistics.median(runs)
                finally:
                    busy.kill()
            print(f"load after: {os.getloadavg()}")
        finally:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", old], check=False)
    print(f"{'figure (median of ' + str(args.rounds) + ' runs)':<34} {args.rev[:12]:>12} {'here':>10} {'here/' + args.rev[:8]:>14}")
    for key in rows["here"]:
        a, b = rows[args.rev].get(key), rows["here"][key]
        ratio = f"{b / a:14.2f}" if a else f"{'-':>14}"
        print(f"{key:<34} {a if a is not None else float('nan'):12.2f} {b:10.2f} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
