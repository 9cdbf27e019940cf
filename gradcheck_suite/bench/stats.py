"""Medians, spreads and bootstrap confidence intervals of paired timings.

A paired sample is one round of interleaved blocks: manual and autograd timed back to
back in the same process, so that whatever slowed the machine during that round
slowed both.  The figure that survives a shared runner is the ratio
manual/autograd over each full rotation of the order of the sides; its median, with a
bootstrap interval, is what the report shows and what the regression gate compares.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

from ..verdict import rules

@dataclasses.dataclass(frozen=True)
class Summary:
    """Median and interquartile range of one series of samples."""

    median: float
    q1: float
    q3: float
    n: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_json(self) -> dict:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "n": self.n}

    @classmethod
    def from_json(cls, d: dict) -> Summary:
        return cls(float(d["median"]), float(d["q1"]), float(d["q3"]), int(d["n"]))


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""

    value: float
    low: float
    high: float

    def to_json(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}

    @classmethod
    def from_json(cls, d: dict) -> Interval:
        return cls(float(d["value"]), float(d["low"]), float(d["high"]))


def summary(samples: Sequence[float]) -> Summary:
    if len(samples) == 0:
        raise ValueError("no samples to summarise")
    q1, med, q3 = np.percentile(np.asarray(samples, dtype=float), [25, 50, 75])
    return Summary(float(med), float(q1), float(q3), len(samples))


def _bounds(estimates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


Groups = Sequence[Sequence[float]]


def _groups(samples: Sequence[float] | Groups) -> list[np.ndarray]:
    """A flat list is one group; empty groups are dropped."""
    if len(samples) and not isinstance(samples[0], (list, tuple, np.ndarray)):
        samples = [samples]
    groups = [np.asarray(g, dtype=float) for g in samples if len(g)]
    if not groups:
        raise ValueError("no samples to estimate from")
    return groups


def _resampled_medians(groups: list[np.ndarray], rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Medians of a two-stage bootstrap: draw the groups (visits) with replacement, then
    within each drawn group its rounds with replacement.  With one group it is the plain
    bootstrap; with several, drift between visits widens the interval as it should."""
    size = max(len(g) for g in groups)
    padded = np.full((len(groups), size), np.nan)
    for i, g in enumerate(groups):
        padded[i, :len(g)] = g
    lengths = np.array([len(g) for g in groups])
    chosen = rng.integers(0, len(groups), size=(resamples, len(groups))) if len(groups) > 1 else \
        np.zeros((resamples, 1), dtype=int)
    within = (rng.random((resamples, chosen.shape[1], size)) * lengths[chosen][..., None]).astype(int)
    values = padded[chosen[..., None], within]
    return np.median(values.reshape(resamples, -1), axis=1)


def _or_rules(confidence: float | None, resamples: int | None) -> tuple[float, int]:
    return (rules.CONFIDENCE if confidence is None else confidence,
            rules.RESAMPLES if resamples is None else resamples)


def pooled(samples: Sequence[float] | Groups) -> np.ndarray:
    return np.concatenate(_groups(samples))


def median_interval(samples: Sequence[float] | Groups, confidence: float | None = None,
                    resamples: int | None = None) -> Interval:
    """The median of the samples (a list, or a list of groups) and its bootstrap interval
    (``rules.CONFIDENCE`` and ``rules.RESAMPLES`` unless given, read at the call)."""
    confidence, resamples = _or_rules(confidence, resamples)
    groups = _groups(samples)
    rng = np.random.default_rng(rules.BOOTSTRAP_SEED)
    low, high = _bounds(_resampled_medians(groups, rng, resamples), confidence)
    return Interval(float(np.median(np.concatenate(groups))), low, high)


def change_interval(current: Sequence[float] | Groups, baseline: Sequence[float] | Groups,
                    confidence: float | None = None, resamples: int | None = None) -> Interval:
    """median(current) / median(baseline), with a bootstrap interval that resamples both
    runs independently (they are separate runs, so their rounds are not paired)."""
    confidence, resamples = _or_rules(confidence, resamples)
    cur, base = _groups(current), _groups(baseline)
    # at least TAIL_RESAMPLES in each tail, so that a 99% interval is not one sample's luck
    resamples = max(resamples, math.ceil(2 * rules.TAIL_RESAMPLES / (1 - confidence)))
    rng = np.random.default_rng(rules.BOOTSTRAP_SEED)
    estimates = _resampled_medians(cur, rng, resamples) / _resampled_medians(base, rng, resamples)
    low, high = _bounds(estimates, confidence)
    return Interval(float(np.median(np.concatenate(cur)) / np.median(np.concatenate(base))), low, high)


# ------------------------------------------------------------------ the gate's interval
#
# The gate compares two runs visit by visit.  What varies most between visits is the
# machine (another process on the other core), so a visit, not a round, is the unit of
# evidence: a run of six visits has six observations, however many rounds each holds.
# A bootstrap over six visits treats their spread as known and never leaves their range:
# with no change it excluded 1 from its 99% interval in 7 of 400 simulated comparisons,
# where 4 are due, and the gate's per-row tails are far smaller than 1%.  The gate's
# interval is instead the exact, distribution-free one of the Mann-Whitney test: valid at
# any level for any distribution of the visits (a stalled visit is one rank, not a
# weight), as long as the visits of the two runs are draws of one distribution when
# nothing changed, and infinite when there are too few visits for that level.


def visit_levels(samples: Sequence[float] | Groups) -> np.ndarray:
    """The log of each visit's median: one observation per visit (a flat list is one visit)."""
    return np.log(np.array([np.median(g) for g in _groups(samples)]))


def rank_sum_counts(n: int, m: int) -> list[int]:
    """How many of the C(n+m, n) equally likely orderings of two samples of sizes n and m
    give each value u = 0 .. n*m of the Mann-Whitney statistic (the pairs where the first
    sample's value is the smaller)."""
    # counts[j][u] for the first i values against j of the second, built up over i
    counts = [[1] for _ in range(m + 1)]           # i = 0: u = 0 only
    for i in range(1, n + 1):
        row = [[1]]                                # j = 0: u = 0 only
        for j in range(1, m + 1):
            # the largest of the i + j values is the first sample's (it precedes j) or the second's
            a, b = counts[j], row[j - 1]
            size = i * j + 1
            merged = [0] * size
            for u, c in enumerate(a):
                merged[u + j] += c
            for u, c in enumerate(b):
                merged[u] += c
            row.append(merged)
        counts = row
    return counts[m]


@functools.lru_cache(maxsize=256)
def rank_sum_depth(n: int, m: int, tail: float) -> int:
    """The largest k such that P(U <= k - 1) <= tail under no change: the interval's ends are
    the k-th smallest and k-th largest of the n*m pairwise differences.  0: no interval at
    that level exists with so few visits."""
    counts = rank_sum_counts(n, m)
    total = math.comb(n + m, n)
    below, k = 0, 0
    for c in counts:
        if (below + c) / total > tail:
            break
        below += c
        k += 1
    return k


def shift_interval(current: Sequence[float] | Groups, baseline: Sequence[float] | Groups,
                   tail: float) -> Interval:
    """Ratio now / ratio then from the visits of both runs: the Hodges-Lehmann estimate
    (the median of the pairwise ratios of visit medians) with the exact interval whose two
    tails each hold at most ``tail`` when nothing changed.  (0, inf) when the visits are
    too few for that level."""
    now, then = visit_levels(current), visit_levels(baseline)
    diffs = np.sort((now[:, None] - then[None, :]).ravel())
    value = float(np.exp(np.median(diffs)))
    k = rank_sum_depth(len(now), len(then), tail)
    if k == 0:
        return Interval(value, 0.0, math.inf)
    return Interval(value, float(np.exp(diffs[k - 1])), float(np.exp(diffs[len(diffs) - k])))
