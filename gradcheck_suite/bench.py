"""gradcheck-suite bench: time the hand-written backward against autograd, and report.

The registry's models are the benchmark suite.  The benchmarks themselves live in the
``benchmarks/`` folder of the checkout (pytest-benchmark, files ``bench_*.py``); this
module holds what they share and the command that runs them and writes the report.

What is timed (:func:`region`), for one model at fixed dims on one device and dtype:

===========  =================  ==================================================
impl         phase              timed region (everything else is setup)
===========  =================  ==================================================
manual       backward           ``model.backward(p, d, cache, g)``, grad mode off
manual       forward+backward   ``model.forward`` then ``model.backward``, grad off
autograd     backward           ``torch.autograd.grad(out, leaves, g,
                                retain_graph=True)`` on a graph built once in setup
autograd     forward+backward   ``model.forward`` on leaves that require grad, then
                                ``torch.autograd.grad``
===========  =================  ==================================================

Tensors, the upstream gradient ``g`` and (for the backward phase) the forward are
setup.  Grad mode is switched once around the whole measurement, not per call.  On
CUDA the region ends with ``torch.cuda.synchronize()``, so it times the kernels and
not just their launch.

Report: ``report.md`` (one row per model × device × dtype × phase: manual and autograd
medians, their ratio, FLOPs, GFLOP/s and the fraction of the matmul throughput measured
in the same run), PNG plots of the size sweep, and a comparison with a baseline run.

Exit codes of :func:`main`: 0 done, 1 a benchmark failed or (with
``--fail-on-regression``) a regression beyond the threshold, 2 bad input.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

IMPLS = ("manual", "autograd")
BACKWARD, FORWARD_BACKWARD = "backward", "forward+backward"
PHASES = (BACKWARD, FORWARD_BACKWARD)
#: (device, dtype) cells of the grid; float64 on CPU only.
TARGETS = (("cpu", "float32"), ("cpu", "float64"), ("cuda", "float32"))
#: Warm-up iterations before timing (pytest-benchmark's ``warmup_iterations``).
WARMUP_ITERATIONS = 20
#: Square matmul sizes for the throughput calibration.  The reference, "the machine's
#: matmul throughput" in the report, is n=256: sized like the models (2·256³ = 34 MFLOP,
#: mlp_relu's forward+backward is 26 MFLOP).  The others show how it grows with size.
MATMUL_SIZES = (128, 256, 512)
MATMUL_REFERENCE = 256
#: Size sweep: each dimension times these factors (about a decade, steps of √2).
#: deep_linear's benchmark size is tiny, so it is swept upwards.
SWEEP = {
    "mlp_relu": tuple(2 ** (k / 2) for k in range(-6, 1)),
    "linear_layer": tuple(2 ** (k / 2) for k in range(-6, 1)),
    "deep_linear": tuple(2 ** (k / 2) for k in range(0, 9)),
}
FLOP_TIME_MODEL, FLOP_TIME_TARGET = "mlp_relu", 1.3
JSON_NAME, REPORT_NAME = "benchmarks.json", "report.md"
BUSY_CORES = 0.1  # other processes using more cores than this during the run get a warning


# --------------------------------------------------------------------------- timing

@dataclasses.dataclass
class Region:
    """The code to time, the grad mode it runs under, and what to record about it."""

    run: Callable[[], object]
    grad_enabled: bool
    flops: int | None
    info: dict


def region(model, dims: Mapping[str, int], impl: str, phase: str, device: str = "cpu",
           dtype: str = "float32", seed: int = 0) -> Region:
    """Build tensors (and, for the backward phase, run the forward) and return the timed region."""
    import torch

    from .case import Case, build, upstream
    from .spec import Tensors

    if impl not in IMPLS or phase not in PHASES:
        raise ValueError(f"impl must be one of {IMPLS} and phase one of {PHASES}, got {impl!r}, {phase!r}")
    p, d = build(model, Case(model.name, dict(dims), dtype, device, seed, 1.0))
    with torch.no_grad():
        out, cache = model.forward(p, d)
    g = upstream(out, seed)

    if impl == "manual":
        if phase == BACKWARD:
            def run():
                return model.backward(p, d, cache, g)
        else:
            def run():
                _, c = model.forward(p, d)
                return model.backward(p, d, c, g)
    else:
        names = model.differentiable
        leaves = {n: (p[n] if n in p else d[n]).detach().clone().requires_grad_(True) for n in names}
        P = Tensors((n, leaves[n]) for n in p)
        D = Tensors((n, leaves.get(n, t)) for n, t in d.items())
        inputs = [leaves[n] for n in names]
        if phase == BACKWARD:
            with torch.enable_grad():
                graph_out, _ = model.forward(P, D)

            def run():
                return torch.autograd.grad(graph_out, inputs, g, retain_graph=True, allow_unused=True)
        else:
            def run():
                o, _ = model.forward(P, D)
                return torch.autograd.grad(o, inputs, g, allow_unused=True)

    flops = None
    if model.flops is not None:
        fwd, bwd = model.flops(dict(dims))
        flops = int(bwd if phase == BACKWARD else fwd + bwd)
    info = {"model": model.name, "impl": impl, "phase": phase, "device": device, "dtype": dtype,
            "dims": dict(dims)}
    return Region(_synced(run, device), impl == "autograd", flops, info)


def matmul_region(n: int, device: str = "cpu", dtype: str = "float32") -> Region:
    """An n×n by n×n matmul: the calibration of the machine's throughput."""
    import torch

    gen = torch.Generator().manual_seed(n)
    a, b = (torch.randn(n, n, generator=gen, dtype=torch.float64).to(device, getattr(torch, dtype))
            for _ in range(2))

    def run():
        return a @ b

    info = {"model": None, "impl": "matmul", "phase": None, "device": device, "dtype": dtype, "n": n}
    return Region(_synced(run, device), False, 2 * n ** 3, info)


def _synced(run: Callable[[], object], device: str) -> Callable[[], object]:
    if not device.startswith("cuda"):
        return run
    import torch

    def synced():
        result = run()
        torch.cuda.synchronize()
        return result
    return synced


def cpu_snapshot() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process), or None
    where /proc/stat is missing.  Two snapshots tell how much others ran meanwhile."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: busy, and steal (other guests) too
    busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields))
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_cores(start: tuple[float, float] | None, end: tuple[float, float] | None, wall: float) -> float | None:
    """Average number of cores other processes (and other guests' steal) used between two snapshots."""
    if start is None or end is None or wall <= 0:
        return None
    return max(0.0, (end[0] - start[0]) - (end[1] - start[1])) / wall


def measure(benchmark, reg: Region, kind: str, group: str | None = None, **extra) -> None:
    """Time ``reg`` with pytest-benchmark's fixture; record what it is in ``extra_info``."""
    import torch

    benchmark.group = group
    benchmark.extra_info.update(reg.info, kind=kind, flops=reg.flops, threads=torch.get_num_threads(), **extra)
    with torch.set_grad_enabled(reg.grad_enabled):
        benchmark(reg.run)


def scaled_dims(model, factor: float) -> dict[str, int]:
    """The benchmark dims with every dimension times ``factor`` (at least 1)."""
    return {k: max(1, round(v * factor)) for k, v in model.bench_dims.items()}


def sweep_points() -> list[tuple[str, float]]:
    return [(name, f) for name, factors in SWEEP.items() for f in factors]


# --------------------------------------------------------------------------- report

class BenchInputError(Exception):
    """Bad input to the command: reported as one line, exit code 2."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One benchmark of a pytest-benchmark JSON, as the report reads it."""

    name: str
    kind: str
    model: str | None
    impl: str
    phase: str | None
    device: str
    dtype: str
    dims: dict
    flops: int | None
    median: float
    factor: float | None = None
    n: int | None = None


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the model table: manual against autograd in one cell of the grid."""

    model: str
    device: str
    dtype: str
    phase: str
    manual: float | None
    autograd: float | None
    flops: int | None
    peak: float | None  # the matmul throughput of this device and dtype, FLOP/s

    @property
    def ratio(self) -> float | None:
        """manual / autograd: above 1, the hand-written backward is slower."""
        return self.manual / self.autograd if self.manual and self.autograd else None

    def rate(self, seconds: float | None) -> float | None:
        return self.flops / seconds if self.flops is not None and seconds else None

    def fraction(self, seconds: float | None) -> float | None:
        rate = self.rate(seconds)
        return rate / self.peak if rate is not None and self.peak else None


@dataclasses.dataclass(frozen=True)
class Change:
    name: str
    baseline: float
    current: float

    @property
    def percent(self) -> float:
        return 100.0 * (self.current - self.baseline) / self.baseline


def load_run(path: str | os.PathLike, what: str = "benchmark file") -> dict:
    """A pytest-benchmark JSON file, checked enough to report on; BenchInputError if not."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise BenchInputError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BenchInputError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
    except json.JSONDecodeError as e:
        raise BenchInputError(f"{what} {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise BenchInputError(f"{what} {path} is not a pytest-benchmark JSON (no 'benchmarks' list)")
    return data


def records(run: Mapping) -> list[Record]:
    """The benchmarks of a run that this suite wrote (others, without ``extra_info.kind``, are left out)."""
    out = []
    for b in run.get("benchmarks", []):
        info, stats = b.get("extra_info") or {}, b.get("stats") or {}
        if "kind" not in info or not isinstance(stats.get("median"), (int, float)):
            continue
        out.append(Record(name=b.get("name", ""), kind=info["kind"], model=info.get("model"), impl=info.get("impl", ""),
                          phase=info.get("phase"), device=info.get("device", "cpu"), dtype=info.get("dtype", ""),
                          dims=info.get("dims") or {}, flops=info.get("flops"), median=float(stats["median"]),
                          factor=info.get("factor"), n=info.get("n")))
    return out


def matmul_peaks(recs: Iterable[Record], reference: int | None = MATMUL_REFERENCE) -> dict[tuple[str, str], tuple[float, int]]:
    """(device, dtype) -> (matmul FLOP/s, the size n it was measured at).

    The rate at n = ``reference`` where the run has it, else the best measured size.
    """
    rates: dict[tuple[str, str], dict[int, float]] = {}
    for r in recs:
        if r.kind == "matmul" and r.flops and r.median > 0:
            rates.setdefault((r.device, r.dtype), {})[r.n] = r.flops / r.median
    found = {}
    for key, by_n in rates.items():
        n = reference if reference in by_n else max(by_n, key=by_n.get)
        found[key] = (by_n[n], n)
    return found


def grid_rows(recs: Iterable[Record], peaks: Mapping[tuple[str, str], tuple[float, int]]) -> list[Row]:
    """One row per model × device × dtype × phase, in the order the run met them."""
    cells: dict[tuple, dict] = {}
    for r in recs:
        if r.kind != "grid":
            continue
        cell = cells.setdefault((r.model, r.device, r.dtype, r.phase), {"flops": r.flops})
        cell[r.impl] = r.median
    return [Row(model, device, dtype, phase, c.get("manual"), c.get("autograd"), c["flops"],
                peaks.get((device, dtype), (None, None))[0])
            for (model, device, dtype, phase), c in cells.items()]


def flop_time_ratio(recs: Iterable[Record], peaks: Mapping, model: str = FLOP_TIME_MODEL,
                    device: str = "cpu", dtype: str = "float32") -> float | None:
    """Manual forward+backward time over the time its FLOPs take at the matmul throughput."""
    peak = peaks.get((device, dtype))
    for r in recs:
        if (r.kind, r.model, r.impl, r.phase, r.device, r.dtype) == ("grid", model, "manual", FORWARD_BACKWARD,
                                                                     device, dtype):
            return r.median / (r.flops / peak[0]) if r.flops and peak else None
    return None


def compare(current: Mapping, baseline: Mapping) -> list[Change]:
    """Median of every benchmark present in both runs, matched by name."""
    old = {b.get("name"): b.get("stats", {}).get("median") for b in baseline.get("benchmarks", [])}
    changes = []
    for b in current.get("benchmarks", []):
        base, now = old.get(b.get("name")), b.get("stats", {}).get("median")
        if isinstance(base, (int, float)) and base > 0 and isinstance(now, (int, float)):
            changes.append(Change(b["name"], float(base), float(now)))
    return changes


def regressions(changes: Iterable[Change], threshold: float) -> list[Change]:
    """Benchmarks slower than the baseline by more than ``threshold`` percent, worst first."""
    return sorted((c for c in changes if c.percent > threshold), key=lambda c: -c.percent)


# --------------------------------------------------------------------------- formatting

def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_count(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:g}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def fmt_gflops(rate: float | None) -> str:
    return "-" if rate is None else f"{rate / 1e9:.3g}"


def fmt_percent(frac: float | None) -> str:
    if frac is None:
        return "-"
    pct = 100 * frac
    return f"{pct:.0f}%" if pct >= 10 else f"{pct:.1f}%" if pct >= 1 else f"{pct:.2g}%"


def markdown(header: list[str], lines: Iterable[list[str]]) -> str:
    rows = [header, ["---"] * len(header), *lines]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def model_table(rows: Iterable[Row]) -> str:
    return markdown(
        ["model", "device", "dtype", "phase", "manual", "autograd", "manual/autograd", "FLOPs",
         "manual GFLOP/s", "autograd GFLOP/s", "manual % matmul", "autograd % matmul"],
        ([r.model, r.device, r.dtype, r.phase, fmt_time(r.manual), fmt_time(r.autograd), fmt_ratio(r.ratio),
          fmt_count(r.flops), fmt_gflops(r.rate(r.manual)), fmt_gflops(r.rate(r.autograd)),
          fmt_percent(r.fraction(r.manual)), fmt_percent(r.fraction(r.autograd))] for r in rows))


def sweep_series(recs: Iterable[Record]) -> dict[str, dict[str, list[Record]]]:
    """model -> impl -> sweep records by growing factor."""
    out: dict[str, dict[str, list[Record]]] = {}
    for r in recs:
        if r.kind == "sweep":
            out.setdefault(r.model, {}).setdefault(r.impl, []).append(r)
    for by_impl in out.values():
        for series in by_impl.values():
            series.sort(key=lambda r: r.factor)
    return out


def sweep_table(series: Mapping[str, Mapping[str, list[Record]]]) -> str:
    lines = []
    for model, by_impl in series.items():
        autograd = {r.factor: r.median for r in by_impl.get("autograd", [])}
        for r in by_impl.get("manual", []):
            a = autograd.get(r.factor)
            dims = ",".join(f"{k}={v}" for k, v in r.dims.items())
            lines.append([model, f"{r.factor:.3g}", dims, fmt_count(r.flops), fmt_time(r.median), fmt_time(a),
                          fmt_ratio(r.median / a if a else None)])
    return markdown(["model", "factor", "dims", "FLOPs", "manual", "autograd", "manual/autograd"], lines)


def plot_sweep(series: Mapping[str, Mapping[str, list[Record]]], peaks: Mapping, out: Path) -> list[Path]:
    """One PNG per swept model: time against size, manual and autograd side by side.

    Raises ImportError without matplotlib.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for model, by_impl in series.items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True, constrained_layout=True)
        for ax, impl in zip(axes, IMPLS):
            recs = by_impl.get(impl, [])
            if not recs:
                ax.set_title(f"{impl}: not measured")
                continue
            use_flops = all(r.flops for r in recs)
            x = [r.flops if use_flops else r.factor for r in recs]
            for other in IMPLS:  # the other implementation, faint, for comparison
                if other != impl and by_impl.get(other):
                    ax.loglog([r.flops if use_flops else r.factor for r in by_impl[other]],
                              [r.median for r in by_impl[other]], ".-", color="0.75", label=other)
            ax.loglog(x, [r.median for r in recs], "o-", label=f"{impl} forward+backward")
            peak = peaks.get((recs[0].device, recs[0].dtype))
            if use_flops and peak:
                ax.loglog(x, [f / peak[0] for f in x], "k--", lw=1,
                          label=f"FLOPs at matmul throughput ({peak[0] / 1e9:.3g} GFLOP/s)")
            ax.set_xlabel("FLOPs (forward+backward)" if use_flops else "scale factor of the benchmark dims")
            ax.set_title(f"{impl}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_ylabel("median time (s)")
        first = next(iter(by_impl.values()))[0]
        fig.suptitle(f"{model}, {first.device} {first.dtype}: each dimension × "
                     f"{min(r.factor for rs in by_impl.values() for r in rs):.3g} … "
                     f"{max(r.factor for rs in by_impl.values() for r in rs):.3g} of the benchmark size")
        path = out / f"sweep_{model}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def machine_line(run: Mapping) -> str:
    m = run.get("machine_info") or {}
    cpu = m.get("cpu") or {}
    brand = cpu.get("brand_raw") if isinstance(cpu, dict) else cpu
    return (f"CPU {brand or m.get('processor') or '?'} ({m.get('cpu_count', '?')} cores), "
            f"GPU {m.get('gpu') or 'none'}, torch {m.get('torch_version', '?')}, "
            f"{m.get('torch_threads', '?')} torch threads, Python {m.get('python_version', '?')}")


def report(run: Mapping, out: Path, baseline: Mapping | None = None, threshold: float = 10.0,
           plots: bool = True) -> tuple[str, list[Change]]:
    """The Markdown report of ``run`` (plots written into ``out``) and the regressions."""
    recs = records(run)
    peaks = matmul_peaks(recs)
    m = run.get("machine_info") or {}
    parts = ["# gradcheck-suite benchmarks", "",
             f"{machine_line(run)}; run {run.get('datetime', '?')}, "
             f"commit {(run.get('commit_info') or {}).get('id', '?')}."]
    if not m.get("gpu"):
        parts.append("CUDA not available: the CUDA cases were skipped.")
    others = m.get("other_cores")
    if isinstance(others, (int, float)):
        parts.append(f"Other processes used {others:.2f} cores on average during the run."
                     + (" Warning: the machine was busy, so these timings are inflated; rerun on a quiet machine."
                        if others > BUSY_CORES else ""))

    parts += ["", "## Matmul throughput (calibration, same run)", ""]
    mm = [r for r in recs if r.kind == "matmul"]
    parts.append(markdown(["device", "dtype", "n", "median", "GFLOP/s"],
                          ([r.device, r.dtype, str(r.n), fmt_time(r.median), fmt_gflops(r.flops / r.median)]
                           for r in mm)) if mm else "No matmul calibration in this run.")
    best = matmul_peaks(recs, reference=None)
    if peaks:
        parts += ["", "\"The machine's matmul throughput\" below is the n=256 rate, sized like the models: "
                  + "; ".join(f"{dev} {dt} {rate / 1e9:.3g} GFLOP/s (n={n})" for (dev, dt), (rate, n) in peaks.items())
                  + "."]

    parts += ["", "## FLOP-time ratio", ""]
    for dev, dt in [k for k in TARGETS if k in peaks and k[1] == "float32"] or [("cpu", "float32")]:
        ratio = flop_time_ratio(recs, peaks, device=dev, dtype=dt)
        verdict = "-" if ratio is None else f"{ratio:.2f}x ({'within' if ratio <= FLOP_TIME_TARGET else 'above'} " \
                                            f"the {FLOP_TIME_TARGET}x target)"
        parts.append(f"**{FLOP_TIME_MODEL} manual forward+backward time / time of its FLOPs at the measured "
                     f"matmul throughput ({dev} {dt}): {verdict}**")
        strict = flop_time_ratio(recs, best, device=dev, dtype=dt)
        if ratio is not None and strict is not None and best[(dev, dt)][1] != peaks[(dev, dt)][1]:
            parts.append(f"(against the best measured matmul, n={best[(dev, dt)][1]}, "
                         f"{best[(dev, dt)][0] / 1e9:.3g} GFLOP/s: {strict:.2f}x)")

    rows = grid_rows(recs, peaks)
    parts += ["", "## Models at their benchmark size", "",
              "Median times; manual/autograd above 1 means the hand-written backward is slower. "
              "GFLOP/s from the model's own `flops` (\"-\" where it states none); % matmul is that rate "
              "over the matmul throughput above.", "",
              model_table(rows) if rows else "No model benchmarks in this run."]

    series = sweep_series(recs)
    parts += ["", "## Size sweep (forward+backward)", ""]
    if series:
        parts.append(sweep_table(series))
        parts.append("")
        if not plots:
            parts.append("plots skipped")
        else:
            try:
                paths = plot_sweep(series, peaks, out)
                parts.append("Plots: " + ", ".join(f"[{p.name}]({p.name})" for p in paths))
            except ImportError:
                parts.append("plots skipped: matplotlib not installed")
    else:
        parts.append("No size sweep in this run.")

    regressed: list[Change] = []
    if baseline is not None:
        changes = compare(run, baseline)
        regressed = regressions(changes, threshold)
        faster = [c for c in changes if c.percent < -threshold]
        parts += ["", "## Against the baseline", "",
                  f"Baseline: {machine_line(baseline)}; run {baseline.get('datetime', '?')}."]
        if machine_line(baseline) != machine_line(run):
            parts.append("Warning: the baseline ran on another machine or setup; differences may not be regressions.")
        parts.append(f"{len(changes)} benchmarks compared by median; {len(regressed)} slower and {len(faster)} faster "
                     f"by more than {threshold:g}%.")
        if regressed:
            parts += ["", markdown(["benchmark", "baseline", "now", "change"],
                                   ([c.name, fmt_time(c.baseline), fmt_time(c.current), f"+{c.percent:.1f}%"]
                                    for c in regressed))]
    return "\n".join(parts) + "\n", regressed


# --------------------------------------------------------------------------- command

def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="gradcheck-suite bench",
        description="Time every registered model's hand-written backward against autograd (pytest-benchmark) "
                    "and write benchmarks.json, report.md and sweep plots into --out.",
        epilog="Arguments after '--' go to pytest (e.g. -- -k mlp_relu). "
               "Exit codes: 0 done, 1 a benchmark failed or a regression with --fail-on-regression, 2 bad input.")
    ap.add_argument("--out", required=True, metavar="DIR", help="folder for the report (created if missing)")
    ap.add_argument("--quick", action="store_true",
                    help="short CI pass: CPU float32 only, few short rounds (default: full grid)")
    ap.add_argument("--baseline", metavar="FILE", help="a previous run's benchmarks.json to compare against")
    ap.add_argument("--threshold", type=float, default=10.0, metavar="PCT",
                    help="slower than the baseline by more than PCT%% is a regression (default: 10)")
    ap.add_argument("--fail-on-regression", action="store_true", help="exit 1 when there is a regression")
    ap.add_argument("--max-time", type=float, metavar="SECONDS",
                    help="time spent per benchmark (default: 0.5, 0.02 with --quick)")
    ap.add_argument("--models-from", action="append", default=[], metavar="PATH",
                    help="also benchmark the models of this file, folder or module; repeatable")
    ap.add_argument("--from-json", metavar="FILE",
                    help="do not run: write the report from this benchmarks JSON instead")
    ap.add_argument("--benchmarks", metavar="DIR",
                    help="the benchmarks folder (default: benchmarks/ next to the gradcheck_suite package)")
    ap.add_argument("--no-plots", action="store_true", help="do not draw the sweep plots")
    return ap


def _writable(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise BenchInputError(f"cannot write to the output folder {path}: {e.strerror or e}") from None
    return out


def _benchmarks_dir(path: str | None) -> Path:
    folder = Path(path) if path else Path(__file__).resolve().parent.parent / "benchmarks"
    if not (folder / "conftest.py").is_file():
        raise BenchInputError(f"no benchmarks folder at {folder} (it needs a conftest.py); "
                              "run from a checkout of gradcheck-suite or pass --benchmarks DIR")
    return folder


def pytest_args(folder: Path, json_path: Path, quick: bool, max_time: float | None,
                models_from: Iterable[str] = (), extra: Iterable[str] = ()) -> list[str]:
    """The pytest command line that runs the benchmarks."""
    if max_time is None:
        max_time = 0.02 if quick else 0.5
    args = [str(folder), f"--benchmark-json={json_path}", "-p", "no:cacheprovider", "-q",
            "--benchmark-quiet", f"--benchmark-max-time={max_time}",
            f"--benchmark-min-rounds={3 if quick else 10}",
            # rounds of at least 1 ms: few enough rounds that the JSON stays small
            "--benchmark-min-time=0.001",
            # gradcheck_suite is a pytest plugin too, already imported by this command
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    if quick:
        args.append("--bench-quick")
    for m in models_from:
        args += ["--bench-models-from", m]
    return args + list(extra)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = _parser().parse_args(argv)
    try:
        if not 0 <= args.threshold < math.inf:  # nan too: it would compare false with every change
            raise BenchInputError(f"--threshold must be a finite number >= 0, got {args.threshold:g}")
        if args.max_time is not None and not 0 < args.max_time < math.inf:
            raise BenchInputError(f"--max-time must be a finite number > 0, got {args.max_time:g}")
        baseline = load_run(args.baseline, "baseline file") if args.baseline else None
        given = load_run(args.from_json, "--from-json file") if args.from_json else None
        folder = None if given else _benchmarks_dir(args.benchmarks)
        out = _writable(args.out)
    except BenchInputError as e:
        print(f"gradcheck-suite bench: error: {e}", file=sys.stderr)
        return 2

    failed = False
    if given is not None:
        run = given
    else:
        try:
            import pytest
            import pytest_benchmark  # noqa: F401  (the plugin the benchmarks need)
        except ImportError as e:
            print(f"gradcheck-suite bench: error: {e.name} is not installed; "
                  "install the test extra: pip install -e '.[test]'", file=sys.stderr)
            return 2

        json_path = out / JSON_NAME
        json_path.unlink(missing_ok=True)
        code = pytest.main(pytest_args(folder, json_path, args.quick, args.max_time, args.models_from, extra))
        if not json_path.is_file():
            print(f"gradcheck-suite bench: the benchmarks did not run (pytest exit code {int(code)})", file=sys.stderr)
            return 1
        failed = code != 0
        run = load_run(json_path)

    text, regressed = report(run, out, baseline, args.threshold, plots=not args.no_plots)
    (out / REPORT_NAME).write_text(text, encoding="utf-8")
    print(text)
    print(f"Report written to {out / REPORT_NAME}")
    if failed:
        print("gradcheck-suite bench: some benchmarks failed; see the pytest output above", file=sys.stderr)
        return 1
    if regressed and args.fail_on_regression:
        print(f"gradcheck-suite bench: {len(regressed)} regression(s) beyond {args.threshold:g}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
