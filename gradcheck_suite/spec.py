"""The model record: dimensions, tensors by shape, forward and hand-written backward.

A model file builds one :class:`Model`. It never imports hypothesis: the harness
draws concrete dimensions, values and seeds for it (see ``strategies.py``).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

DTYPES = ("float64", "float32", "float16", "bfloat16")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

Shape = tuple  # of dimension names (str) and fixed sizes (int)


class SpecError(ValueError):
    """An invalid model record; names the file, the model and the field."""

    def __init__(self, model: str, field: str, problem: str, where: str | None = None):
        self.model, self.field, self.problem, self.where = model, field, problem, where
        super().__init__(str(self))

    def located(self, where: str) -> SpecError:
        return SpecError(self.model, self.field, self.problem, where)

    def __str__(self) -> str:
        head = f"{self.where}: " if self.where else ""
        return f"{head}model {self.model!r}, field {self.field!r}: {self.problem}"


@dataclasses.dataclass(frozen=True)
class Dim:
    """A named dimension: the range hypothesis draws from, and the benchmark size."""

    low: int
    high: int
    bench: int

    def problem(self) -> str | None:
        for key in ("low", "high", "bench"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                return f"{key}={value!r} must be a whole number >= 1"
        if self.low > self.high:
            return f"low={self.low} is larger than high={self.high}"
        return None


class Tensors(dict):
    """Name -> tensor mapping that also reads as attributes: ``p.w1`` is ``p["w1"]``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no tensor named {name!r}; there are {sorted(self)}") from None


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """One hand-written backward and everything the harness needs to check it.

    forward(p, d) -> (output, cache)
        ``p`` holds the parameters, ``d`` the data (both :class:`Tensors`). The
        output is a scalar loss or any tensor; the cache is whatever the backward needs.
    backward(p, d, cache, g) -> {name: gradient}
        ``g`` is the upstream gradient of the output (random, not 1). One gradient
        per parameter and per name in ``grad_data``.
    make_tensors(dims, generator, dtype, scale) -> {name: tensor}
        Optional factory for all tensors (class indices, positive values, ...).
        Draw from ``generator`` only, so that the seed reproduces the case.
    domain
        Optional ``{name: (low, high)}`` bounds (``None`` for open) that the
        default factory keeps values inside, well away from the bounds.
    flops(dims) -> (forward_flops, backward_flops)
        Optional; the benchmarks report GFLOP/s with it.
    """

    name: str
    dims: Mapping[str, Dim]
    params: Mapping[str, Shape]
    forward: Callable[..., Any]
    backward: Callable[..., Mapping[str, Any]]
    data: Mapping[str, Shape] = dataclasses.field(default_factory=dict)
    grad_data: tuple[str, ...] = ()
    dtype: str = "float64"
    make_tensors: Callable[..., Mapping[str, Any]] | None = None
    domain: Mapping[str, tuple[float | None, float | None]] = dataclasses.field(default_factory=dict)
    flops: Callable[[Mapping[str, int]], tuple[int, int]] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "grad_data", tuple(self.grad_data))
        problem = _first_problem(self)
        if problem is not None:
            field, text = problem
            raise SpecError(self.name if isinstance(self.name, str) else repr(self.name), field, text)

    @property
    def differentiable(self) -> tuple[str, ...]:
        """Names that get a gradient: the parameters, then ``grad_data``."""
        return (*self.params, *self.grad_data)

    @property
    def bench_dims(self) -> dict[str, int]:
        return {k: d.bench for k, d in self.dims.items()}

    def shape(self, name: str, dims: Mapping[str, int]) -> tuple[int, ...]:
        spec = self.params[name] if name in self.params else self.data[name]
        return tuple(dims[s] if isinstance(s, str) else s for s in spec)

    def check_dims(self, dims: Mapping[str, int]) -> str | None:
        """Why ``dims`` cannot be used for this model, or None."""
        unknown = sorted(set(dims) - set(self.dims))
        if unknown:
            return f"unknown dimension(s) {', '.join(unknown)}; {self.name} has {', '.join(self.dims)}"
        missing = sorted(set(self.dims) - set(dims))
        if missing:
            return f"missing dimension(s) {', '.join(missing)}"
        bad = [f"{k}={v}" for k, v in dims.items() if not isinstance(v, int) or v < 1]
        if bad:
            return f"sizes must be >= 1, got {', '.join(bad)}"
        return None


def _first_problem(m: Model) -> tuple[str, str] | None:
    if not isinstance(m.name, str) or not _NAME.match(m.name):
        return "name", f"{m.name!r} must be lower-case letters, digits and '_', starting with a letter"
    if not isinstance(m.dims, Mapping):
        return "dims", f"must map dimension names to Dim(low, high, bench), got {type(m.dims).__name__}"
    for key, dim in m.dims.items():
        if not isinstance(dim, Dim):
            return f"dims.{key}", f"must be Dim(low, high, bench), got {dim!r}"
        text = dim.problem()
        if text:
            return f"dims.{key}", text
    for field in ("params", "data"):
        tensors = getattr(m, field)
        if not isinstance(tensors, Mapping):
            return field, f"must map tensor names to shapes, got {type(tensors).__name__}"
        for tname, shape in tensors.items():
            if not isinstance(shape, tuple):
                return f"{field}.{tname}", f"shape must be a tuple of dimension names and sizes, got {shape!r}"
            for s in shape:
                if isinstance(s, str) and s not in m.dims:
                    return f"{field}.{tname}", f"shape {shape!r} uses {s!r}, which is not in dims ({', '.join(m.dims) or 'none'})"
                if not isinstance(s, str) and not (isinstance(s, int) and s >= 0):
                    return f"{field}.{tname}", f"shape {shape!r} has {s!r}; use a dimension name or a size >= 0"
    if not m.params and not m.grad_data:
        return "params", "there is nothing to differentiate: give at least one parameter or a grad_data name"
    both = sorted(set(m.params) & set(m.data))
    if both:
        return "data", f"{', '.join(both)} is both a parameter and data"
    for name in m.grad_data:
        if name not in m.data:
            return "grad_data", f"{name!r} is not one of the data tensors ({', '.join(m.data) or 'none'})"
    for field in ("forward", "backward"):
        if not callable(getattr(m, field)):
            return field, f"must be callable, got {getattr(m, field)!r}"
    for field in ("make_tensors", "flops"):
        value = getattr(m, field)
        if value is not None and not callable(value):
            return field, f"must be callable or None, got {value!r}"
    if m.dtype not in DTYPES:
        return "dtype", f"{m.dtype!r} is not one of {', '.join(DTYPES)}"
    for tname, bounds in dict(m.domain).items():
        if tname not in m.params and tname not in m.data:
            return f"domain.{tname}", "names no tensor of this model"
        if not (isinstance(bounds, tuple) and len(bounds) == 2):
            return f"domain.{tname}", f"must be (low, high) with None for an open end, got {bounds!r}"
        low, high = bounds
        if low is not None and high is not None and not low < high:
            return f"domain.{tname}", f"low={low} is not below high={high}"
    return None
