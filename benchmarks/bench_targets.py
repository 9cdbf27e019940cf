"""The targets of `gradcheck-suite bench` itself, measured as whole processes.

    python benchmarks/bench_targets.py [--skip-install] [--busy-seconds 300] [--only-slowdown]

1. two back-to-back `bench --quick` runs, the second gated against the first
   (--baseline, --fail-on-regression, default threshold): nothing flagged, exit 0;
   quiet, then with one core busy (a bounded busy loop this script starts and stops);
2. with one core busy, every seed model's manual/autograd ratio within 25% of the quiet run's;
3. a 10% slowdown of a backward of 100 µs or more is flagged: a copy of mlp_relu (backward
   about 110 µs) whose backward spins for 10% of its own time (a busy wait, calibrated
   from a run without it), quiet and with one core busy, three times each (--slowdown-runs),
   each against a fresh quick baseline; and one that does 10% more work
   (an extra matmul), with the slowdown it achieved;
4. `bench --quick` under 60 s;
5. a fresh virtual environment with a non-editable install runs `bench --quick
   --models-from examples/` from a folder outside the repository and writes the report.

Every figure is printed with the load (`uptime`) and the torch thread count it was taken at.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradcheck_suite.bench import rows as bench_rows  # noqa: E402

RATIO_TOLERANCE = 0.25
QUICK_LIMIT_S = 60.0

SLEEPY = textwrap.dedent('''
    """mlp_relu with a known slowdown in its backward: time.sleep(GRADCHECK_SLEEP_S), a busy
    wait of GRADCHECK_SPIN_S seconds (exact where sleep is not), or GRADCHECK_EXTRA_WORK more
    of the work it does (an extra matmul shaped like its main one, with that fraction of its
    columns), which slows with the machine as the rest does."""
    import dataclasses
    import os
    import time

    from gradcheck_suite.models.mlp_relu import model as base

    SLEEP = float(os.environ.get("GRADCHECK_SLEEP_S", "0"))
    SPIN = float(os.environ.get("GRADCHECK_SPIN_S", "0"))
    EXTRA = float(os.environ.get("GRADCHECK_EXTRA_WORK", "0"))


    def backward(p, d, cache, g):
        grads = base.backward(p, d, cache, g)
        if SLEEP:
            time.sleep(SLEEP)
        if SPIN:
            end = time.perf_counter() + SPIN
            while time.perf_counter() < end:
                pass
        if EXTRA:
            cols = max(1, round(EXTRA * p.w1.shape[1]))
            d.x.T @ d.x[:, :cols]          # as x.T @ gh, the backward's main matmul, on EXTRA of its columns
        return grads


    model = dataclasses.replace(base, name="sleepy_mlp_relu", backward=backward)
''')


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def bench(argv: list[str], env: dict | None = None, exe: str | None = None, cwd: str | Path = ROOT) -> dict:
    """Run one `gradcheck-suite bench`; its exit code, wall time, load before and after, output."""
    cmd = [exe or str(Path(sys.executable).parent / "gradcheck-suite"), "bench", *argv]
    before = uptime()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})})
    return {"cmd": " ".join(cmd), "rc": proc.returncode, "seconds": time.perf_counter() - start,
            "load_before": before, "load_after": uptime(), "out": proc.stdout + proc.stderr}


def gated(result: dict) -> str:
    return next((ln for ln in result["out"].splitlines() if " rows compared: " in ln), "no comparison line")


def run_rows(folder: Path) -> dict:
    run = bench_rows.load_run(folder / bench_rows.JSON_NAME)
    return {r.key: r for r in bench_rows.rows(run) if r.table == bench_rows.GRID}, run["machine_info"]


def fmt(row) -> str:
    return f"{row.ratio.value:.3f} [{row.ratio.low:.3f}, {row.ratio.high:.3f}]"


def show(name: str, ok: bool, detail: str, result: dict | None = None) -> bool:
    print(f"\n[{'MET' if ok else 'NOT MET'}] {name}\n  {detail}")
    if result is not None:
        print(f"  command: {result['cmd']}\n  exit {result['rc']}, {result['seconds']:.1f} s wall\n"
              f"  load before: {result['load_before']}\n  load after:  {result['load_after']}")
    return ok


def busy_loop(seconds: int) -> subprocess.Popen:
    """One core busy, for at most ``seconds``.  The loop bounds itself (a `timeout` wrapper
    killed with SIGKILL would leave its child spinning); stop it with .kill()."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-install", action="store_true", help="skip target 5 (the fresh non-editable install)")
    ap.add_argument("--busy-seconds", type=int, default=300, help="upper bound on the busy loop's life")
    ap.add_argument("--work", help="folder for the reports (default: a temporary one)")
    ap.add_argument("--slowdown-runs", type=int, default=3, help="runs of target 3 in each condition (default: 3)")
    ap.add_argument("--only-slowdown", action="store_true",
                    help="only target 3 (the same-code runs of targets 1 and 2 are what "
                         "benchmarks/gate_false_flags.py measures at length)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-targets-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"reports in {work}; torch threads while timing: 1 (the bench default); {os.cpu_count()} cores")
    met = []

    if not args.only_slowdown:
        q1 = bench(["--quick", "--no-plots", "--out", str(work / "quiet1")])
        q2 = bench(["--quick", "--no-plots", "--out", str(work / "quiet2"), "--baseline", str(work / "quiet1/benchmarks.json"),
                    "--fail-on-regression"])
        met.append(show("1a quiet: second quick run gated against the first flags nothing, exit 0",
                        q2["rc"] == 0 and " 0 slower, 0 faster" in gated(q2), gated(q2), q2))
        met.append(show("4 bench --quick under 60 s (quiet)", max(q1["seconds"], q2["seconds"]) < QUICK_LIMIT_S,
                        f"{q1['seconds']:.1f} s and {q2['seconds']:.1f} s", q1))

        loop = busy_loop(args.busy_seconds)
        try:
            time.sleep(2)
            b1 = bench(["--quick", "--no-plots", "--out", str(work / "busy1"), "--baseline",
                        str(work / "quiet1/benchmarks.json")])
            b2 = bench(["--quick", "--no-plots", "--out", str(work / "busy2"), "--baseline", str(work / "busy1/benchmarks.json"),
                        "--fail-on-regression"])
        finally:
            loop.kill()
            loop.wait()
        met.append(show("1b one core busy: second quick run gated against the first flags nothing, exit 0",
                        b2["rc"] == 0 and " 0 slower, 0 faster" in gated(b2), gated(b2), b2))
        met.append(show("4 bench --quick under 60 s (one core busy)", max(b1["seconds"], b2["seconds"]) < QUICK_LIMIT_S,
                        f"{b1['seconds']:.1f} s and {b2['seconds']:.1f} s", b1))
        met.append(show("1c one core busy against the quiet baseline flags nothing", " 0 slower, 0 faster" in gated(b1),
                        gated(b1), b1))

        quiet, qinfo = run_rows(work / "quiet1")
        busy, binfo = run_rows(work / "busy1")
        lines, worst = [], 0.0
        for key, r in quiet.items():
            if key in busy:
                change = busy[key].ratio.value / r.ratio.value - 1
                worst = max(worst, abs(change))
                lines.append(f"    {r.model:<18} {r.phase:<17} quiet {r.ratio.value:.3f}  busy {busy[key].ratio.value:.3f}  "
                             f"{100 * change:+.1f}%")
        met.append(show(f"2 one core busy: every seed model's ratio within {RATIO_TOLERANCE:.0%} of the quiet run's",
                        worst <= RATIO_TOLERANCE and len(lines) == len(quiet),
                        f"worst {100 * worst:.1f}% over {len(lines)} rows; threads {qinfo['torch_threads']} and "
                        f"{binfo['torch_threads']}; other cores busy: quiet {qinfo['other_cores']:.2f}, "
                        f"busy {binfo['other_cores']:.2f}\n" + "\n".join(lines)))

    models = work / "sleepy"
    models.mkdir(exist_ok=True)
    (models / "sleepy_mlp_relu.py").write_text(SLEEPY)
    common = ["--quick", "--no-plots", "--models-from", str(models), "--models", "sleepy_mlp_relu"]
    for busy in (False, True):
        where = "one core busy" if busy else "quiet"
        loop = busy_loop(args.busy_seconds * args.slowdown_runs) if busy else None
        tag = "busy" if busy else "quiet"
        flagged, details = 0, []
        try:
            if busy:
                time.sleep(2)
            for rep in range(args.slowdown_runs):
                # a fresh baseline each time: what a CI run compares against is one quick run too
                bench(common + ["--out", str(work / f"sleep0-{tag}-{rep}")])
                base, binfo = run_rows(work / f"sleep0-{tag}-{rep}")
                backward = next(r for r in base.values() if r.phase == "backward")
                cases = [("spin", {"GRADCHECK_SPIN_S": repr(0.1 * backward.manual.median)})]
                if not busy and rep == 0:
                    cases.append(("work", {"GRADCHECK_EXTRA_WORK": "0.1"}))
                for kind, env in cases:
                    folder = work / f"slow-{tag}-{kind}-{rep}"
                    s1 = bench(common + ["--out", str(folder), "--baseline",
                                         str(work / f"sleep0-{tag}-{rep}/benchmarks.json"), "--fail-on-regression"],
                               env=env)
                    slow, sinfo = run_rows(folder)
                    after = slow[backward.key]
                    ok = s1["rc"] == 1 and "sleepy_mlp_relu backward" in s1["out"]
                    line = next((ln for ln in s1["out"].splitlines()
                                 if ln.startswith("| sleepy_mlp_relu | cpu | float32 | backward |")), "no row")
                    text = (f"{env}; manual backward {backward.manual.median * 1e6:.1f} µs -> "
                            f"{after.manual.median * 1e6:.1f} µs "
                            f"({100 * (after.manual.median / backward.manual.median - 1):+.1f}%); ratio {fmt(backward)} -> "
                            f"{fmt(after)}\n  gate row: {line}\n  {gated(s1)}; extra visits took "
                            f"{sinfo.get('gate', {}).get('extra_seconds')} s; threads {binfo['torch_threads']} and "
                            f"{sinfo['torch_threads']}; other cores busy {binfo['other_cores']:.2f} and "
                            f"{sinfo['other_cores']:.2f}\n  stderr: {s1['out'].strip().splitlines()[-1]}")
                    if kind == "work":
                        met.append(show(f"3 a backward of {backward.manual.median * 1e6:.0f} µs given 10% more work "
                                        f"(an extra matmul) is flagged ({where})", ok, text, s1))
                    else:
                        flagged += ok
                        details.append((ok, text, s1))
        finally:
            if loop is not None:
                loop.kill()
                loop.wait()
        for ok, text, result in details:
            show(f"  run: {'flagged' if ok else 'not flagged'}", ok, text, result)
        met.append(show(f"3 a 10% slowdown (busy wait) of a backward of about 110 µs is flagged ({where})",
                        flagged == len(details), f"flagged in {flagged} of {len(details)} runs, each against a fresh "
                                                 "quick baseline"))

    if not args.skip_install:
        venv, outside = work / "venv", work / "user-project"
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        inst = subprocess.run([str(venv / "bin/pip"), "install", "-q", "-c", str(ROOT / "constraints-cpu.txt"),
                               f"{ROOT}[test,plot]"], capture_output=True, text=True)
        shutil.rmtree(outside, ignore_errors=True)
        shutil.copytree(ROOT / "examples", outside / "examples")
        fresh = bench(["--quick", "--models-from", "examples/", "--out", "bench-report"],
                      exe=str(venv / "bin/gradcheck-suite"), cwd=outside)
        report = outside / "bench-report" / "report.md"
        installed = subprocess.run([str(venv / "bin/python"), "-c", "import gradcheck_suite; print(gradcheck_suite.__file__)"],
                                   capture_output=True, text=True, cwd=outside).stdout.strip()
        met.append(show("5 fresh venv, non-editable install: bench --quick --models-from examples/ outside the repo",
                        inst.returncode == 0 and fresh["rc"] == 0 and report.is_file()
                        and "softplus_layer" in report.read_text(),
                        f"pip exit {inst.returncode}; package at {installed}; report {report} "
                        f"{'written' if report.is_file() else 'MISSING'}", fresh))

    print(f"\n{sum(met)} of {len(met)} targets met")
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
