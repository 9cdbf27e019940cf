"""Hypothesis strategies that turn a model record into concrete cases, and the profiles.

Model files never import hypothesis: the ranges in their ``Dim`` records are all these
strategies need.  Every factory takes keyword arguments with documented defaults and
checks them up front.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path

from hypothesis import HealthCheck, Verbosity, assume, settings
from hypothesis import strategies as st

from ..record import dimexpr
from ..check.case import Case
from ..record.spec import Dim, Model
from ..verdict import rules

PROFILES = {
    # the default for `pytest` and `gradcheck-suite check`: the same cases every run; a custom
    # op's torch.library.opcheck only where its record asks (it costs more than the check)
    "quick": dict(max_examples=rules.QUICK_CASES, derandomize=True, opcheck=False),
    # nightly: many more cases, new ones each run, failures replayed from the database;
    # torch.library.opcheck on every custom op whose record does not say opcheck=False; and
    # each case also under torch.compile (check/stages/compiled.py, backend_for)
    "nightly": dict(max_examples=rules.NIGHTLY_CASES, derandomize=False, opcheck=True),
}

#: the entries of a profile that are the harness's own, not hypothesis settings
HARNESS_KEYS = ("opcheck",)


def sizes(low: int, high: int):
    """Whole numbers in [low, high], with the edges and awkward sizes drawn often."""
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high, got low={low}, high={high}")
    special = sorted({low, high, *(s for s in rules.SPECIAL_SIZES if low <= s <= high)})
    return st.one_of(st.sampled_from(special), st.integers(low, high))


def dims(model: Model, *, fixed: Mapping[str, int] | None = None):
    """Concrete dims for ``model``: each from its range, or as given in ``fixed``."""
    return values(model, fixed_dims=fixed).map(lambda drawn: drawn[0])


def values(model: Model, *, fixed_dims: Mapping[str, int] | None = None,
           fixed_hyper: Mapping[str, object] | None = None):
    """``(dims, hyper)`` for ``model``. Bounds that read other dims are drawn after them
    (dependency order); hyperparameters come from their range or choices; the record's
    ``where`` filters what is left.  Anything in ``fixed_dims``/``fixed_hyper`` is kept."""
    fixed_dims, fixed_hyper = dict(fixed_dims or {}), dict(fixed_hyper or {})
    for given, known, what in ((fixed_dims, model.dims, "dimension"), (fixed_hyper, model.hyper, "hyperparameter")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"{model.name} has no {what} {', '.join(unknown)}; it has {', '.join(known) or 'none'}")
    specs = {**model.dims, **model.hyper}
    bounded = {k: v.reads() for k, v in specs.items() if isinstance(v, Dim)}
    order = dimexpr.order(bounded) + [k for k in model.hyper if k not in bounded]
    fixed = {**fixed_dims, **fixed_hyper}

    @st.composite
    def drawn(draw):
        got: dict[str, object] = {}
        for name in order:
            spec = specs[name]
            if name in fixed:
                got[name] = fixed[name]
            elif isinstance(spec, Dim):
                low, high = spec.bounds(got)
                assume(1 <= low <= high)
                got[name] = draw(sizes(low, high))
            else:
                got[name] = draw(st.sampled_from(spec))
        return got

    strategy = drawn()
    if model.where is not None:
        strategy = strategy.filter(lambda v: model.allows(v) is None)
    return strategy.map(lambda v: ({k: v[k] for k in model.dims}, {k: v[k] for k in model.hyper}))


def scales(*, low: float | None = None, high: float | None = None):
    """Value scales, log-uniform on [low, high] (default ``rules.SCALE_RANGE``); shrinks toward 1."""
    low = rules.SCALE_RANGE[0] if low is None else low
    high = rules.SCALE_RANGE[1] if high is None else high
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
        if s > 2 and s & (s - 1) and s % rules.AWKWARD_BLOCK:
            return s
    return high


def corners(model: Model, *, fixed_dims: Mapping[str, int] | None = None,
            fixed_hyper: Mapping[str, object] | None = None, seed: int | None = None,
            scale: float | None = None, scale_range: tuple[float, float] | None = None) -> list[tuple]:
    """The covering schedule that runs before any drawn case, as ``(dims, hyper, seed, scale)``.

    First every dim at its low end (size 1 where the range starts there), at its high end,
    and at an awkward size, each at both ends of the value scale, and the awkward sizes at
    scale 1.  There equal-ranged dims are equal, so then come cases where the dims differ,
    at scale 1: each dim at its low end with every other at its high end (one dim at 1 with
    the others large), then a covering array of strength 2 over {low, high, awkward}: every
    two free dims or hyperparameters meet at every pair of their levels in some case, so two
    equal-ranged dims are made unequal both ways.  Bounds that read other dims are resolved
    in dependency order, hyperparameters take their first or last choice (or range end),
    corners that break the record's ``where`` are left out, what is given stays fixed, and
    repeats are dropped."""
    fixed = {**(fixed_dims or {}), **(fixed_hyper or {})}
    low_scale, high_scale = scale_range or model.scale_range or rules.SCALE_RANGE
    specs = {**model.dims, **model.hyper}
    bounded = {k: v.reads() for k, v in specs.items() if isinstance(v, Dim)}
    order = dimexpr.order(bounded) + [k for k in model.hyper if k not in bounded]
    free = [k for k in order if k not in fixed]
    levels = {k: _levels(specs[k]) for k in free}
    varied = [k for k in free if len(levels[k]) > 1]

    def resolve(row: Mapping[str, str]) -> dict[str, object] | None:
        """The values of a row of levels, or None where a bound cannot be met or ``where`` refuses."""
        got: dict[str, object] = {}
        for name in order:
            spec = specs[name]
            if name in fixed:
                got[name] = fixed[name]
                continue
            bounds = spec.bounds(got) if isinstance(spec, Dim) else None
            if bounds is not None and not 1 <= bounds[0] <= bounds[1]:
                return None
            got[name] = _pick(row[name], spec, bounds)
        return got if model.allows(got) is None else None

    uniform = [("low", low_scale), ("high", high_scale), ("awkward", high_scale), ("low", high_scale),
               ("high", low_scale), ("awkward", low_scale), ("awkward", 1.0)]
    plan = [({k: which for k in free}, sc) for which, sc in uniform]
    plan += [({k: "low" if k == one else "high" for k in free}, 1.0) for one in varied
             if isinstance(specs[one], Dim)]
    out, seen, covered = [], set(), set()

    def add(row: Mapping[str, str], sc: float, got: Mapping[str, object]) -> None:
        covered.update(_pairs(row, varied))
        dims, hyper = {k: got[k] for k in model.dims}, {k: got[k] for k in model.hyper}
        case = (dims, hyper, len(out) if seed is None else seed, sc if scale is None else scale)
        key = (tuple(dims.values()), tuple(map(repr, hyper.values())), case[3])
        if key not in seen:
            seen.add(key)
            out.append(case)

    for row, sc in plan:
        got = resolve(row)
        if got is not None:
            add(row, sc, got)
    wanted = {(a, la, b, lb) for i, a in enumerate(varied) for b in varied[i + 1:]
              for la in levels[a] for lb in levels[b]}
    while wanted - covered:
        best = None
        for row in _candidates(wanted - covered, free, levels, varied, covered):
            gain = len(_pairs(row, varied) & (wanted - covered))
            if gain <= (best[0] if best is not None else 0):
                continue
            got = resolve(row)
            if got is not None:
                best = (gain, row, got)
        if best is None:      # what is left no case can hold: the record's bounds or `where` refuse it
            break
        add(best[1], 1.0, best[2])
    return out


def _levels(spec) -> tuple[str, ...]:
    """The distinct levels of one dim or hyperparameter: low, high and awkward where they
    are different sizes (all three where a bound reads other dims), first and last choice."""
    if not isinstance(spec, Dim):
        return ("low", "high") if len(spec) > 1 and spec[0] != spec[-1] else ("low",)
    if spec.reads():
        return ("low", "high", "awkward")
    low, high = spec.bounds({})
    distinct: dict[int, str] = {}
    for which, size in (("low", low), ("high", high), ("awkward", awkward(low, high))):
        distinct.setdefault(size, which)
    return tuple(distinct.values())


def _pick(which: str, spec, bounds) -> object:
    if bounds is not None:
        low, high = bounds
        return {"low": low, "high": high, "awkward": awkward(low, high)}[which]
    return spec[-1] if which == "high" else spec[0]          # choices


def _pairs(row: Mapping[str, str], varied: list[str]) -> set[tuple]:
    return {(a, row[a], b, row[b]) for i, a in enumerate(varied) for b in varied[i + 1:]}


def _candidates(uncovered: set, free: list[str], levels: Mapping[str, tuple], varied: list[str], covered: set):
    """Rows to choose the next one of the covering array from: every combination of levels
    where there are few (up to ``rules.COVERING_ALL_ROWS``), else one row grown from each uncovered pair, the other
    factors chosen in order for the most pairs not yet covered (ties to the earlier level)."""
    if math.prod(len(levels[k]) for k in varied) <= rules.COVERING_ALL_ROWS:
        for combo in itertools.product(*(levels[k] for k in varied)):
            row = dict(zip(varied, combo))
            yield {k: row.get(k, levels[k][0]) for k in free}
        return
    rank = {k: i for i, k in enumerate(varied)}
    for a, la, b, lb in sorted(uncovered, key=lambda t: (rank[t[0]], rank[t[2]], t)):
        row = {a: la, b: lb}
        for k in varied:
            if k not in row:
                row[k] = max(levels[k], key=lambda level: sum(
                    (j, row[j], k, level) not in covered if rank[j] < rank[k] else (k, level, j, row[j]) not in covered
                    for j in row))
        yield {k: row.get(k, levels[k][0]) for k in free}


def _nightly_database():
    """Hypothesis's own database, or where CI turns it off (its ``ci`` profile), the folder it
    would use: a nightly job that keeps ``.hypothesis/`` between runs replays its failures."""
    from hypothesis.database import DirectoryBasedExampleDatabase

    return settings.default.database or DirectoryBasedExampleDatabase(".hypothesis/examples")


def database_for(base, model: str, dtype: str, device: str):
    """Where the nightly profile keeps one model's failures: its own folder under
    hypothesis's directory database, so that a passing model never replays, and deletes,
    another model's failure.  A database of another type is used as it is."""
    from hypothesis.database import DirectoryBasedExampleDatabase

    root = getattr(base, "path", None)
    if not isinstance(base, DirectoryBasedExampleDatabase) or root is None:
        return base
    return DirectoryBasedExampleDatabase(Path(root) / "gradcheck-suite" / f"{model}-{dtype}-{device}")


def cases(model: Model, *, dtype: str | None = None, device: str = "cpu",
          fixed_dims: Mapping[str, int] | None = None, seed: int | None = None,
          scale: float | None = None, scale_range: tuple[float, float] | None = None,
          fixed_hyper: Mapping[str, object] | None = None):
    """Cases of ``model``: dims, hyperparameters, seed and value scale drawn unless given.

    ``dtype`` defaults to the model's own, ``scale_range`` to the model's (else ``rules.SCALE_RANGE``).
    """
    low, high = scale_range or model.scale_range or rules.SCALE_RANGE
    return st.builds(
        lambda v, **kw: Case(dims=v[0], hyper=v[1], **kw),
        values(model, fixed_dims=fixed_dims, fixed_hyper=fixed_hyper),
        model=st.just(model.name),
        dtype=st.just(dtype or model.dtype),
        device=st.just(device),
        seed=st.just(seed) if seed is not None else seeds(),
        scale=st.just(scale) if scale is not None else scales(low=low, high=high),
    )


def profile_settings(profile: str = "quick", *, examples: int | None = None) -> settings:
    """Hypothesis settings for a profile (``quick`` or ``nightly``), ``examples`` overriding its count."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    if examples is not None and examples < 1:
        raise ValueError(f"examples={examples} must be at least 1")
    chosen = {k: v for k, v in PROFILES[profile].items() if k not in HARNESS_KEYS}
    if examples is not None:
        chosen["max_examples"] = examples
    return settings(
        **chosen,
        deadline=None,
        database=None if chosen["derandomize"] else _nightly_database(),
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
