"""The regression gate: this run against a baseline run, row by row.

What is compared is the manual/autograd ratio, not an absolute time.  Both sides of a
ratio were timed in the same rounds, so a busy or slower machine moves it far less than
it moves either time, and it carries across machines.  For each row present in both
runs, the change is ratio now / ratio then, with an interval from the visits of both
runs.  A row is flagged only when that whole interval lies beyond the threshold: a lone
estimate that happens to land past it is not enough.

The gate's interval (:func:`~gradcheck_suite.bench.stats.shift_interval`) is built from
visits, not rounds: what varies most between visits is the machine, so a visit is one
observation.  It is the exact Mann-Whitney interval of the shift between the two runs'
visit medians: valid at any level whatever the visits' distribution (as long as, with
nothing changed, the visits of both runs are draws of one distribution), and infinite
when there are too few visits for the level asked.

Error over the whole report.  A CI gate judges many rows on every pull request; a 5% error
per row fails a same-code run of 18 rows far more often than 5% of the time.  So the
report-wide rate ``rules.FALSE_FLAG_RATE`` is split (Bonferroni) over the ``rows`` compared
and over the looks that may flag: each tail of each such look gets
``rules.FALSE_FLAG_RATE / (rows * looks)``.  The chance that a run whose code did not change
flags any row slower is then at most ``rules.FALSE_FLAG_RATE``, and the same for faster.  (Holm's
step-down would pass or fail exactly the same runs: its first step is this split applied to
the strongest row, and once that row is flagged the run fails whatever the others say.)

The sequential rule.  With a baseline, a row whose interval still straddles the threshold
gets more visits, ``rules.VISITS_PER_LOOK`` at a time, looking again after each batch, up to
``rules.EXTRA_LOOKS`` times (within ``rules.EXTRA_BUDGET`` seconds for all rows).  No look
flags a row before it has ``rules.MIN_VISITS`` visits in this run, nor while its interval is
wider than ``rules.MAX_SPREAD``: a wide interval earns more visits, never a verdict.  Looks
before ``rules.MIN_VISITS`` may only say "within threshold", so they spend none of the
error rate.  A row still undecided when its looks or the budget run out is inconclusive.

Memory is deterministic, so its gate is exact: a row whose manual kept or peak bytes
grew by more than the memory threshold (0%: any growth) against the baseline is a
memory regression.

On the same machine and setup, the report also shows the change of the absolute manual
time.  It never flags a row by itself, but a ratio that says slower while the manual time
grew less than the whole machine slowed (or the reverse) is reported as contradicted, not
as a change: on a shared virtual machine the host's speed can change between runs, and
the ratios of microsecond-scale rows, mostly call overhead, move with it.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Mapping

from . import stats
from ..verdict import rules
from .rows import GRID, Row, machine, paired_ratios
from .timing import FORWARD_BACKWARD

SLOWER, FASTER, SAME, UNCLEAR = "slower", "faster", "within threshold", "inconclusive"
#: On the same machine: the ratio moved one way and the manual time the other.
CONTRADICTED = "contradicted by the times"


def threshold(text: str, option: str = "--threshold") -> float:
    """--threshold PCT: a finite number, at least 0 (ValueError with the reason if not)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option} {text!r} is not a number (a percentage, e.g. 10)") from None
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{option} {text!r} must be a finite percentage")
    if value < 0:
        raise ValueError(f"{option} {text!r} must be at least 0")
    return value


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run's gate judges with: the ``rows`` it compares, its ``visits`` (regular, to
    every row), the most extra ``looks`` and the visits before each (``per_look``)."""

    rows: int = 1
    visits: int = 0
    looks: int = 0
    per_look: int = rules.VISITS_PER_LOOK

    def visits_at(self, look: int) -> int:
        """The visits a row has at a look: look 0 after the regular ones, then a batch more each."""
        return self.visits + look * self.per_look

    @property
    def flagging_looks(self) -> int:
        """The looks at which a row may be flagged: those with at least rules.MIN_VISITS visits."""
        return sum(self.visits_at(k) >= rules.MIN_VISITS for k in range(self.looks + 1))

    @property
    def tail(self) -> float:
        """Each tail's share of the report-wide rate: one per row and flagging look."""
        return rules.FALSE_FLAG_RATE / (max(1, self.rows) * max(1, self.flagging_looks))


def change(current, baseline, plan: Plan = Plan()) -> stats.Interval:
    """Ratio now / ratio then from the visits of both runs, with the interval of the plan's
    per-row, per-look share of the report-wide rate."""
    return stats.shift_interval(current, baseline, plan.tail)


def look(visits, base: Row, threshold_pct: float, plan: Plan = Plan()) -> str:
    """One look of the sequential rule during a run: the status of a row from the samples
    of its visits so far (``[{side: [seconds per round]}]``) against its baseline row."""
    ratios = [r for r in (paired_ratios(v) for v in visits) if r]
    if not ratios:
        return UNCLEAR
    return judge(change(ratios, base.ratios, plan), threshold_pct, len(ratios))


@dataclasses.dataclass(frozen=True)
class Comparison:
    row: Row
    base: Row
    change: stats.Interval   # ratio now / ratio then
    status: str
    visits: int = 0          # the visits of this run it was judged on

    @property
    def percent(self) -> float:
        return 100.0 * (self.change.value - 1)


def judge(change: stats.Interval, threshold_pct: float, visits: int | None = None) -> str:
    """slower / faster only when the whole interval lies beyond the threshold, the row has
    at least rules.MIN_VISITS ``visits`` in this run (None: not counted) and the interval spans
    at most rules.MAX_SPREAD; within threshold when it lies wholly inside."""
    up, down = 1 + threshold_pct / 100, 1 / (1 + threshold_pct / 100)
    if change.low >= down and change.high <= up:
        return SAME
    if not flaggable(change, visits):
        return UNCLEAR
    if change.low > up:
        return SLOWER
    if change.high < down:
        return FASTER
    return UNCLEAR


def flaggable(change: stats.Interval, visits: int | None = None) -> bool:
    """Whether the interval may carry a slower or faster verdict: enough visits, and narrow enough."""
    if visits is not None and visits < rules.MIN_VISITS:
        return False
    return change.low > 0 and change.high / change.low - 1 <= rules.MAX_SPREAD


def compare(current: Iterable[Row], baseline: Iterable[Row], threshold_pct: float = rules.DEFAULT_THRESHOLD,
            tables: tuple[str, ...] = (GRID,), same: bool = False, plan: Plan | None = None) -> list[Comparison]:
    """Every row of ``tables`` present in both runs, matched by model, device, dtype and phase
    (and a sharded row's world size); a row without an autograd side is left out.

    ``same``: both runs come from the same machine and setup.  Then the machine's speed
    against the baseline is the median over rows of autograd's time now / then, and a row
    whose ratio says slower while its manual time grew less than that speed explains (or
    faster while it grew more) is contradicted, not a change of the code.

    ``plan``: the gate the run decided with (its rows, visits and looks), so that the
    report judges every row at the level the run did; None: one look at the visits there
    are.  The rate is split over at least the rows compared here.
    """
    base = {r.key: r for r in baseline if r.table in tables}
    # a row without an autograd side (n/a) has no ratio to compare; a sharded row's key holds its
    # world size, so it meets only a baseline row of the same world size
    pairs = [(r, base[r.key]) for r in current if r.table in tables and r.key in base and not r.na
             and not base[r.key].na]
    plan = dataclasses.replace(plan or Plan(), rows=max(1, len(pairs), (plan or Plan()).rows))
    speed = machine_speed(pairs)
    out = []
    for r, b in pairs:
        used = r.ratios
        if plan.looks:           # a batch of extra visits cut short by the budget was never looked at
            done = min(plan.looks, max(0, len(used) - plan.visits) // max(1, plan.per_look))
            used = used[:plan.visits_at(done)]
        interval = change(used, b.ratios, plan)
        status = judge(interval, threshold_pct, len(used))
        manual = r.manual.median / b.manual.median
        if same and speed and ((status == SLOWER and manual < speed) or (status == FASTER and manual > speed)):
            status = CONTRADICTED
        out.append(Comparison(r, b, interval, status, len(used)))
    return out


def machine_speed(pairs: Iterable[tuple[Row, Row]]) -> float | None:
    """Median over rows of autograd's time now / then: how the machine ran against the baseline."""
    times = [r.autograd.median / b.autograd.median for r, b in pairs if b.autograd.median > 0]
    return statistics.median(times) if times else None


def same_build(run: Mapping, baseline: Mapping) -> bool:
    """Whether both runs had the same torch, CPU, GPU and threads: what a peak depends on
    beyond the code (the host may differ)."""
    now, then = machine(run), machine(baseline)
    return all(now[k] == then[k] for k in ("cpu", "gpu", "torch", "threads"))


def same_machine(run: Mapping, baseline: Mapping) -> bool:
    """Whether both runs name the same machine and setup (host, CPU, cores, GPU, torch, threads)."""
    return machine(run) == machine(baseline)


def regressions(comparisons: Iterable[Comparison]) -> list[Comparison]:
    """The rows flagged slower, worst first."""
    return sorted((c for c in comparisons if c.status == SLOWER), key=lambda c: -c.change.low)


@dataclasses.dataclass(frozen=True)
class MemoryChange:
    """The manual path's kept and peak bytes now against the baseline's, for one row."""

    row: Row
    base: Row
    grew: tuple[str, ...]     # "kept", "peak": the figures that grew beyond the threshold

    def describe(self, what: str) -> str:
        then, now = self.base.memory_of("manual", what), self.row.memory_of("manual", what)
        return f"{what} {then} → {now} bytes"


def memory_changes(current: Iterable[Row], baseline: Iterable[Row],
                   threshold_pct: float = rules.DEFAULT_MEMORY_THRESHOLD, peak: bool = True) -> list[MemoryChange]:
    """Rows measured in both runs (forward+backward rows of the grid: the figures are the
    model's, the same for both phases), with the figures that grew beyond the threshold.

    ``peak``: also gate the peak.  Kept bytes are the sizes of the tensors the code keeps,
    the same on any machine; the peak also counts what torch's kernels allocate for
    themselves, which another torch or another CPU may do differently."""
    base = {r.key: r for r in baseline if r.table == GRID and r.has_memory}
    out = []
    for r in current:
        b = base.get(r.key)
        if b is None or not r.has_memory or r.phase != FORWARD_BACKWARD:
            continue
        grew = []
        for what in ("kept", "peak") if peak else ("kept",):
            now, then = r.memory_of("manual", what), b.memory_of("manual", what)
            if now is None or then is None:
                continue
            slack = rules.APPROXIMATE_SLACK if what == "peak" and (r.memory or {}).get("approximate_peak") else 0.0
            if now > then * (1 + threshold_pct / 100 + slack):
                grew.append(what)
        out.append(MemoryChange(r, b, tuple(grew)))
    return out


def memory_regressions(changes: Iterable[MemoryChange]) -> list[MemoryChange]:
    return [c for c in changes if c.grew]
