"""Medians, spreads and bootstrap confidence intervals of paired timings.

A paired sample is one round of interleaved blocks: manual and autograd timed back to
back in the same process, so that whatever slowed the machine during that round
slowed both.  The figure that survives a shared runner is the ratio
manual/autograd over each full rotation of the order of the sides; its median, with a
bootstrap interval, is what the report shows and what the regression gate compares.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

#: Confidence of the intervals in the report and the gate.
CONFIDENCE = 0.95
#: Bootstrap resamples; fixed seed, so the same samples give the same interval.
RESAMPLES = 2000
_SEED = 20240229


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


def pooled(samples: Sequence[float] | Groups) -> np.ndarray:
    return np.concatenate(_groups(samples))


def median_interval(samples: Sequence[float] | Groups, confidence: float = CONFIDENCE,
                    resamples: int = RESAMPLES) -> Interval:
    """The median of the samples (a list, or a list of groups) and its bootstrap interval."""
    groups = _groups(samples)
    rng = np.random.default_rng(_SEED)
    low, high = _bounds(_resampled_medians(groups, rng, resamples), confidence)
    return Interval(float(np.median(np.concatenate(groups))), low, high)


def change_interval(current: Sequence[float] | Groups, baseline: Sequence[float] | Groups,
                    confidence: float = CONFIDENCE, resamples: int = RESAMPLES) -> Interval:
    """median(current) / median(baseline), with a bootstrap interval that resamples both
    runs independently (they are separate runs, so their rounds are not paired)."""
    cur, base = _groups(current), _groups(baseline)
    # at least 20 resamples in each tail, so that a 99% interval is not one sample's luck
    resamples = max(resamples, math.ceil(40 / (1 - confidence)))
    rng = np.random.default_rng(_SEED)
    estimates = _resampled_medians(cur, rng, resamples) / _resampled_medians(base, rng, resamples)
    low, high = _bounds(estimates, confidence)
    return Interval(float(np.median(np.concatenate(cur)) / np.median(np.concatenate(base))), low, high)
