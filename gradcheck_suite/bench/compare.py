"""The regression gate: this run against a baseline run, row by row.

What is compared is the manual/autograd ratio, not an absolute time.  Both sides of a
ratio were timed in the same rounds, so a busy or slower machine moves it far less than
it moves either time, and it carries across machines.  For each row present in both
runs, the change is median ratio now / median ratio then, with a bootstrap interval
that resamples the rounds of both runs.  A row is flagged only when that whole interval
lies beyond the threshold: a lone median that happens to land past it is not enough.

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
from .rows import GRID, Row, machine

DEFAULT_THRESHOLD = 10.0
SLOWER, FASTER, SAME, UNCLEAR = "slower", "faster", "within threshold", "inconclusive"
#: On the same machine: the ratio moved one way and the manual time the other.
CONTRADICTED = "contradicted by the times"


def threshold(text: str) -> float:
    """--threshold PCT: a finite number, at least 0 (ValueError with the reason if not)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--threshold {text!r} is not a number (a percentage, e.g. 10)") from None
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"--threshold {text!r} must be a finite percentage")
    if value < 0:
        raise ValueError(f"--threshold {text!r} must be at least 0")
    return value


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
            kinds: tuple[str, ...] = (GRID,), same: bool = False) -> list[Comparison]:
    """Every row of ``kinds`` present in both runs, matched by model, device, dtype and phase.

    ``same``: both runs come from the same machine and setup.  Then the machine's speed
    against the baseline is the median over rows of autograd's time now / then, and a row
    whose ratio says slower while its manual time grew less than that speed explains (or
    faster while it grew more) is contradicted, not a change of the code.
    """
    base = {r.key: r for r in baseline if r.kind in kinds}
    pairs = [(r, base[r.key]) for r in current if r.kind in kinds and r.key in base]
    speed = machine_speed(pairs)
    out = []
    for r, b in pairs:
        change = stats.change_interval(r.ratios, b.ratios)
        status = judge(change, threshold_pct)
        manual = r.manual.median / b.manual.median
        if same and speed and ((status == SLOWER and manual < speed) or (status == FASTER and manual > speed)):
            status = CONTRADICTED
        out.append(Comparison(r, b, change, status))
    return out


def machine_speed(pairs: Iterable[tuple[Row, Row]]) -> float | None:
    """Median over rows of autograd's time now / then: how the machine ran against the baseline."""
    times = [r.autograd.median / b.autograd.median for r, b in pairs if b.autograd.median > 0]
    return statistics.median(times) if times else None


def same_machine(run: Mapping, baseline: Mapping) -> bool:
    """Whether both runs name the same machine and setup (host, CPU, cores, GPU, torch, threads)."""
    return machine(run) == machine(baseline)


def regressions(comparisons: Iterable[Comparison]) -> list[Comparison]:
    """The rows flagged slower, worst first."""
    return sorted((c for c in comparisons if c.status == SLOWER), key=lambda c: -c.change.low)
