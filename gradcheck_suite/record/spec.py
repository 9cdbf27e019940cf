"""The model record: dimensions, tensors by shape, forward and hand-written backward.

A model file builds one :class:`Model`. It never imports hypothesis: the harness
draws concrete dimensions, values and seeds for it (see ``strategies.py``).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from . import dimexpr
from ..kinds import NAMES as KINDS, Kind, kind_named

DTYPES = ("float64", "float32", "float16", "bfloat16", "complex64", "complex128")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def foreign_dtype(model_dtype: str, dtype: str) -> str | None:
    """Why a record written for ``model_dtype`` is not checked in ``dtype`` (``--dtype``), or
    None: a complex dtype asked of a record written for real numbers.  Its backward is a
    real derivation, which complex inputs make another function (a loss of complex values,
    no conjugation): such a check would fail code that is right for what it was written."""
    if dtype.startswith("complex") and not model_dtype.startswith("complex"):
        return (f"not checked in {dtype}: the record is written for real numbers (its dtype is {model_dtype}); "
                f"a record gives dtype={dtype!r} to be checked in complex")
    return None

Shape = tuple  # of dimension names, expressions of them ("L + K - 1"), callables and fixed sizes
#: what a record's ``train`` dict may hold (see train/setup.py)
TRAIN_KEYS = ("lr", "steps", "optimizer", "batch", "dims", "loss", "data", "start")
TRAIN_OPTIMIZERS = ("sgd", "momentum", "adam")
TRAIN_BATCHES = ("fixed", "fresh")
TRAIN_LOSSES = ("sum", "square")


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
    """A named dimension: the range hypothesis draws from, and the benchmark size.

    ``low`` and ``high`` may be expressions of other dims (``Dim(1, "L", 3)``: a kernel
    no wider than its input); dims are then drawn in dependency order.
    """

    low: int | str
    high: int | str
    bench: int

    def problem(self) -> str | None:
        for key in ("low", "high", "bench"):
            value = getattr(self, key)
            if key != "bench" and isinstance(value, str):
                try:
                    dimexpr.parse(value)
                except dimexpr.ExprError as e:
                    return f"{key}: {e}"
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                return f"{key}={value!r} must be a whole number >= 1 or an expression of other dims"
        if isinstance(self.low, int) and isinstance(self.high, int) and self.low > self.high:
            return f"low={self.low} is larger than high={self.high}"
        return None

    def reads(self) -> set[str]:
        """The other dims its bounds read."""
        return set().union(*(dimexpr.names(b) for b in (self.low, self.high) if isinstance(b, str)))

    def bounds(self, values: Mapping[str, object]) -> tuple[int, int]:
        return tuple(int(b if isinstance(b, int) else dimexpr.evaluate(b, values)) for b in (self.low, self.high))


def _choices_problem(choices: object) -> str | None:
    if not isinstance(choices, (tuple, list)) or not choices:
        return f"must be Dim(low, high, bench) or a non-empty tuple of choices, got {choices!r}"
    bad = [c for c in choices if not _literal(c)]
    if bad:
        return (f"choices must be numbers, strings, True/False, None, or tuples and dicts of them "
                f"(they go on the command line), got {bad[0]!r}")
    return None


def _literal(value: object) -> bool:
    """A value that reads back from its repr: ``(8,)`` or ``{'stride': 1, 'pad': 1}`` too."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return True
    if isinstance(value, (tuple, list)):
        return all(_literal(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _literal(v) for k, v in value.items())
    return False


class Tensors(dict):
    """Name -> tensor mapping that also reads as attributes: ``p.w1`` is ``p["w1"]``."""

    __slots__ = ()
    _what = "tensor"

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no {self._what} named {name!r}; there are {sorted(self)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        """``p.w -= lr * grad`` changes the tensor in place and then sets the attribute: the
        same tensor goes back under its name.  Any other value is refused, with what to write."""
        if name in self and self[name] is value:
            return
        raise AttributeError(f"cannot assign .{name}: {self._what}s read as attributes but are set as items, "
                             f"e.g. p[{name!r}] = ...; or change the {self._what} in place (p.{name} -= ...)")


class Hyper(Tensors):
    """Name -> hyperparameter value of one case, also read as attributes: ``h.stride``."""

    __slots__ = ()
    _what = "hyperparameter"


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
    reference(p, d) -> output
        Optional plain-torch forward of the same inputs. Where given, autograd runs
        on it instead of ``forward``, and the forward's value must match it.
    hyper
        Optional ``{name: Dim(...) or (choice, ...)}``: non-tensor arguments drawn
        like dims (a stride, a flag).  A choice may be a tuple or a dict of plain values
        (``normalized_shape=((8,),)``, ``conv_param={"stride": 1, "pad": 1}``: a dict
        alone is its one choice); each call gets its own copy. With ``hyper``, forward, backward and
        reference get one more argument ``h`` (``h.stride``).
    where(values) -> bool
        Optional constraint on the drawn dims and hyperparameters, a callable of
        ``{name: value}`` or an expression such as ``"K <= L"``. Bounds that are
        expressions (``Dim(1, "L", 3)``) waste fewer cases than a filter.
    factories
        Optional ``{name: factory(dims, generator, dtype, scale) -> tensor}``, one
        tensor each (class indices); the other tensors keep the default values.
    scale_range, scales
        Optional value-scale range ``(low, high)`` for the whole model, and per
        tensor: a tensor's values use the case's scale clamped into its range.
    jvp(p, d, tangents) -> output tangent
        Optional forward-mode rule of a plain record (``tangents``: ``{name: tensor}`` for
        every differentiable input; the tangent of the output, a tuple for a tuple of
        outputs), checked against autograd's forward mode and against the backward.
    double_backward
        Opt in to checking the gradient of the backward itself (``order=2``).
    order
        The highest derivative checked (1, the default; 2 where ``double_backward=True``):
        order N checks the gradient of ``<u_{N-1}, ... gradient of <u_1, backward> ...>``
        through the user's backward against the reference's N-th derivative and finite
        differences of the (N-1)-th, each order from 2 up in turn.
    backward_runs
        How many times the backward runs on one case; all must agree (>= 2).
    compile
        Also check each case under ``torch.compile`` (its output and manual gradient
        against eager's): None (the default) lets the profile decide (nightly: on;
        quick: only with ``--compile``), True always, False never.
    surrogate
        The backward is not the forward's derivative on purpose (a straight-through
        estimator, gradient reversal): the ``reference``'s autograd defines the gradient,
        every element is compared with it, and finite differences are not consulted.
    needs_contiguous
        The backward is documented to take contiguous tensors only: the checker then
        skips the layout variants (transposed, expanded and strided upstream gradients,
        non-contiguous inputs) that training can hand it, and the report says so.
    collective_timeout
        A sharded record's seconds that a rank waits in one collective for the others
        (``sharded_model``): past it the case is an error naming the rank that never came;
        None takes ``rules.SHARDED_TIMEOUT``; ``check --collective-timeout`` overrides it.
    train
        Optional defaults for ``gradcheck-suite train``: ``dict(lr=1e-4, steps=500,
        optimizer="sgd", batch="fresh", dims={...}, loss="sum")``, and a tutorial's own
        data and start: ``data(step, dims, generator, dtype) -> {name: tensor}`` for the
        data of each step, ``start(dims, generator, dtype) -> {name: tensor}`` for the
        parameters.  ``loss`` turns the output into the loss trained on: ``"sum"`` (the
        default for a scalar), ``"square"`` (half the mean square, the default otherwise)
        or a torch callable of the output.

    A forward may return a tuple of tensors: each gets its own random upstream
    gradient, and the backward receives them as a tuple.
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
    reference: Callable[..., Any] | None = None
    hyper: Mapping[str, Dim | tuple] = dataclasses.field(default_factory=dict)
    where: Callable[[Mapping[str, Any]], bool] | str | None = None
    factories: Mapping[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    scale_range: tuple[float, float] | None = None
    scales: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    jvp: Callable[..., Any] | None = None   # a plain record's forward-mode rule (check/stages/forward_mode.py)
    double_backward: bool = False
    order: int | None = None       # None: 2 with double_backward, else 1 (resolved in __post_init__)
    batched: bool = True           # an op's backward under vmap (check/stages/batched.py)
    backward_runs: int = 2
    compile: bool | None = None    # check under torch.compile too: None, the profile decides
    needs_contiguous: bool = False
    surrogate: bool = False
    train: Mapping[str, Any] | None = None
    kind: str = "model"            # how the backward is held (kinds/): set by op_model / numpy_model
    op: Any = None                 # the user's op as it ships, for op_model's ctx checks
    sharded: Any = None            # how a sharded record runs on ranks: set by sharded_model (kinds/sharding.py)
    collective_timeout: float | None = None   # a sharded record's seconds per collective (None: the rule's)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grad_data", tuple(self.grad_data))
        if isinstance(self.hyper, Mapping):
            # a list is a tuple of choices; a dict (cs231n's conv_param) is one choice
            object.__setattr__(self, "hyper", {k: tuple(v) if isinstance(v, list) else (v,) if isinstance(v, dict)
                                               else v for k, v in self.hyper.items()})
        problem = _order_problem(self)
        if problem is None:
            # double_backward=True asks for the second derivative at least: over order 1, the
            # default, which a record copied with dataclasses.replace carries settled
            order = max(self.order or 1, 2 if self.double_backward is True else 1)
            object.__setattr__(self, "order", order)
            object.__setattr__(self, "double_backward", order >= 2)
        problem = problem or _first_problem(self)
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

    @property
    def bench_hyper(self) -> dict[str, Any]:
        """Each hyperparameter's benchmark value: a Dim's ``bench``, or the first choice."""
        return {k: h.bench if isinstance(h, Dim) else h[0] for k, h in self.hyper.items()}

    @property
    def held_as(self) -> Kind:
        """How this record holds its backward (``kind``, as a :class:`~gradcheck_suite.kinds.Kind`):
        what the checks and the benchmarks need to know about it."""
        return kind_named(self.kind)

    @property
    def two_way(self) -> bool:
        """No autograd oracle: numpy code without a reference is checked against finite differences alone."""
        return self.held_as.numpy_arrays and self.reference is None

    def shape(self, name: str, dims: Mapping[str, Any]) -> tuple[int, ...]:
        """The tensor's shape at ``dims`` (which may also hold the hyperparameters)."""
        spec = self.params[name] if name in self.params else self.data[name]
        return tuple(dimexpr.size(s, dims) for s in spec)

    def allows(self, values: Mapping[str, Any]) -> str | None:
        """Why these dims and hyperparameters break a bound that reads other dims, or
        ``where``, or None.  Only what ``values`` holds enough of is judged: a fixed part."""
        specs = {**self.dims, **{k: v for k, v in self.hyper.items() if isinstance(v, Dim)}}
        for name, dim in specs.items():
            if dim.reads() and name in values and dim.reads() <= set(values):
                low, high = dim.bounds(values)
                if not low <= values[name] <= high:
                    return f"{name}={values[name]} is outside its bounds [{dim.low}, {dim.high}] = [{low}, {high}]"
        if self.where is not None:
            if isinstance(self.where, str):
                if not dimexpr.names(self.where) <= set(values):
                    return None
                ok = dimexpr.evaluate(self.where, values)
            elif set(values) >= {*self.dims, *self.hyper}:
                try:
                    ok = self.where(dict(values))
                except Exception as e:  # the user's predicate: a line, not a traceback
                    return f"where raised {type(e).__name__}: {e}"
            else:
                return None
            if not ok:
                shown = self.where if isinstance(self.where, str) else "where"
                return f"{', '.join(f'{k}={v}' for k, v in values.items())} breaks the constraint {shown}"
        return None

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
    problem = _hyper_problem(m)
    if problem is not None:
        return problem
    for field in ("params", "data"):
        tensors = getattr(m, field)
        if not isinstance(tensors, Mapping):
            return field, f"must map tensor names to shapes, got {type(tensors).__name__}"
        for tname, shape in tensors.items():
            if not isinstance(shape, tuple):
                return f"{field}.{tname}", f"shape must be a tuple of dimension names and sizes, got {shape!r}"
            for s in shape:
                text = _entry_problem(s, m.dims, m.hyper)
                if text:
                    return f"{field}.{tname}", f"shape {shape!r} {text}"
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
        if m.dtype.startswith("complex"):
            return f"domain.{tname}", (f"bounds real values, and {m.dtype} draws complex ones: give {tname} a "
                                       "factory that draws inside its domain")
    return _new_fields_problem(m)


def _entry_problem(entry: object, dims, hyper) -> str | None:
    """What is wrong with one shape entry (or a ``where`` expression), as "uses ..." or "has ..."."""
    where = f"dims or hyper ({', '.join([*dims, *hyper])})" if hyper else f"dims ({', '.join(dims) or 'none'})"
    if isinstance(entry, str):
        try:
            used = dimexpr.names(entry)
        except dimexpr.ExprError as e:
            return f"has {e}"
        unknown = sorted(used - {*dims, *hyper})
        if unknown:
            inside = "" if unknown[0] == entry else f" in {entry!r}"
            return f"uses {unknown[0]!r}{inside}, which is not in {where}"
        return None
    if callable(entry):
        return None
    if not (isinstance(entry, int) and not isinstance(entry, bool) and entry >= 0):
        return f"has {entry!r}; use a dimension name, an expression of dims, a callable or a size >= 0"
    return None


def _hyper_problem(m: Model) -> tuple[str, str] | None:
    if not isinstance(m.hyper, Mapping):
        return "hyper", f"must map names to Dim(low, high, bench) or a tuple of choices, got {type(m.hyper).__name__}"
    for key, spec in m.hyper.items():
        if not isinstance(key, str) or not key.isidentifier():
            return f"hyper.{key}", "a hyperparameter's name must be a Python identifier"
        if key in m.dims:
            return f"hyper.{key}", "is also a dimension; give it one name or the other"
        text = spec.problem() if isinstance(spec, Dim) else _choices_problem(spec)
        if text:
            return f"hyper.{key}", text
    bounded = {**m.dims, **{k: v for k, v in m.hyper.items() if isinstance(v, Dim)}}
    for key, dim in bounded.items():
        allowed = set(m.dims) if key in m.dims else {*m.dims, *m.hyper}
        unknown = sorted(dim.reads() - allowed)
        if unknown:
            field = f"dims.{key}" if key in m.dims else f"hyper.{key}"
            return field, f"a bound reads {unknown[0]!r}, which is not one of {', '.join(sorted(allowed)) or 'none'}"
    try:
        dimexpr.order({k: d.reads() for k, d in bounded.items()})
    except dimexpr.ExprError as e:
        return "dims", str(e)
    return None


def _range_problem(bounds: object) -> str | None:
    if not (isinstance(bounds, tuple) and len(bounds) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)):
        return f"must be (low, high), two positive numbers, got {bounds!r}"
    if not 0 < bounds[0] <= bounds[1]:
        return f"need 0 < low <= high, got low={bounds[0]}, high={bounds[1]}"
    return None


def train_problem(train: object) -> str | None:
    """What is wrong with a record's ``train`` dict, or None."""
    if not isinstance(train, Mapping):
        return f"must be a dict such as dict(lr=1e-3, steps=200), got {type(train).__name__}"
    for key in train:
        if key not in TRAIN_KEYS:
            near = difflib.get_close_matches(str(key), TRAIN_KEYS, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(TRAIN_KEYS)})"
            return f"unknown key {key!r}{hint}"
    lr = train.get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and 0 < lr < math.inf):
        return f"lr must be a positive number, got {lr!r}"
    steps = train.get("steps")
    if steps is not None and not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        return f"steps must be a whole number >= 1, got {steps!r}"
    for key, allowed in (("optimizer", TRAIN_OPTIMIZERS), ("batch", TRAIN_BATCHES)):
        if key in train and train[key] not in allowed:
            return f"{key} must be one of {', '.join(allowed)}, got {train[key]!r}"
    loss = train.get("loss")
    if loss is not None and loss not in TRAIN_LOSSES and not callable(loss):
        return f"loss must be 'sum', 'square' or a callable of the output, got {loss!r}"
    for key in ("data", "start"):
        if train.get(key) is not None and not callable(train[key]):
            return f"{key} must be callable, got {train[key]!r}"
    dims = train.get("dims")
    if dims is not None and not isinstance(dims, Mapping):
        return f"dims must map dimension names to sizes, got {dims!r}"
    return None


def _order_problem(m: Model) -> tuple[str, str] | None:
    """``order`` and ``double_backward``, before the one is resolved from the other."""
    if not isinstance(m.double_backward, bool):
        return "double_backward", f"must be True or False, got {m.double_backward!r}"
    if m.order is None:
        return None
    if not isinstance(m.order, int) or isinstance(m.order, bool) or m.order < 1:
        return "order", f"must be a whole number, 1 or more (the highest derivative checked), got {m.order!r}"
    return None


def _new_fields_problem(m: Model) -> tuple[str, str] | None:
    if m.reference is not None and not callable(m.reference):
        return "reference", f"must be callable or None, got {m.reference!r}"
    if isinstance(m.where, str):
        text = _entry_problem(m.where, m.dims, m.hyper)
        if text:
            return "where", f"{m.where!r} {text}"
    elif m.where is not None and not callable(m.where):
        return "where", f"must be a callable of the values or an expression such as 'K <= L', got {m.where!r}"
    tensors = {*m.params, *m.data}
    for field in ("factories", "scales"):
        value = getattr(m, field)
        if not isinstance(value, Mapping):
            return field, f"must map tensor names to {'factories' if field == 'factories' else '(low, high)'}"
        for tname, item in value.items():
            if tname not in tensors:
                return f"{field}.{tname}", f"names no tensor of this model ({', '.join(tensors)})"
            text = (None if callable(item) else f"must be callable, got {item!r}") if field == "factories" \
                else _range_problem(item)
            if text:
                return f"{field}.{tname}", text
    if m.factories and m.make_tensors is not None:
        return "factories", "give make_tensors (all tensors) or factories (some), not both"
    if m.scale_range is not None:
        text = _range_problem(m.scale_range)
        if text:
            return "scale_range", text
    if not isinstance(m.double_backward, bool):
        return "double_backward", f"must be True or False, got {m.double_backward!r}"
    if m.jvp is not None and not callable(m.jvp):
        return "jvp", f"must be callable (p, d, tangents) -> output tangent, or None, got {m.jvp!r}"
    if m.compile is not None and not isinstance(m.compile, bool):
        return "compile", f"must be True, False or None (the profile decides), got {m.compile!r}"
    if not isinstance(m.batched, bool):
        return "batched", f"must be True or False, got {m.batched!r}"
    if not isinstance(m.surrogate, bool):
        return "surrogate", f"must be True or False, got {m.surrogate!r}"
    if m.surrogate and m.reference is None:
        return "surrogate", ("a surrogate gradient is defined by a reference: give one whose autograd gives it "
                             "(for instance x.detach() + (f(x) - f(x).detach()))")
    if not isinstance(m.needs_contiguous, bool):
        return "needs_contiguous", f"must be True or False, got {m.needs_contiguous!r}"
    if not isinstance(m.backward_runs, int) or isinstance(m.backward_runs, bool) or m.backward_runs < 2:
        return "backward_runs", f"must be a whole number >= 2, got {m.backward_runs!r}"
    if m.train is not None:
        text = train_problem(m.train)
        if text:
            return "train", text
    if m.kind not in KINDS:
        return "kind", f"{m.kind!r} is not one of {', '.join(KINDS)}"
    if (m.kind == "sharded") != (m.sharded is not None):
        return "kind", "a sharded record is made by sharded_model(...), which sets kind and sharded together"
    if m.collective_timeout is not None:
        t = m.collective_timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            return "collective_timeout", f"must be a positive number of seconds, or None, got {t!r}"
        if m.sharded is None:
            return "collective_timeout", "applies to a sharded record (sharded_model) only: its ranks' collectives"
    return None
