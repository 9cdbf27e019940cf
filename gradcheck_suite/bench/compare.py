"""The regression gate: this run against a baseline run, row by row.

What is compared is the manual/autograd ratio, not an absolute time.  Both sides of a
ratio were timed in the same rounds, so a busy or slower machine moves it far less than
it moves either time, and it carries across machines.  For each row present in both
runs, the change is median ratio now / median ratio then, with a bootstrap interval
that resamples the rounds of both runs.  A row is flagged only when that whole interval
lies beyond the threshold: a lone median that happens to land past it is not enough.

The sequential rule.  With a baseline, ``--quick`` gives a row whose interval still
straddles the threshold more visits, :data:`VISITS_PER_LOOK` at a time, looking again
after each batch, up to :data:`EXTRA_LOOKS` times (within :data:`EXTRA_BUDGET` seconds
for all rows).  Looking repeatedly would inflate false flags if every look used a 95%
interval, so the error rate ``ALPHA`` (5%) is spent over the looks (Bonferroni over
looks): the first look, after the regular visits, judges with a ``1 - ALPHA/2``
interval, and each of the ``L`` extra looks with ``1 - ALPHA/(2L)``.  The chance that any look flags a row that did not
change is then at most ``ALPHA`` (as far as the bootstrap interval holds its level).
A row still undecided when its looks or the budget run out is reported inconclusive.

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
from .rows import GRID, Row, machine, paired_ratios
from .timing import FORWARD_BACKWARD

#: A 10% slowdown is flagged once the interval of the change is narrower than ±5 points.
DEFAULT_THRESHOLD = 5.0
#: Memory: growth beyond this percentage is a regression (0: any growth).
DEFAULT_MEMORY_THRESHOLD = 0.0
#: A peak partly measured by tracemalloc (numpy models) moves by a few hundred bytes of
#: Python objects from run to run: growth within this fraction is not a regression.
APPROXIMATE_SLACK = 0.01
#: The error rate of the time gate, split over the looks of the sequential rule.
ALPHA = 0.05
#: --quick with a baseline: a row still undecided gets VISITS_PER_LOOK more visits before
#: each extra look, up to EXTRA_LOOKS looks; all extra visits together get EXTRA_BUDGET
#: seconds.  The penalty is per look, not per visit, and what varies most is the machine
#: between visits (another process on the other core), so a look waits for several.
EXTRA_LOOKS = 3
VISITS_PER_LOOK = 3
EXTRA_VISITS = EXTRA_LOOKS * VISITS_PER_LOOK
EXTRA_BUDGET = 10.0
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


def look_confidence(look: int = 0, looks: int = 0) -> float:
    """The confidence of one look of the sequential rule.  Look 0 is the one after the
    run's regular visits, looks 1 to ``looks`` follow batches of extra visits.  Without
    extra looks the one look has all of ``ALPHA``; with them, look 0 has half of it and
    each extra look an equal share of the other half."""
    if looks <= 0:
        return 1 - ALPHA
    return 1 - (ALPHA / 2 if look <= 0 else ALPHA / (2 * looks))


def look_index(visits: int, regular: int, per_look: int = VISITS_PER_LOOK) -> int:
    """Which look a row with ``visits`` visits is at: 0 after its regular visits, then one
    more for every batch of extra visits begun."""
    return -(-max(0, visits - regular) // max(1, per_look))


def change(current, baseline, look: int = 0, looks: int = 0) -> stats.Interval:
    """Ratio now / ratio then, with its interval at the confidence of that look."""
    return stats.change_interval(current, baseline, confidence=look_confidence(look, looks))


def look(visits, base: Row, threshold_pct: float, index: int = 0, looks: int = 0) -> str:
    """One look of the sequential rule during a run: the status of a row from the samples
    of its visits so far (``[{side: [seconds per round]}]``) against its baseline row."""
    ratios = [paired_ratios(v) for v in visits]
    if not any(ratios):
        return UNCLEAR
    return judge(change(ratios, base.ratios, index, looks), threshold_pct)


@dataclasses.dataclass(frozen=True)
class Comparison:
    row: Row
    base: Row
    change: stats.Interval   # ratio now / ratio then
    status: str

    @property
    def percent(self) -> float:
        return 100.0 * (self.change.value - 1)


def judge(change: stats.Interval, threshold_pct: float) -> str:
    """slower / faster only when the whole interval lies beyond the threshold."""
    up, down = 1 + threshold_pct / 100, 1 / (1 + threshold_pct / 100)
    if change.low > up:
        return SLOWER
    if change.high < down:
        return FASTER
    if change.low >= down and change.high <= up:
        return SAME
    return UNCLEAR


def compare(current: Iterable[Row], baseline: Iterable[Row], threshold_pct: float = DEFAULT_THRESHOLD,
            kinds: tuple[str, ...] = (GRID,), same: bool = False, visits: int = 0, looks: int = 0,
            per_look: int = VISITS_PER_LOOK) -> list[Comparison]:
    """Every row of ``kinds`` present in both runs, matched by model, device, dtype and phase.

    ``same``: both runs come from the same machine and setup.  Then the machine's speed
    against the baseline is the median over rows of autograd's time now / then, and a row
    whose ratio says slower while its manual time grew less than that speed explains (or
    faster while it grew more) is contradicted, not a change of the code.

    ``visits``, ``looks`` and ``per_look``: the run's regular visits, the most extra looks
    its sequential rule could take and the visits before each; a row is judged at the
    confidence of the look its visits reached, as the run decided it.
    """
    base = {r.key: r for r in baseline if r.kind in kinds}
    pairs = [(r, base[r.key]) for r in current if r.kind in kinds and r.key in base]
    speed = machine_speed(pairs)
    out = []
    for r, b in pairs:
        interval = change(r.ratios, b.ratios, look_index(len(r.visits), visits, per_look) if looks else 0, looks)
        status = judge(interval, threshold_pct)
        manual = r.manual.median / b.manual.median
        if same and speed and ((status == SLOWER and manual < speed) or (status == FASTER and manual > speed)):
            status = CONTRADICTED
        out.append(Comparison(r, b, interval, status))
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
                   threshold_pct: float = DEFAULT_MEMORY_THRESHOLD, peak: bool = True) -> list[MemoryChange]:
    """Rows measured in both runs (forward+backward rows of the grid: the figures are the
    model's, the same for both phases), with the figures that grew beyond the threshold.

    ``peak``: also gate the peak.  Kept bytes are the sizes of the tensors the code keeps,
    the same on any machine; the peak also counts what torch's kernels allocate for
    themselves, which another torch or another CPU may do differently."""
    base = {r.key: r for r in baseline if r.kind == GRID and r.has_memory}
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
            slack = APPROXIMATE_SLACK if what == "peak" and (r.memory or {}).get("approximate_peak") else 0.0
            if now > then * (1 + threshold_pct / 100 + slack):
                grew.append(what)
        out.append(MemoryChange(r, b, tuple(grew)))
    return out


def memory_regressions(changes: Iterable[MemoryChange]) -> list[MemoryChange]:
    return [c for c in changes if c.grew]
