"""How often the regression gate flags a run whose code did not change.

    python benchmarks/gate_false_flags.py [--runs 30] [--jobs 1] [--no-busy] [--work DIR] [--models a,b]

One `gradcheck-suite bench --quick` run of the built-in models (18 rows: every model's
backward and forward+backward) is the baseline; then ``--runs`` more runs of the same
code, each gated against it with `--baseline --fail-on-regression`, exactly as a CI job
runs it.  By default one core is kept busy by a loop this script starts and stops, for
the baseline and every run (the machine's other load comes on top; `uptime` is recorded
before and after every run).  The models are checked once (`check --json`) and every run
reads those verdicts (`--check-json`), so the runs spend their time timing.  ``--jobs N``
runs N of the gated runs at a time (each is load for the others: say so with the figure);
a baseline already in ``--work`` is reused, and runs already there are counted.

It counts the runs that exited 1 or flagged any row slower (a false alarm of the gate),
the rows flagged slower and faster, and the inconclusive ones, and gives each rate with
its exact (Clopper-Pearson) 95% interval.  The figures, the commands and the load are
printed and written to ``DIR/gate_false_flags.json``.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_targets import bench, busy_loop, uptime  # noqa: E402

from gradcheck_suite.bench import regression  # noqa: E402

COUNTS = re.compile(r"(\d+) rows compared: (\d+) slower, (\d+) faster, (\d+) within threshold, "
                    r"(\d+) inconclusive, (\d+) contradicted by the times")


def binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact interval of a binomial rate with k of n, by bisection on the binomial CDF."""
    tail = (1 - confidence) / 2

    def solve(f) -> float:          # f increasing in p on [0, 1]: the p where f(p) = 0
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if k == 0 else solve(lambda p: (1 - binomial_cdf(k - 1, n, p)) - tail)
    high = 1.0 if k == n else solve(lambda p: tail - binomial_cdf(k, n, p))
    return low, high


def rate(k: int, n: int) -> str:
    low, high = clopper_pearson(k, n)
    return f"{k} of {n} = {100 * k / max(n, 1):.1f}% (95% CI {100 * low:.1f}%–{100 * high:.1f}%)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="same-code runs gated against the baseline (default: 30)")
    ap.add_argument("--no-busy", action="store_true", help="no busy loop on the other core")
    ap.add_argument("--models", help="comma-separated models (default: all built-in models)")
    ap.add_argument("--work", help="folder for the reports (default: a temporary one)")
    ap.add_argument("--jobs", type=int, default=1, help="gated runs at a time (default: 1)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="gate-false-flags-"))
    work.mkdir(parents=True, exist_ok=True)
    models = ["--models", args.models] if args.models else []
    print(f"reports in {work}; torch threads while timing: 1 (the bench default); gate: report-wide rate "
          f"{regression.FALSE_FLAG_RATE:.0%}, at least {regression.MIN_VISITS} visits, spread at most "
          f"{regression.MAX_SPREAD:.0%}, threshold {regression.DEFAULT_THRESHOLD:g}%")
    print(f"start: {uptime()}")

    check_json = work / "check.json"
    exe = str(Path(sys.executable).parent / "gradcheck-suite")
    if not check_json.is_file():
        check = subprocess.run([exe, "check", "--json", str(check_json), "--examples", "5"], capture_output=True,
                               text=True, cwd=ROOT)
        if not check_json.is_file():
            print(f"check --json failed (exit {check.returncode}):\n{check.stdout}{check.stderr}")
            return 2
    common = ["--quick", "--no-plots", "--check-json", str(check_json), *models]
    baseline = work / "baseline/benchmarks.json"

    def gated(i: int) -> dict:
        folder = work / f"run{i:02d}"
        r = bench(common + ["--out", str(folder), "--baseline", str(baseline), "--fail-on-regression"])
        (folder / "output.txt").write_text(f"{r['cmd']}\nexit {r['rc']}, {r['seconds']:.1f} s\n"
                                           f"{r['load_before']}\n{r['load_after']}\n\n{r['out']}")
        return r

    def result(i: int, r: dict | None) -> dict | None:
        """The figures of run i from its folder (r: the run just made, else an earlier one's record)."""
        folder = work / f"run{i:02d}"
        if r is None:
            if not (folder / "output.txt").is_file():
                return None
            head, _, out = (folder / "output.txt").read_text().partition("\n\n")
            lines = head.splitlines()
            rc, seconds = re.match(r"exit (-?\d+), ([\d.]+) s", lines[1]).groups()
            r = {"rc": int(rc), "seconds": float(seconds), "load_before": lines[2], "load_after": lines[3], "out": out}
        m = COUNTS.search(r["out"])
        counts = dict(zip(("rows", "slower", "faster", "same", "inconclusive", "contradicted"),
                          map(int, m.groups()))) if m else None
        info = json.loads((folder / "benchmarks.json").read_text())["machine_info"] if counts else {}
        flagged = [ln for ln in r["out"].splitlines() if "**slower**" in ln or ln.rstrip().endswith("| faster |")]
        print(f"run {i:2d}: exit {r['rc']}, {r['seconds']:.0f} s, {m.group(0) if m else 'NO COMPARISON LINE'}; "
              f"other cores busy {info.get('other_cores') or 0:.2f}; {r['load_after']}", flush=True)
        for ln in flagged:
            print(f"    flagged: {ln}")
        return {"run": i, "rc": r["rc"], "seconds": round(r["seconds"], 1), "counts": counts,
                "load_before": r["load_before"], "load_after": r["load_after"], "other_cores": info.get("other_cores"),
                "threads": info.get("torch_threads"), "extra_seconds": (info.get("gate") or {}).get("extra_seconds"),
                "flagged": flagged}

    loop = None if args.no_busy else busy_loop(36000)
    results = []
    try:
        if loop is not None:
            time.sleep(2)
        if not baseline.is_file():
            base = bench(common + ["--out", str(baseline.parent)])
            if base["rc"] != 0:
                print(f"the baseline run failed (exit {base['rc']}):\n{base['out'][-3000:]}")
                return 2
            (baseline.parent / "load.txt").write_text(f"{base['load_before']}\n{base['load_after']}\n")
        earlier = [i for i in range(args.runs) if (work / f"run{i:02d}/output.txt").is_file()]
        results += [x for x in (result(i, None) for i in earlier) if x]
        todo = [i for i in range(args.runs) if i not in earlier]
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for i, r in zip(todo, pool.map(gated, todo)):
                results.append(result(i, r))
    finally:
        if loop is not None:
            loop.kill()
            loop.wait()
    results.sort(key=lambda r: r["run"])
    base_load = (baseline.parent / "load.txt").read_text().splitlines() if (baseline.parent / "load.txt").is_file() \
        else ["?", "?"]

    done = [r for r in results if r["counts"]]
    runs_failed = sum(r["rc"] != 0 for r in results)
    runs_slower = sum(r["counts"]["slower"] > 0 for r in done)
    runs_faster = sum(r["counts"]["faster"] > 0 for r in done)
    rows = sum(r["counts"]["rows"] for r in done)
    summary = {
        "runs": len(results), "runs_exit_1": runs_failed, "runs_with_a_slower_row": runs_slower,
        "runs_with_a_faster_row": runs_faster, "rows": rows,
        "rows_slower": sum(r["counts"]["slower"] for r in done), "rows_faster": sum(r["counts"]["faster"] for r in done),
        "rows_same": sum(r["counts"]["same"] for r in done),
        "rows_inconclusive": sum(r["counts"]["inconclusive"] for r in done),
        "rows_contradicted": sum(r["counts"]["contradicted"] for r in done),
        "busy_loop": loop is not None, "jobs": args.jobs, "baseline_load": base_load,
        "end": uptime(), "results": results,
    }
    (work / "gate_false_flags.json").write_text(json.dumps(summary, indent=1))
    print(f"\nbaseline: {base_load[0]}  ->  {base_load[-1]}; {args.jobs} gated run(s) at a time, "
          f"{'one busy loop' if loop is not None else 'no busy loop'}")
    print(f"runs that failed the gate (exit 1):   {rate(runs_failed, len(results))}")
    print(f"runs with a row flagged slower:       {rate(runs_slower, len(done))}")
    print(f"runs with a row flagged faster:       {rate(runs_faster, len(done))}")
    print(f"rows flagged slower:                  {rate(summary['rows_slower'], rows)}")
    print(f"rows flagged faster:                  {rate(summary['rows_faster'], rows)}")
    print(f"rows within threshold / inconclusive / contradicted: {summary['rows_same']} / "
          f"{summary['rows_inconclusive']} / {summary['rows_contradicted']} of {rows}")
    print(f"wall per run: {min(r['seconds'] for r in results):.0f}–{max(r['seconds'] for r in results):.0f} s; "
          f"other cores busy {min(r['other_cores'] or 0 for r in results):.2f}–"
          f"{max(r['other_cores'] or 0 for r in results):.2f}; torch threads {sorted({r['threads'] for r in results})}")
    print(f"end: {summary['end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
