"""The Markdown report of a benchmark run (``report.md``, also printed and appended to
GitHub's step summary)."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from . import calibration
from . import regression
from . import stats
from .rows import GRID, SWEEP, Row, machine, rows
from .timing import FORWARD_BACKWARD
from .verdicts import PASS
from ..verdict import rules

REPORT_NAME = "report.md"


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_spread(s: stats.Summary) -> str:
    """median (IQR q1–q3)."""
    return f"{fmt_time(s.median)} ({fmt_time(s.q1)}–{fmt_time(s.q3)})"


def fmt_interval(i: stats.Interval, digits: int = 2) -> str:
    return f"{i.value:.{digits}f} [{i.low:.{digits}f}, {i.high:.{digits}f}]"


def fmt_count(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:g}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def fmt_memory(r: Row, what: str) -> str:
    """manual / autograd (manual/autograd×), or why there is no figure."""
    if r.memory and "error" in r.memory:
        return "not measured"
    m, a = r.memory_of("manual", what), r.memory_of("autograd", what)
    if m is None and a is None:
        return "-"
    ratio = r.memory_ratio(what)
    return f"{fmt_bytes(m)} / {fmt_bytes(a)}" + (f" ({ratio:.2f}×)" if ratio is not None else "")


def fmt_percent(frac: float | None) -> str:
    if frac is None:
        return "-"
    pct = 100 * frac
    return f"{pct:.0f}%" if pct >= 10 else f"{pct:.1f}%" if pct >= 1 else f"{pct:.2g}%"


def markdown(header: Sequence[str], lines: Iterable[Sequence[str]]) -> str:
    table = [list(header), ["---"] * len(header), *lines]
    return "\n".join("| " + " | ".join(r) + " |" for r in table)


def _check_cell(r: Row) -> str:
    return "pass" if r.verdict == PASS else f"**{r.verdict.upper()}**"


def _percent_cell(r: Row, impl: str, notes: list[str]) -> str:
    frac = r.fraction(impl)
    if frac is not None and frac > 1:
        notes.append(f"{r.model} {r.device} {r.dtype} {r.phase}, {impl}: {fmt_percent(frac)} of the matmul rate, "
                     f"{calibration.OVER_NOTE}.")
        return f"{fmt_percent(frac)} (note {len(notes)})"
    return fmt_percent(frac)


def _place(r: Row) -> str:
    return f"{r.device} {r.dtype}"


def label(r: Row) -> str:
    """The model's name, and a sharded row's world size."""
    return r.model if r.world_size is None else f"{r.model} ({r.world_size} ranks)"


def _autograd_cell(r: Row, cell: str) -> str:
    return "n/a" if r.na else cell


def model_table(grid: Sequence[Row]) -> str:
    """What a reader decides from: the times, their ratio, which side is faster, memory."""
    lines = []
    for r in grid:
        lines.append([label(r), r.phase, _check_cell(r), fmt_time(r.manual.median),
                      _autograd_cell(r, fmt_time(r.autograd.median)),
                      f"n/a: {r.na}" if r.na else fmt_interval(r.ratio), r.faster, fmt_memory(r, "kept"),
                      fmt_memory(r, "peak")])
    return markdown(["model", "phase", "check", "manual", "autograd", f"manual/autograd [{rules.CONFIDENCE:.0%} CI]",
                     "faster", "kept: manual / autograd", "peak: manual / autograd"], lines)


def details_table(grid: Sequence[Row], notes: list[str]) -> str:
    """The spread of every time, the rounds, the FLOPs and the matmul they are measured against."""
    lines = []
    for r in grid:
        shape = "×".join(map(str, r.matmul["shape"])) if r.matmul else "-"
        lines.append([label(r), _place(r), r.phase, fmt_spread(r.manual), _autograd_cell(r, fmt_spread(r.autograd)),
                      f"{r.rounds} in {len(r.visits)}", fmt_count(r.flops), shape,
                      _percent_cell(r, "manual", notes), _percent_cell(r, "autograd", notes)])
    return markdown(["model", "device dtype", "phase", "manual: median (IQR)", "autograd: median (IQR)",
                     "rounds in visits", "FLOPs", "matmul m×k×n", "manual % matmul", "autograd % matmul"], lines)


def memory_lines(grid: Sequence[Row]) -> list[str]:
    """A backward that keeps less than autograd: the reason it exists, said once per model."""
    out, said = [], set()
    for r in grid:
        ratio = r.memory_ratio("kept")
        key = (r.model, r.device, r.dtype)
        if key in said or ratio is None or ratio >= 1:
            continue
        said.add(key)
        out.append(f"- {r.model} ({_place(r)}) keeps {ratio:.2g}× autograd's saved bytes "
                   f"({fmt_bytes(r.memory_of('manual', 'kept'))} against {fmt_bytes(r.memory_of('autograd', 'kept'))}).")
    for r in grid:
        if r.memory and "error" in r.memory and (r.model, "error") not in said:
            said.add((r.model, "error"))
            out.append(f"- {r.model} ({_place(r)}): memory not measured: {r.memory['error']}")
    return out


SHARDED_TEXT = ("Each rank timed its own part of the step, in the rounds of the row, with its shards of the case's "
                "values: **manual** is the sharded Function's forward and its hand-written backward (collectives "
                "included) through autograd, as training runs it; **autograd** is autograd of the record's "
                "unsharded reference run on the rank's shards, then the all-reduce that the placements make the "
                "gradient need (the same collective a hand-written backward runs). A collective step ends when the "
                "last rank's does, so the row's time per round is the slowest rank's (**max**). Where the reference "
                "on a rank's shards is not that rank's computation (a forward that is itself a collective), autograd "
                "has no side: n/a, with the reason.")


def sharded_table(sharded: Sequence[Row]) -> str:
    """A sharded row's ranks: each one's median, the slowest rank's (the row's time), what autograd's side is."""
    lines = []
    for r in sharded:
        per = {side: ", ".join(fmt_time(t) for t in r.rank_medians(side)) or "-" for side in ("manual", "autograd")}
        lines.append([r.model, str(r.world_size), r.phase, per["manual"], fmt_time(r.manual.median),
                      _autograd_cell(r, per["autograd"]), _autograd_cell(r, fmt_time(r.autograd.median)),
                      f"n/a: {r.na}" if r.na else (r.autograd_side or "-")])
    return markdown(["model", "world size", "phase", "manual: median per rank", "manual: max over ranks",
                     "autograd: median per rank", "autograd: max over ranks", "autograd's side"], lines)


def sweep_series(all_rows: Iterable[Row]) -> dict[str, list[Row]]:
    """model -> its sweep rows and, at factor 1, its grid forward+backward row, by size."""
    all_rows = list(all_rows)
    out: dict[str, list[Row]] = {}
    for r in all_rows:
        if r.table == SWEEP:
            out.setdefault(r.model, []).append(r)
    for model, series in out.items():
        first = series[0]
        for r in all_rows:
            if (r.table, r.model, r.device, r.dtype, r.phase) == (GRID, model, first.device, first.dtype, FORWARD_BACKWARD):
                series.append(_as_factor_one(r))
        series.sort(key=lambda r: r.factor)
    return out


def _as_factor_one(r: Row) -> Row:
    return dataclasses.replace(r, factor=1.0)


def sweep_table(series: Mapping[str, Sequence[Row]]) -> str:
    lines = []
    for model, rs in series.items():
        for r in rs:
            dims = ",".join(f"{k}={v}" for k, v in r.dims.items())
            lines.append([model, f"{r.factor:.3g}" + (" (grid row)" if r.factor == 1 else ""), dims, fmt_count(r.flops),
                          fmt_spread(r.manual), fmt_spread(r.autograd), fmt_interval(r.ratio)])
    return markdown(["model", "factor", "dims", "FLOPs", "manual: median (IQR)", "autograd: median (IQR)",
                     "manual/autograd [CI]"], lines)


def header(run: Mapping) -> list[str]:
    m = run.get("machine_info") or {}
    who = machine(run)
    lines = [f"CPU {who['cpu'] or '?'} ({who['cores'] or '?'} cores), GPU {who['gpu'] or 'none'}, "
             f"torch {who['torch'] or '?'}, **{who['threads'] or '?'} torch thread(s)**, "
             f"{'quick pass' if m.get('quick') else 'full grid'}; run {run.get('datetime', '?')}, "
             f"commit {(run.get('commit_info') or {}).get('id', '?')}."]
    load = m.get("load_average") or {}
    others = m.get("other_cores")
    busy = []
    if isinstance(load.get("start"), (int, float)):
        busy.append(f"load average {load['start']:.2f} at the start, {load.get('end') or 0:.2f} at the end")
    if isinstance(others, (int, float)):
        busy.append(f"other processes used {others:.2f} cores on average")
    if busy:
        lines.append("Machine: " + "; ".join(busy) + "."
                     + (" Absolute times are inflated by that work; the ratios, timed in the same rounds, much less."
                        if isinstance(others, (int, float)) and others > rules.BUSY_CORES else ""))
    if not m.get("gpu"):
        lines.append("CUDA not available: the CUDA cases were skipped.")
    return lines


def gate_plan(run: Mapping, compared: int) -> regression.Plan:
    """The plan the run's gate decided with (rows, regular visits, extra looks, visits per
    look), its rows at least the ``compared`` ones; one look where the run had no gate."""
    gate = (run.get("machine_info") or {}).get("gate") or {}
    visits, looks, per, count = (gate.get(k) for k in ("visits", "looks", "visits_per_look", "rows"))
    count = max(compared, count if isinstance(count, int) else 0)
    if all(isinstance(x, int) and x >= 1 for x in (visits, looks, per)):
        return regression.Plan(count, visits, looks, per)
    return regression.Plan(count)


def baseline_section(run: Mapping, baseline: Mapping, comparisons: Sequence[regression.Comparison],
                     threshold_pct: float) -> list[str]:
    same = regression.same_machine(run, baseline)
    plan = gate_plan(run, len(comparisons))
    b = machine(baseline)
    parts = ["", "## Against the baseline", "",
             f"Baseline: CPU {b['cpu'] or '?'}, {b['threads'] or '?'} torch thread(s), torch {b['torch'] or '?'}; "
             f"run {baseline.get('datetime', '?')}, commit {(baseline.get('commit_info') or {}).get('id', '?')}.",
             ("Same machine and setup." if same else
              "**The baseline comes from another machine or setup: only manual/autograd ratios are compared.**"),
             f"Gate: a row is slower (or faster) only when the interval of ratio now / ratio then, from the visits "
             f"of both runs, lies wholly beyond ±{threshold_pct:g}%"
             + ("; on the same machine, not when the manual time moved less than the machine's speed "
                "explains (contradicted)" if same else "")
             + f". The report-wide false-flag rate of {rules.FALSE_FLAG_RATE:.0%} is split over the "
             f"{plan.rows} row(s) and {max(1, plan.flagging_looks)} look(s) that may flag, so each interval is "
             f"{1 - 2 * plan.tail:.3%}. No row is flagged before {rules.MIN_VISITS} visits in this run or while "
             f"its interval spans more than {rules.MAX_SPREAD:.0%}."
             + (f" A row still undecided after its {plan.visits} visits got {plan.per_look} more at a time, up to "
                f"{plan.looks * plan.per_look}, with a look after each batch. "
                "Inconclusive: still undecided when the looks or the time ran out." if plan.looks else "")]
    if comparisons and all(c.visits < rules.MIN_VISITS for c in comparisons):
        parts.append(f"Every row has fewer than {rules.MIN_VISITS} visits in this run, so no row can be flagged: "
                     "a run made with `--baseline` takes extra visits where a row needs them.")
    counts = {s: sum(c.status == s for c in comparisons) for s in (regression.SLOWER, regression.FASTER, regression.SAME,
                                                                   regression.UNCLEAR, regression.CONTRADICTED)}
    parts.append(f"{len(comparisons)} rows compared: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".")
    speed = regression.machine_speed((c.row, c.base) for c in comparisons)
    if same and speed is not None and not 1 / rules.SPEED_NOTE < speed < rules.SPEED_NOTE:
        parts.append(f"Autograd took {speed:.2f}× the baseline's time (median over rows): the machine ran at another "
                     "speed. Ratios of microsecond-scale rows, where autograd's own overhead dominates, can move "
                     "with the machine's state; read their changes with that in mind.")
    if not comparisons:
        parts.append("No row of this run is in the baseline.")
        return parts
    head = ["model", "device", "dtype", "phase", "ratio then", "ratio now", "change [CI]", "visits", "verdict"]
    if same:
        head.insert(6, "manual time then → now")
    lines = []
    for c in sorted(comparisons, key=lambda c: -c.change.low):
        r = c.row
        line = [label(r), r.device, r.dtype, r.phase, f"{c.base.ratio.value:.3f}", f"{r.ratio.value:.3f}",
                change_cell(c), str(c.visits), f"**{c.status}**" if c.status == regression.SLOWER else c.status]
        if same:
            line.insert(6, f"{fmt_time(c.base.manual.median)} → {fmt_time(r.manual.median)}")
        lines.append(line)
    return parts + ["", markdown(head, lines)]


def change_cell(c: regression.Comparison) -> str:
    """The change with its interval; an interval that does not exist yet says why."""
    if not math.isfinite(c.change.high) or c.change.low <= 0:
        return f"{c.percent:+.1f}% [too few visits]"
    return f"{c.percent:+.1f}% [{100 * (c.change.low - 1):+.1f}%, {100 * (c.change.high - 1):+.1f}%]"


def memory_section(changes: Sequence[regression.MemoryChange], threshold_pct: float, peak: bool = True) -> list[str]:
    parts = ["", "### Memory against the baseline", "",
             f"Memory is deterministic: a row is a memory regression when the manual path's kept "
             f"{'or peak ' if peak else ''}bytes grew by more than {threshold_pct:g}% (`--memory-threshold`)."
             + ("" if peak else " The baseline ran with another torch, CPU, GPU or thread count: the peak, which "
                                "counts what torch's kernels allocate for themselves, is shown but not gated.")]
    if not changes:
        return parts + ["No row of this run has memory figures in the baseline."]
    grown = regression.memory_regressions(changes)
    parts.append(f"{len(changes)} models compared: {len(grown)} memory regression(s).")
    lines = []
    for c in changes:
        cells = [c.row.model, c.row.device, c.row.dtype]
        for what in ("kept", "peak"):
            then, now = c.base.memory_of("manual", what), c.row.memory_of("manual", what)
            text = f"{fmt_bytes(then)} → {fmt_bytes(now)}"
            if then is not None and now is not None and now != then:
                text += f" ({now - then:+d} B)"
            cells.append(f"**{text}**" if what in c.grew else text + (" (not gated)" if what == "peak" and not peak
                                                                        and now != then else ""))
        cells.append("**memory regression**" if c.grew else "no growth")
        lines.append(cells)
    return parts + ["", markdown(["model", "device", "dtype", "kept (manual) then → now", "peak (manual) then → now",
                                  "verdict"], lines)]


@dataclasses.dataclass(frozen=True)
class Gate:
    """What a run flagged against its baseline: slower rows, and rows that keep or peak higher."""

    slower: list[regression.Comparison]
    memory: list[regression.MemoryChange]

    def __bool__(self) -> bool:
        return bool(self.slower or self.memory)


def report(run: Mapping, out: Path, baseline: Mapping | None = None, threshold_pct: float = rules.DEFAULT_THRESHOLD,
           plots: bool = True, memory_threshold_pct: float = rules.DEFAULT_MEMORY_THRESHOLD) -> tuple[str, Gate]:
    """The Markdown report of ``run`` (the plot written into ``out``) and what it flagged."""
    all_rows = rows(run)
    grid = [r for r in all_rows if r.table == GRID]
    method = next((r.memory.get("peak_method") for r in grid if r.memory and r.memory.get("peak_method")), None)
    parts = ["# gradcheck-suite benchmarks", "", *header(run), "",
             "How to read it: manual and autograd were timed in alternating blocks in the same rounds, so the "
             "**manual/autograd** ratio (median over the rounds, with its bootstrap confidence interval) holds "
             "on a busy machine where absolute times do not. Above 1 the hand-written backward is slower. "
             "Times are per call, the median over the rounds. \"faster\" names a side only "
             "when the check passed and the interval excludes 1. **kept**: the bytes held between the forward and "
             "the backward beyond the inputs (manual: its cache and what it saves on ctx; autograd: its saved "
             "tensors). **peak**: the most memory forward plus backward allocated at once, above the inputs"
             + (f" ({method})." if method else ".")]

    places = list(dict.fromkeys(_place(r) for r in grid))
    parts += ["", "## Models at their benchmark size", ""]
    if not grid:
        parts.append("No model benchmarks in this run.")
    for place in places:
        if len(places) > 1:
            parts += [f"### {place}", ""]
        elif place:
            parts += [f"On {place}.", ""]
        parts += [model_table([r for r in grid if _place(r) == place]), ""]
    said = memory_lines(grid)
    if said:
        parts += ["Memory:", "", *said, ""]
    notes: list[str] = []
    failing = [r for r in grid if r.verdict != PASS]
    checks = []
    for r in {r.model: r for r in failing}.values():
        how = f"; reproduce: `{r.check['reproduce']}`" if r.check.get("reproduce") else ""
        checks.append(f"- {r.model}: check {r.verdict} ({r.check.get('source', '?')}): its times are shown, "
                      f"but it is never called faster{how}.")
    short = [r for r in grid if r.verdict == PASS and "not check's verdict" in r.check.get("source", "")]
    for r in {r.model: r for r in short}.values():
        checks.append(f"- {r.model}: check pass ({r.check['source']}): fewer cases than `gradcheck-suite check` "
                      "runs, so a wrong backward may still pass.")
    if checks:
        parts += checks + [""]

    if grid:
        parts += ["## Details", "",
                  "The spread of every time (median and interquartile range over the rounds), the rounds and the "
                  "visits they came in, and the FLOP rate as a percentage of a matmul of the model's shape and dtype "
                  "timed in the same rounds (FLOPs from the record's `flops`, or counted from the ops it runs).", "",
                  details_table(grid, notes)]
        if notes:
            parts += ["", "Notes:", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)]
    sharded = [r for r in grid if r.world_size is not None]
    if sharded:
        parts += ["", "## Sharded records, per rank", "", SHARDED_TEXT, "", sharded_table(sharded)]
    while parts and parts[-1] == "":
        parts.pop()

    series = sweep_series(all_rows)
    parts += ["", "## Size sweep (forward+backward)", ""]
    if series:
        parts += [sweep_table(series), ""]
        if not plots:
            parts.append("plots skipped")
        else:
            try:
                from .plots import plot_sweep

                path = plot_sweep(series, out)
                parts.append(f"Plot: [{path.name}]({path.name})")
            except ImportError:
                parts.append("plots skipped: matplotlib not installed (pip install 'gradcheck-suite[plot]')")
    else:
        parts.append("No size sweep in this run.")

    gate = Gate([], [])
    if baseline is not None:
        base_rows = rows(baseline)
        comparisons = regression.compare(all_rows, base_rows, threshold_pct, same=regression.same_machine(run, baseline),
                                      plan=gate_plan(run, 0))
        peak = regression.same_build(run, baseline)
        changes = regression.memory_changes(all_rows, base_rows, memory_threshold_pct, peak=peak)
        gate = Gate(regression.regressions(comparisons), regression.memory_regressions(changes))
        parts += baseline_section(run, baseline, comparisons, threshold_pct)
        parts += memory_section(changes, memory_threshold_pct, peak)
    return "\n".join(parts) + "\n", gate
