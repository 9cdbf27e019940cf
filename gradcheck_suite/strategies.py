"""Hypothesis strategies that turn a model record into concrete cases, and the profiles.

Model files never import hypothesis: the ranges in their ``Dim`` records are all these
strategies need.  Every factory takes keyword arguments with documented defaults and
checks them up front.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from hypothesis import HealthCheck, Verbosity, settings
from hypothesis import strategies as st

from .case import Case
from .spec import Model

#: Value scales drawn log-uniformly from this range, ends included.
SCALE_RANGE = (1e-3, 1e3)
#: Sizes that catch block-size and power-of-two assumptions, drawn often when in range.
SPECIAL_SIZES = (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33)

PROFILES = {
    # the default for `pytest` and `gradcheck-suite check`: the same cases every run
    "quick": dict(max_examples=20, derandomize=True),
    # nightly: many more cases, new ones each run, failures replayed from the database
    "nightly": dict(max_examples=400, derandomize=False),
}


def sizes(low: int, high: int):
    """Whole numbers in [low, high], with the edges and awkward sizes drawn often."""
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high, got low={low}, high={high}")
    special = sorted({low, high, *(s for s in SPECIAL_SIZES if low <= s <= high)})
    return st.one_of(st.sampled_from(special), st.integers(low, high))


def dims(model: Model, *, fixed: Mapping[str, int] | None = None):
    """Concrete dims for ``model``: each from its range, or as given in ``fixed``."""
    fixed = dict(fixed or {})
    unknown = sorted(set(fixed) - set(model.dims))
    if unknown:
        raise ValueError(f"{model.name} has no dimension {', '.join(unknown)}; it has {', '.join(model.dims)}")
    order = list(model.dims)
    return st.fixed_dictionaries({
        name: st.just(fixed[name]) if name in fixed else sizes(dim.low, dim.high)
        for name, dim in model.dims.items()
    }).map(lambda drawn: {name: drawn[name] for name in order})


def scales(*, low: float = SCALE_RANGE[0], high: float = SCALE_RANGE[1]):
    """Value scales, log-uniform on [low, high] (default 1e-3 to 1e3); shrinks toward 1."""
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high for value scales, got low={low}, high={high}")
    ends = [s for s in (1.0, low, high) if low <= s <= high]
    return st.one_of(st.sampled_from(ends),
                     st.floats(math.log10(low), math.log10(high)).map(lambda e: float(10.0 ** e)))


def seeds():
    return st.integers(0, 2**31 - 1)


def awkward(low: int, high: int) -> int:
    """The largest size in [low, high] that is neither a power of two nor a multiple of 8
    (where block-size assumptions break), or ``high`` where there is none."""
    for s in range(high, low - 1, -1):
        if s > 2 and s & (s - 1) and s % 8:
            return s
    return high


def corners(model: Model, *, fixed_dims: Mapping[str, int] | None = None, seed: int | None = None,
            scale: float | None = None, scale_range: tuple[float, float] = SCALE_RANGE) -> list[tuple[dict, int, float]]:
    """The covering schedule that runs before any drawn case, as ``(dims, seed, scale)``:
    every dim at its low end (size 1 where the range starts there), at its high end, and at
    an awkward size, each at both ends of the value scale, then the awkward sizes at scale
    1 and the sizes mixed; what is given stays fixed, and repeats are dropped."""
    fixed = dict(fixed_dims or {})
    low, high = scale_range
    free = [k for k in model.dims if k not in fixed]
    picks = {
        "low": {k: model.dims[k].low for k in free},
        "high": {k: model.dims[k].high for k in free},
        "awkward": {k: awkward(model.dims[k].low, model.dims[k].high) for k in free},
        "mixed": {k: (model.dims[k].low, model.dims[k].high)[i % 2] for i, k in enumerate(free)},
    }
    plan = [("low", low), ("high", high), ("awkward", high), ("low", high), ("high", low), ("awkward", low),
            ("awkward", 1.0), ("mixed", 1.0)]
    out, seen = [], set()
    for i, (which, sc) in enumerate(plan):
        dims = {k: fixed[k] if k in fixed else picks[which][k] for k in model.dims}
        case = (dims, i if seed is None else seed, sc if scale is None else scale)
        key = (tuple(dims.values()), case[2])
        if key not in seen:
            seen.add(key)
            out.append(case)
    return out


def database_for(base, model: str, dtype: str, device: str):
    """Where the nightly profile keeps one model's failures: its own folder under
    hypothesis's directory database, so that a passing model never replays, and deletes,
    another model's failure.  A database of another kind is used as it is."""
    from hypothesis.database import DirectoryBasedExampleDatabase

    root = getattr(base, "path", None)
    if not isinstance(base, DirectoryBasedExampleDatabase) or root is None:
        return base
    return DirectoryBasedExampleDatabase(Path(root) / "gradcheck-suite" / f"{model}-{dtype}-{device}")


def cases(model: Model, *, dtype: str | None = None, device: str = "cpu",
          fixed_dims: Mapping[str, int] | None = None, seed: int | None = None,
          scale: float | None = None, scale_range: tuple[float, float] = SCALE_RANGE):
    """Cases of ``model``: dims, seed and value scale drawn unless given.

    ``dtype`` defaults to the model's own.
    """
    return st.builds(
        Case,
        model=st.just(model.name),
        dims=dims(model, fixed=fixed_dims),
        dtype=st.just(dtype or model.dtype),
        device=st.just(device),
        seed=st.just(seed) if seed is not None else seeds(),
        scale=st.just(scale) if scale is not None else scales(low=scale_range[0], high=scale_range[1]),
    )


def profile_settings(profile: str = "quick", *, examples: int | None = None) -> settings:
    """Hypothesis settings for a profile (``quick`` or ``nightly``), ``examples`` overriding its count."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    if examples is not None and examples < 1:
        raise ValueError(f"examples={examples} must be at least 1")
    chosen = dict(PROFILES[profile])
    if examples is not None:
        chosen["max_examples"] = examples
    return settings(
        **chosen,
        deadline=None,
        database=None if chosen["derandomize"] else settings.default.database,
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
