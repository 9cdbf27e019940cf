"""After a failure: what kind of mistake it is, and the line of the backward that goes wrong.

Runs once, on the shrunk failing case, never while searching.

Kind, per failing tensor.  The manual gradient M against autograd's A over the whole tensor,
within the case's own per-element bound: the simplest relation that explains M.

    ignores_upstream  M does not move when the upstream gradient g does, where A does
    zero              M = 0 where A is not
    sign              M = -A
    scale             M = k·A, with k named where it is a simple fraction or a dim
    transpose         M = Aᵀ (a square tensor, or the same elements reshaped)
    swapped           M = A of another tensor of the same shape
    permuted          M = A with two (or more) axes swapped, of itself, of the upstream gradient
                      g, or of an input: the axes are named (a B×T read as T×B)
    partial           M = A except on some rows or columns, or a few elements
    other             none of these

Where.  The forward (or the reference, where autograd runs on one) and the backward run again
under ``sys.settrace``, recording what each line of the user's own files assigns.  Autograd
gives the gradient of every tensor the forward computed.  The backward's assignments are then
walked in order: a value that is the gradient of a forward intermediate (by name: ``grad_h``,
``h_grad``, ``dh``, ``gh`` for ``h``; or by value) is right; one that is named as such a
gradient and is not, is wrong.  The first wrong one is reported, with what it should have been;
where nothing matches, the report says so and guesses nothing.  The report then moves to the
line that first goes wrong, where values show it is earlier (``_origin``: a slice or flip of a
value nothing confirms, a rearranged parameter; ``_never_written``: elements no write reaches;
``_built``: the dict filled before its return).  Every line it cites comes with its file, and a
kind judged at a larger size says which size its figures are from.
"""
from __future__ import annotations

import ast
import dataclasses
import io
import itertools
import linecache
import math
import re
import sys
import time
import tokenize
from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import torch

from ..verdict import oracles
from ..record.blame import shown_path, user_code
from ..check.case import Bound, Case, build, upstream
from ..verdict.tolerance import bound as tolerance
from ..record.spec import Model, Tensors

KINDS = ("sign", "scale", "transpose", "ignores_upstream", "zero", "swapped", "permuted", "partial", "other")


@dataclasses.dataclass
class Kind:
    tensor: str
    kind: str
    factor: float | None
    text: str
    same_as: str = ""      # what must match across sizes: a scale's dim, or its number
    dims: Mapping[str, int] | None = None   # the size it was judged at, where not the failing case's

    def to_json(self) -> dict:
        return {"tensor": self.tensor, "kind": self.kind, "factor": self.factor, "text": self.text,
                "dims": None if self.dims is None else dict(self.dims)}


@dataclasses.dataclass
class Location:
    file: str
    line: int
    variable: str
    code: str
    expected: str
    right: str = ""     # an input of that line that is right, and where it was assigned
    why: str = ""       # the whole sentence, where the line is not the wrong value's own

    def sentence(self) -> str:
        return self.why or f"{self.variable} is not {self.expected}" + (f"; {self.right}" if self.right else "")

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "variable": self.variable, "code": self.code,
                "expected": self.expected, "text": self.sentence()}


@dataclasses.dataclass
class Diagnosis:
    kinds: list[Kind]
    location: Location | None
    location_note: str | None
    cut: str | None = None      # a step the time budget left out


def diagnose(model: Model, case: Case, failing: list[str], bounds: Mapping[str, torch.Tensor],
             deadline: float | None = None) -> Diagnosis | None:
    """The kind of each failing tensor's mistake and the first wrong line, for the case that
    failed; None where the case cannot be rebuilt (its failure was not a gradient's).

    ``deadline`` (``time.perf_counter()``): the kind at the case and the line come first;
    the kind at the benchmark size is left out once it has passed (said in ``cut``), and
    no further axis permutation is tried."""
    names = [n for n in failing if n in model.differentiable]
    if not names:
        return None
    bound_model, p, d, cache, g, manual, auto = _run(model, case)
    here = {n: _kind(n, bound_model, case, p, d, cache, g, manual, auto, bounds, deadline) for n in names}
    try:
        location, note = _locate(bound_model, case, p, d, g, manual, auto, names)
    except Exception as e:   # tracing someone else's code: say so, never guess
        location, note = None, f"could not trace the backward ({type(e).__name__}: {e})"
    del p, d, cache, g, manual, auto      # the larger case's tensors take their place
    kinds, kinds_at = {}, {}
    cut = None
    larger = _larger(model, case)
    if larger and deadline is not None and time.perf_counter() > deadline:
        cut = ("the kind was judged at this case only, not at the benchmark size too: the diagnosis's time "
               "budget was spent")
        larger = []
    # the kind at the benchmark size too: at the shrunk case's size 1, any wrong value is a
    # "factor" of the right one; a relation must hold for a whole tensor of some size
    for at in larger:
        try:
            b, p, d, cache, g, manual, auto = _run(model, at)
        except Exception:
            continue
        for n in names:
            if n not in kinds and not _agrees(manual[n], auto[n], at):
                kinds[n] = _kind(n, b, at, p, d, cache, g, manual, auto, {}, deadline)
                kinds_at[n] = at
    found = []
    for n in names:
        kind, big = here[n], kinds.get(n)
        if big is not None and (kind.kind != big.kind or kind.same_as != big.same_as):
            if big.kind == "scale":
                big = Kind(n, "other", None, "no simple relation to autograd's gradient at every size (other)")
            else:        # its figures (counts, rows, elements) are that size's, not this case's: say so
                dims = dict(kinds_at[n].dims)
                big = dataclasses.replace(big, dims=dims, text=f"at {_sizes(dims)}, larger than this case: {big.text}")
            kind = big
        found.append(kind)
    return Diagnosis(found, location, note, cut)


def _sizes(dims: Mapping[str, int]) -> str:
    """``N=64, D=512``: the size a figure belongs to."""
    return ", ".join(f"{k}={v}" for k, v in dims.items())


def _larger(model: Model, case: Case) -> list[Case]:
    """The failing case at the record's benchmark sizes, where those fit and differ."""
    dims = {k: max(v, model.dims[k].bench) for k, v in case.dims.items()}
    if dims == dict(case.dims) or model.allows({**dims, **case.hyper}) is not None:
        return []
    return [dataclasses.replace(case, dims=dims)]


def _run(model: Model, case: Case):
    b = Bound(model, case)
    p, d = build(b, case)
    with torch.no_grad():
        out, cache = b.forward(p, d)
    g = upstream(out, case.seed)
    with torch.no_grad():
        manual = b.backward(p, d, cache, g)
    return b, p, d, cache, g, manual, oracles.autograd(b, p, d, g)


def _agrees(m: torch.Tensor, a: torch.Tensor, case: Case) -> bool:
    m64, a64 = m.detach().to("cpu", torch.float64), a.detach().to("cpu", torch.float64)
    return m64.shape == a64.shape and bool(((m64 - a64).abs() <= tolerance(a64, case.dtype)).all())


# -- the kind ---------------------------------------------------------------------------------

def _kind(n: str, model, case: Case, p: Tensors, d: Tensors, cache, g, manual, auto, bounds,
          deadline: float | None = None) -> Kind:
    m = manual[n].detach().to("cpu", torch.float64)
    a = auto[n].detach().to("cpu", torch.float64)
    given = bounds.get(n)

    def explains(r: torch.Tensor) -> bool:
        allowed = tolerance(r, case.dtype)
        if given is not None and given.shape == allowed.shape:
            allowed = torch.maximum(allowed, given)
        return r.shape == m.shape and bool(((m - r).abs() <= allowed).all())

    if float(a.abs().max()) > 0 and explains(torch.zeros_like(a)):
        return Kind(n, "zero", 0.0, "the manual gradient is 0 where autograd's is not (zero)")
    if _ignores_upstream(n, model, p, d, cache, g, m, a, case):
        return Kind(n, "ignores_upstream", None, "the manual gradient does not change with the upstream gradient g, "
                                                  "where autograd's does (ignores_upstream): is g multiplied in?")
    if explains(-a):
        return Kind(n, "sign", -1.0, "the manual gradient is −1 × autograd (sign)")
    k = _factor(m, a)
    if k is not None and explains(k * a):
        named = _named_factor(k, case.dims)
        dim = next((name for name, size in case.dims.items()
                    if size > 1 and (math.isclose(k, size, rel_tol=1e-6) or math.isclose(k, 1 / size, rel_tol=1e-6))),
                   None)
        return Kind(n, "scale", k, f"the manual gradient is {_show(k)} × autograd (scale{named})",
                    f"dim {dim} {k > 1}" if dim else _show(k))
    if a.dim() == 2 and a.shape[0] == a.shape[1] and a.shape[0] > 1 and explains(a.T):
        return Kind(n, "transpose", None, "the manual gradient is autograd's transposed (transpose)")
    if a.dim() == 2 and a.numel() > 1 and explains(a.T.reshape(a.shape)) and not explains(a):
        return Kind(n, "transpose", None, "the manual gradient holds autograd's elements transposed, reshaped "
                                          "(transpose)")
    for other, t in auto.items():
        if other != n and tuple(t.shape) == tuple(a.shape) and explains(t.detach().to("cpu", torch.float64)):
            return Kind(n, "swapped", None, f"the manual gradient of {n} is autograd's gradient of {other} "
                                            f"(swapped): two gradients returned in each other's place?")
    permuted = _permuted(n, model, case, p, d, g, m, a, explains, deadline)
    if permuted is not None:
        return permuted
    return _partial(n, m, a, explains, case)


PERMUTED_RANK = 4     # axis permutations are tried on tensors of at most this many axes


def _orders(rank: int):
    """Every order of ``rank`` axes but the identity: the swaps of two axes first."""
    swaps = []
    for i, j in itertools.combinations(range(rank), 2):
        order = list(range(rank))
        order[i], order[j] = j, i
        swaps.append(tuple(order))
    rest = [o for o in itertools.permutations(range(rank)) if o != tuple(range(rank)) and o not in swaps]
    return swaps + rest


def _reordered(t: torch.Tensor, order: tuple) -> torch.Tensor:
    """``t`` with its axes in ``order``, read back in ``t``'s own shape where that differs
    (a B×T×D buffer taken for T×B×D: what a transpose followed by a reshape or view gives)."""
    out = t.permute(order)
    return out if tuple(out.shape) == tuple(t.shape) else out.reshape(t.shape)


def _axes(order: tuple, shape: tuple, names: tuple | None, dims: Mapping[str, int]) -> str:
    """``axes 0 (B) and 1 (T)``, or the whole order where more than two axes move."""
    def label(i: int) -> str:
        name = names[i] if names and i < len(names) and isinstance(names[i], str) else None
        if name is None:
            same = [k for k, v in dims.items() if v == shape[i]]
            name = same[0] if len(same) == 1 else None
        return f"{i} ({name})" if name else str(i)

    moved = [i for i, o in enumerate(order) if o != i]
    if len(moved) == 2:
        return f"axes {label(moved[0])} and {label(moved[1])} swapped"
    return f"axes in the order {', '.join(label(o) for o in order)}"


def _permuted(n: str, model, case: Case, p: Tensors, d: Tensors, g, m: torch.Tensor, a: torch.Tensor, explains,
              deadline: float | None) -> Kind | None:
    """M is A with axes swapped: of the gradient itself, of the upstream gradient g (autograd
    again with g's axes reordered), or of one input (autograd again with that input's axes
    reordered).  Two-axis tensors are the transpose kind's; the identity and orders that
    leave a tensor as it is (axes of size 1) are skipped."""
    def late() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    record = getattr(model, "model", model)
    shapes = {**getattr(record, "params", {}), **getattr(record, "data", {})}
    if 3 <= a.dim() <= PERMUTED_RANK:
        for order in _orders(a.dim()):
            r = _reordered(a, order)
            if not torch.equal(r, a) and explains(r):
                return Kind(n, "permuted", None, f"the manual gradient is autograd's with "
                            f"{_axes(order, tuple(a.shape), shapes.get(n), case.dims)} (permuted)", f"{n} {order}")
    if a.dim() < 2:
        # a vector from a square g read transposed is also a sum over the wrong axis
        # (np.sum(dout, axis=1) for axis=0): nothing tells the two apart, so neither is named
        return None
    candidates = []
    if isinstance(g, torch.Tensor) and 2 <= g.dim() <= PERMUTED_RANK:
        candidates.append(("the upstream gradient g", None, g))
    for name, t in {**p, **d}.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and 2 <= t.dim() <= PERMUTED_RANK:
            candidates.append((name, name, t))
    # g's axes are named after an input of the same shape (a layer's x and its output, B×T×D)
    g_names = next((shapes[k] for k, t in {**p, **d}.items()
                    if k in shapes and isinstance(t, torch.Tensor) and tuple(t.shape) == tuple(g.shape)), None) \
        if isinstance(g, torch.Tensor) else None
    for what, name, t in candidates:
        for order in _orders(t.dim()):
            if late():
                return None
            r = _reordered(t, order)
            if torch.equal(r, t):
                continue
            try:
                if name is None:
                    auto = oracles.autograd(model, p, d, r)
                else:
                    p2 = Tensors((k, r if k == name else v) for k, v in p.items())
                    d2 = Tensors((k, r if k == name else v) for k, v in d.items())
                    auto = oracles.autograd(model, p2, d2, g)
            except Exception:     # the model at a reordered input: not this kind
                continue
            other = auto.get(n) if isinstance(auto, Mapping) else None
            if other is None or not explains(other.detach().to("cpu", torch.float64)):
                continue
            axes = _axes(order, tuple(t.shape), shapes.get(name) if name else g_names, case.dims)
            read = "g" if name is None else name
            return Kind(n, "permuted", None, f"the manual gradient is autograd's for {what} with {axes} "
                        f"(permuted): {read} read in another axis order?", f"{read} {order}")
    return None


def _ignores_upstream(n, model, p, d, cache, g, m, a, case) -> bool:
    """Called again with another upstream gradient: the manual one stays, autograd's moves."""
    if g.dim():
        gen = torch.Generator().manual_seed(case.seed ^ 0xD1A)
        g2 = torch.randn(g.shape, generator=gen, dtype=torch.float64).to(g.dtype) + g
    else:
        g2 = g * 2.0
    with torch.no_grad():
        m2 = model.backward(p, d, cache, g2)[n].detach().to("cpu", torch.float64)
    a2 = oracles.autograd(model, p, d, g2)[n].detach().to("cpu", torch.float64)
    still = bool(((m2 - m).abs() <= tolerance(m, case.dtype)).all())
    moved = not bool(((a2 - a).abs() <= tolerance(a, case.dtype)).all())
    return still and moved


def _factor(m: torch.Tensor, a: torch.Tensor) -> float | None:
    """The k of the least-squares fit m = k·a (None where a is 0, or k is 1 or not finite)."""
    aa = float((a * a).sum())
    if aa <= 0 or not math.isfinite(aa):
        return None
    k = float((m * a).sum()) / aa
    return k if math.isfinite(k) and abs(k - 1) > 1e-9 and k != 0 else None


def _named_factor(k: float, dims: Mapping[str, int]) -> str:
    """``×0.5``, ``×N (N = 8): ...``: what a factor usually means."""
    for name, size in dims.items():
        if size > 1 and math.isclose(k, size, rel_tol=1e-6):
            return f" ×{name} ({name} = {size}): a mean taken as a sum?"
        if size > 1 and math.isclose(k, 1 / size, rel_tol=1e-6):
            return f" ×1/{name} ({name} = {size}): a sum divided by {name}, as if it were a mean?"
    frac = Fraction(k).limit_denominator(8)
    if frac.denominator <= 8 and abs(frac.numerator) <= 8 and math.isclose(k, float(frac), rel_tol=1e-9):
        text = f"{frac.numerator}" if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"
        why = {Fraction(1, 2): ": a missing ½?", Fraction(2): ": a factor 2 too many?",
               Fraction(-1, 2): ": a sign and a ½?"}.get(frac, "")
        return f" ×{text}{why}"
    return ""


def _show(k: float) -> str:
    frac = Fraction(k).limit_denominator(8)
    if math.isclose(k, float(frac), rel_tol=1e-9) and frac.denominator <= 8:
        return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"
    return f"{k:.4g}"


def _partial(n: str, m: torch.Tensor, a: torch.Tensor, explains, case: Case) -> Kind:
    """Right except on some rows, columns or elements: which."""
    allowed = tolerance(a, case.dtype)
    wrong = (m - a).abs() > allowed
    count, total = int(wrong.sum()), wrong.numel()
    if 0 < count < total:
        if wrong.dim() == 2:
            rows = wrong.any(1).nonzero().reshape(-1).tolist()
            cols = wrong.any(0).nonzero().reshape(-1).tolist()
            if len(rows) < wrong.shape[0] and bool(wrong[rows].all()):
                return Kind(n, "partial", None, f"the manual gradient is autograd's except in rows {_few(rows)} of "
                                                f"{wrong.shape[0]} (partial)")
            if len(cols) < wrong.shape[1] and bool(wrong[:, cols].all()):
                return Kind(n, "partial", None, f"the manual gradient is autograd's except in columns {_few(cols)} "
                                                f"of {wrong.shape[1]} (partial)")
        where = [tuple(i) for i in wrong.nonzero()[:3].tolist()]     # not all of them: millions at a wide layer
        return Kind(n, "partial", None, f"the manual gradient is autograd's except at {count} of {total} elements, "
                                        f"e.g. {', '.join(map(str, where))} (partial)")
    return Kind(n, "other", None, "no simple relation to autograd's gradient (other)")


def _few(items: list[int]) -> str:
    return str(items) if len(items) <= 6 else f"[{', '.join(map(str, items[:6]))}, ...]"


# -- where ------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Assigned:
    file: str
    line: int
    name: str
    value: object          # a copy of what was assigned (a tensor or an array)
    order: int
    ident: int = 0         # the object's id: an in-place change keeps it, a new assignment does not
    argument: bool = False  # an argument of the function, as it came in


class _Tracer:
    """Records, for the frames of the user's own files, each local that a line assigns or
    changes in place (tensors and arrays), in the order the lines ran."""

    def __init__(self, keep_graph: bool = False, every_tensor: bool = False):
        self.records: list[_Assigned] = []
        self.keep_graph = keep_graph     # the forward's own tensors, for autograd; else copies
        self.every_tensor = every_tensor  # masks and indices too, not only floating-point values
        self.seen: dict[int, dict[str, tuple]] = {}
        self.where: dict[int, tuple[str, int]] = {}
        self.outer: set[int] = set()
        self.returns: list[tuple[str, int]] = []     # where the user's outermost functions returned
        self.containers: list[tuple[str, int, str, dict]] = []   # (file, line, name, {slot: copy}) as they change
        self.ran: set[tuple[str, int]] = set()       # every line of the user's code that ran
        self.user = user_code

    def __call__(self, frame, event, arg):
        if event == "call" and self.user(frame.f_code.co_filename):
            caller = frame.f_back
            if caller is None or not self.user(caller.f_code.co_filename):
                self.outer.add(id(frame))      # the user's own function the harness called
            return self.local
        return None

    def local(self, frame, event, arg):
        key = id(frame)
        if event in ("line", "return"):
            if key in self.where:
                self._changed(frame, *self.where[key])
            self.where[key] = (frame.f_code.co_filename, frame.f_lineno)
            self.ran.add(self.where[key])
            if event == "return":
                if key in self.outer:
                    self.returns.append((frame.f_code.co_filename, frame.f_lineno))
                    self.outer.discard(key)
                self.where.pop(key, None)
                self.seen.pop(key, None)
        return self.local

    def _changed(self, frame, file: str, line: int) -> None:
        before = self.seen.setdefault(id(frame), {})
        for name, value in list(frame.f_locals.items()):
            if type(value) in (dict, list, tuple) and not self.keep_graph:
                self._container(before, file, line, name, value)
                continue
            if isinstance(value, torch.Tensor) and (value.is_floating_point() or self.every_tensor):
                stamp = (id(value), value._version)
            elif isinstance(value, np.ndarray) and (value.dtype.kind == "f" or
                                                    (self.every_tensor and value.dtype.kind in "biu")):
                stamp = (id(value), hash(value.tobytes()) if value.size <= 100_000 else value.size)
            else:
                continue
            if before.get(name) == stamp:
                continue
            code = frame.f_code
            argument = name not in before and name in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
            before[name] = stamp
            kept = value if self.keep_graph and isinstance(value, torch.Tensor) else _copy(value)
            self.records.append(_Assigned(file, line, name, kept, len(self.records), id(value), argument))

    def _container(self, before: dict, file: str, line: int, name: str, value) -> None:
        """A dict, tuple or list of gradients: each change of what it holds, slot by slot."""
        items = value.items() if isinstance(value, dict) else enumerate(value)
        slots = {k: v for k, v in items if isinstance(v, (torch.Tensor, np.ndarray))}
        if not slots or len(slots) > 64:
            return
        stamp = ("container", id(value), tuple((k, id(v), getattr(v, "_version", None)) for k, v in slots.items()))
        if before.get(name) == stamp:
            return
        before[name] = stamp
        self.containers.append((file, line, name, {k: _copy(v) for k, v in slots.items()}))

    def run(self, fn, *args):
        old = sys.gettrace()
        sys.settrace(self)
        try:
            return fn(*args)
        finally:
            sys.settrace(old)


def _copy(value):
    """A float64 copy of a floating-point tensor or array; other dtypes keep theirs."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu")
        return (t.to(torch.float64) if t.is_floating_point() else t).clone()
    arr = np.array(value, copy=True)
    return torch.from_numpy(arr.astype(np.float64) if arr.dtype.kind == "f" else arr)


_GRAD_NAME = [re.compile(p) for p in (r"^grad_(?P<x>\w+)$", r"^(?P<x>\w+)_grad$", r"^d_?(?P<x>\w+)$",
                                      r"^g_?(?P<x>\w+)$", r"^grad(?P<x>[A-Z]\w*)$")]
_OUTPUT_NAMES = ("out", "output", "y", "y_pred", "scores", "loss", "logits", "top")


def _gradient_of(name: str) -> list[str]:
    """The names ``name`` says it is the gradient of: grad_h, h_grad, dh, d_h, gh -> h."""
    found = []
    for pattern in _GRAD_NAME:
        hit = pattern.match(name)
        if hit and hit.group("x"):
            found.append(hit.group("x"))
    return found


def _locate(model: Bound, case: Case, p: Tensors, d: Tensors, g, manual, auto, failing: list[str]):
    """The first assignment of the backward that is not the gradient it stands for."""
    truth = _forward_gradients(model, p, d, g)
    for n in model.differentiable:
        truth.setdefault(n, auto[n].detach().to("cpu", torch.float64))
    tracer = _Tracer(every_tensor=True)
    with torch.no_grad():
        out, cache = model.forward(p, d)
        tracer.run(model.backward, p, d, cache, g)
    scalar_g = float(g) if g.dim() == 0 else None
    floats = [r for r in tracer.records if r.value.is_floating_point()]
    # what the backward returns as each failing tensor's gradient is that gradient, whatever its name
    returned = {}
    for n in failing:
        final = manual[n].detach().to("cpu", torch.float64)
        hit = [r for r in floats if tuple(r.value.shape) == tuple(final.shape) and torch.equal(r.value, final)]
        if hit:
            returned[(hit[-1].file, hit[-1].name)] = n
    history: dict[tuple[str, str, int], list[_Assigned]] = {}     # one object's successive values
    last: dict[tuple[str, str], int] = {}
    for r in floats:
        history.setdefault((r.file, r.name, r.ident), []).append(r)
        last[(r.file, r.name)] = r.order
    misreturned: list[tuple[_Assigned, str, str]] = []
    status: dict[str, tuple[bool, int]] = {}
    computed = set()            # names the backward itself assigned (not its arguments as they came)
    without_g: list = []        # assignments right only for an upstream gradient of 1
    for rec in floats:
        value = rec.value
        if not rec.argument:
            computed.add(rec.name)
        claimed = [x for x in _gradient_of(rec.name) if x in truth and tuple(truth[x].shape) == tuple(value.shape)]
        if rec.name in ("dout", "grad_output", "grad_out", "g") and "output" in truth:
            claimed.append("output")
        as_returned = returned.get((rec.file, rec.name))
        if claimed and as_returned and as_returned != claimed[0] and last[(rec.file, rec.name)] == rec.order \
                and _matches(value, truth[claimed[0]], case, scalar_g):
            misreturned.append((rec, claimed[0], as_returned))     # right, and returned in another's place
        elif as_returned:
            claimed.insert(0, as_returned)
        line = None if rec.argument else rec.line
        if not claimed:
            if any(_matches(value, t, case, None) for t in truth.values() if tuple(t.shape) == tuple(value.shape)):
                status[rec.name] = (True, line)
            continue
        target = claimed[0]
        if _matches(value, truth[target], case, None):
            status[rec.name] = (True, line)
            without_g = [(r, t) for r, t in without_g if r.name != rec.name]    # g came in after all
            continue
        if _matches(value, truth[target], case, scalar_g):
            status[rec.name] = (True, line)      # right for g = 1: g may come in later
            without_g.append((rec, target))
            continue
        if last[(rec.file, rec.name)] > rec.order:
            continue        # changed again later (grad_h = ...clone(); grad_h[h < 0] = 0): judged as it ends up
        states = history[(rec.file, rec.name, rec.ident)]
        rec = _first_with_final_error(states, truth[target], case, scalar_g)
        missed = _never_written(states, rec, truth[target], case, target, tracer.ran)
        if missed is not None:
            return missed, None
        code = _code(rec.file, rec.line)
        inputs = [w for w in _names(code) if w != rec.name and w in status]
        if any(not status[w][0] for w in inputs):
            continue        # an input is already wrong: that line was reported first
        helper = _recomputed(tracer, rec, code, truth)
        if helper is not None:
            return helper, None
        what = "the gradient of the output" if target == "output" else f"the gradient of {target}"
        origin = _origin(rec, truth[target], floats, truth, p, d, case)
        if origin is not None:
            return _from_origin(origin, rec, what + _defined(target, truth)), None
        right = next((f"{_input(w, status, rec.file)} is right" for w in inputs if status[w][0]), "")
        return Location(rec.file, rec.line, rec.name, code, what + _defined(target, truth), right), None
    if without_g and not any(_matches(manual[n].detach().to("cpu", torch.float64), auto[n].detach().to(
            "cpu", torch.float64), case, None) for n in failing):
        rec, target = without_g[0]
        return Location(rec.file, rec.line, rec.name, _code(rec.file, rec.line),
                        f"the gradient of {target}{_defined(target, truth)}: it is that for g = 1, "
                        "and g is never multiplied in"), None
    if misreturned and tracer.returns:
        rec, target, n = misreturned[0]
        file, line, slot = _built(tracer, n, manual[n], *tracer.returns[-1])
        return Location(file, line, slot, _code(file, line), f"the gradient of {n}",
                        f"it returns {rec.name} ({_at(rec.file, rec.line)}), which is the gradient of {target}"), None
    if any(n in computed for n in status) and all(ok for ok, _ in status.values()) and tracer.returns:
        # every gradient it computed on the way is right: the mistake is in what it returns,
        # or in the line that put it where it returns it from
        n = failing[0]
        file, line, slot = _built(tracer, n, manual[n], *tracer.returns[-1])
        code = _code(file, line)
        right = next((f"{_input(w, status, file)} is right" for w in _names(code) if w in status), "")
        return Location(file, line, slot, code, f"the gradient of {n}", right), None
    return None, ("could not localise: no assignment of the backward names a gradient of the forward's "
                  "steps, or matches one by value")


def _built(tracer: _Tracer, n: str, final: torch.Tensor, file: str, line: int) -> tuple[str, int, str]:
    """Where the returned gradient of ``n`` was put in the dict, tuple or list that the
    backward returns (``grads = {...}`` a line before ``return grads``): that line and the
    slot; else the return line itself."""
    returned = [name for name in _names(_code(file, line)) if name != "return"]
    final = final.detach().to("cpu", torch.float64)
    hits = [c for c in tracer.containers if c[0] == file and c[2] in returned and c[1] < line]
    for cfile, cline, name, slots in reversed(hits):
        for key, value in slots.items():
            if tuple(value.shape) == tuple(final.shape) and torch.equal(value, final):
                return cfile, cline, f"{name}[{key!r}]"
    return file, line, n


def _origin(wrong: _Assigned, want: torch.Tensor, floats: list[_Assigned], truth: _Truth, p: Tensors,
            d: Tensors, case: Case) -> tuple[_Assigned, list[_Assigned]] | None:
    """The line where a wrong value first goes wrong, where that is before the line that
    assigns it.  Two steps, by value only:

    - a line that only rearranges one value that nothing confirms (a slice, a flip, a
      transpose: every element it holds is one of that value's) cannot go wrong unless that
      value already holds the right gradient as a block; so the walk moves up to that value
      (``gw = gw.flip(-1)`` before ``gw = gw[:, :, 1:]``);
    - a line that computes with a value that is a rearrangement of a known one (a parameter,
      a value of the forward) and that nothing confirms: that rearrangement goes wrong first
      (a kernel that is not flipped, before the convolution and the slice that use it).

    Returns (that line, the lines between); None where the wrong line is its own origin."""
    known = [v.to(torch.float64) for v in (*getattr(truth, "forward_values", {}).values(),
                                           *(x for x, _ in getattr(truth, "named", {}).values()),
                                           *(t.detach().to("cpu") for t in (*p.values(), *d.values())
                                             if isinstance(t, torch.Tensor)))
             if isinstance(v, torch.Tensor) and v.is_floating_point()]
    named = getattr(truth, "named", {})

    def confirmed(r: _Assigned) -> bool:
        v = r.value
        if r.argument or _holds(v, want, case) or any(
                tuple(t.shape) == tuple(v.shape) and _matches(v, t, case, None) for t in truth.values()):
            return True
        return r.name in named and tuple(named[r.name][0].shape) == tuple(v.shape) and _matches(
            v, named[r.name][0].to(torch.float64), case, None)

    def inputs(r: _Assigned) -> list[_Assigned]:
        found = []
        for name in dict.fromkeys(_names(_code(r.file, r.line))):
            prior = [x for x in floats if x.name == name and x.file == r.file and x.order < r.order]
            if prior:
                found.append(prior[-1])
        return found

    here, between = wrong, []
    for _ in range(32):
        up = [x for x in inputs(here) if not confirmed(x) and _rearranged(here.value, x.value)]
        if len(up) != 1:
            break
        between.append(here)
        here = up[0]
    given = [t.detach().to("cpu", torch.float64) for t in (*p.values(), *d.values())
             if isinstance(t, torch.Tensor) and t.is_floating_point()]
    for x in inputs(here):
        if confirmed(x) or x.argument:
            continue
        # a parameter taken through a call that leaves it as it is at this size (a transpose of
        # 1 x 1 dims, a flip left out) counts too: the same call rearranges it at other sizes
        computed = not _read_as_is(_code(x.file, x.line))
        if any(_rearranged(x.value, k) for k in known) or (computed and any(
                tuple(k.shape) == tuple(x.value.shape) and torch.equal(k, x.value) for k in given)):
            between.append(here)
            here = x
            break
    if here is wrong:
        return None
    return here, sorted((x for x in between if x is not wrong), key=lambda x: x.order)


def _rearranged(value: torch.Tensor, source: torch.Tensor) -> bool:
    """Every element of ``value`` is one of ``source``'s, bit for bit, and ``value`` is not
    ``source`` itself: a slice, flip, transpose or permutation of it.  A constant proves
    nothing (zeros are in most tensors)."""
    if not value.is_floating_point() or value.numel() < 2 or source.numel() < 2:
        return False
    flat = value.reshape(-1)
    if bool((flat == flat[0]).all()):
        return False
    if tuple(value.shape) == tuple(source.shape) and torch.equal(value, source.to(value.dtype)):
        return False
    return bool(torch.isin(flat, source.to(value.dtype).reshape(-1)).all())


def _read_as_is(code: str) -> bool:
    """An assignment that computes nothing: ``h, y = cache``, ``(x,) = ctx.saved_tensors``."""
    try:
        tree = ast.parse(code.strip())
    except SyntaxError:
        return False
    node = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(node, ast.Assign):
        return False
    return all(isinstance(n, (ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.List, ast.Load, ast.Constant,
                              ast.Slice)) for n in ast.walk(node.value))


def _holds(value: torch.Tensor, want: torch.Tensor, case: Case) -> bool:
    """``value`` holds ``want`` as a block (a padded gradient, before the slice that takes it)."""
    if value.dim() != want.dim() or value.dim() == 0 or tuple(value.shape) == tuple(want.shape) or any(
            v < w for v, w in zip(value.shape, want.shape)):
        return False
    count = math.prod(v - w + 1 for v, w in zip(value.shape, want.shape)) * want.numel()
    if count > 4_000_000:
        return False
    windows = value
    for axis, size in enumerate(want.shape):
        windows = windows.unfold(axis, size, 1)
    windows = windows.reshape(-1, *want.shape)
    allowed = tolerance(want, case.dtype)
    return bool(((windows - want).abs() <= allowed).flatten(1).all(1).any())


def _from_origin(origin: tuple[_Assigned, list[_Assigned]], wrong: _Assigned, expected: str) -> Location:
    first, between = origin
    through = f", through {', '.join(f'{x.name} ({_at(x.file, x.line)})' for x in between)}" if between else ""
    why = (f"{wrong.name} ({_at(wrong.file, wrong.line)}) is not {expected}; it comes from {first.name}, "
           f"set here{through}: a rearrangement that nothing confirms, the first line that can be wrong")
    return Location(first.file, first.line, first.name, _code(first.file, first.line), expected, why=why)


def _never_written(states: list[_Assigned], first: _Assigned, want: torch.Tensor, case: Case,
                   target: str, ran: set) -> Location | None:
    """A tensor made once (``zeros_like``) and then written in place, whose wrong elements all
    keep the value it was made with: the mistake is a write that never reaches them (a loop
    that starts one step late, a slice one short), not the line that made it.  The loop
    around the writes, or the write itself where there is no loop.  Where no write ran at
    all (the loop's one step skipped at size 1), the writes the code holds for it."""
    if first is not states[0]:
        return None
    start, final = states[0].value, states[-1].value
    if tuple(start.shape) != tuple(want.shape):
        return None
    wrong = (final - want).abs() > tolerance(want, case.dtype)
    if not bool(wrong.any()) or bool(start[wrong].any()):
        return None         # made with values of its own (ones, not zeros): the line that made it
    if len(states) > 1:
        if bool(wrong.all()) or any(not torch.equal(s.value[wrong], start[wrong]) for s in states[1:]):
            return None         # a write reached them: its line is the one that went wrong
        write = states[1]
        file, line = write.file, write.line
    else:
        file = states[0].file
        line = next((w for w in _writes_to(file, states[0].line, states[0].name) if (file, w) not in ran), None)
        if line is None:
            return None
    write = dataclasses.replace(states[0], file=file, line=line)
    loop = _enclosing_loop(write.file, write.line)
    if len(states) == 1 and loop is None:
        return None
    where = [tuple(i) for i in wrong.nonzero().tolist()[:3]]
    ran_at_all = "" if len(states) > 1 else ", which never ran"
    why = (f"{write.name} is not the gradient of {target} at {', '.join(map(str, where))}"
           f"{' ...' if int(wrong.sum()) > 3 else ''}: those elements keep the value it was made with "
           f"({_at(states[0].file, states[0].line)}); no write reaches them ({_at(write.file, write.line)}"
           f"{ran_at_all})")
    line = loop or write.line
    return Location(write.file, line, write.name, _code(write.file, line), f"the gradient of {target}", why=why)


def _writes_to(file: str, made: int, name: str) -> list[int]:
    """Lines after ``made``, in the function that holds it, that write into ``name[...]``."""
    try:
        tree = ast.parse("".join(linecache.getlines(file)))
    except (SyntaxError, ValueError):
        return []
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
             and n.lineno <= made <= (n.end_lineno or n.lineno)]
    if not funcs:
        return []
    func = max(funcs, key=lambda n: n.lineno)
    lines = []
    for n in ast.walk(func):
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AugAssign) else []
        if any(isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == name
               for t in targets) and n.lineno > made:
            lines.append(n.lineno)
    return sorted(lines)


def _enclosing_loop(file: str, line: int) -> int | None:
    """The line of the innermost ``for`` or ``while`` around ``line``, or None."""
    try:
        tree = ast.parse("".join(linecache.getlines(file)))
    except (SyntaxError, ValueError):
        return None
    loops = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While, ast.AsyncFor))
             and n.lineno < line <= (n.end_lineno or n.lineno)]
    return max(loops) if loops else None


def _first_with_final_error(states: list[_Assigned], want: torch.Tensor, case: Case, scalar_g) -> _Assigned:
    """Of the successive values of one object (``dW = ...``, ``dW += reg * W``, ``dW *= dout``),
    the first of the run at the end whose error is already the final one (up to a scalar
    ``g``): where it went wrong."""
    def error(value: torch.Tensor) -> list[torch.Tensor]:
        errs = [value - want]
        if scalar_g not in (None, 0.0):
            errs.append(value * scalar_g - want)
        return errs

    final = states[-1].value - want
    allowed = tolerance(want, case.dtype)
    first = states[-1]
    for state in reversed(states):       # the run of values at the end that already carry the final error
        if not (tuple(state.value.shape) == tuple(want.shape) and any(
                bool(((e - final).abs() <= allowed).all()) for e in error(state.value))):
            break
        first = state
    return first


def _recomputed(tracer: _Tracer, wrong: _Assigned, code: str, truth: _Truth) -> Location | None:
    """An input of the wrong line that the backward recomputes from the forward (a mask, a
    causal pattern) and that differs from the forward's own value of that name."""
    forward = getattr(truth, "named", {})
    for name in _names(code):
        if name == wrong.name or name not in forward:
            continue
        mine = [r for r in tracer.records if r.name == name and r.file == wrong.file and r.order < wrong.order]
        if not mine:
            continue
        rec, theirs = mine[-1], forward[name]
        if tuple(rec.value.shape) == tuple(theirs[0].shape) and not torch.allclose(
                rec.value.double(), theirs[0].double(), rtol=1e-9, atol=1e-12):
            return Location(rec.file, rec.line, name, _code(rec.file, rec.line),
                            f"the forward's {name} (at {_at(*theirs[1])}), which it recomputes",
                            f"{wrong.name} ({_at(wrong.file, wrong.line)}) goes wrong with it")
    return None


def _defined(target: str, truth) -> str:
    where = getattr(truth, "lines", {}).get(target)
    return f", defined at {_at(*where)}" if where else ""


def _at(file: str, line: int) -> str:
    """``examples/wrong.py:11``: every line a message names comes with its file."""
    return f"{shown_path(file)}:{line}"


def _input(name: str, status: dict, rec_file: str) -> str:
    """``gy (examples/wrong.py:18)``, or ``g (as passed in)`` for an argument of the backward."""
    line = status[name][1]
    return f"{name} (as passed in)" if line is None else f"{name} ({_at(rec_file, line)})"


class _Truth(dict):
    """Name -> float64 gradient of that forward intermediate; ``lines``: where it was assigned
    (file, line); ``named``: every tensor the forward's own code named, with where (masks too)."""

    lines: dict[str, tuple[str, int]]
    named: dict[str, tuple[torch.Tensor, tuple[str, int]]]
    forward_values: dict[str, torch.Tensor]      # what the forward computed, named or not (float64)


class _Outputs(torch.overrides.TorchFunctionMode):
    """Every tensor an op of the reference computes, named or not."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.requires_grad:
            self.seen.append(out)
        return out


def _through_backward(loss: torch.Tensor, wanted: list[torch.Tensor]) -> list:
    """The gradients of ``loss`` for ``wanted`` (the forward's own tensors, the graph kept)
    taken with ``.backward()``, as training takes them, where ``torch.autograd.grad`` is
    refused (a reentrant checkpoint).  Every leaf among them is the harness's own copy."""
    for t in wanted:
        t.grad = None
        if not t.is_leaf:
            t.retain_grad()
    loss.backward(retain_graph=True)
    grads = [None if t.grad is None else t.grad.detach() for t in wanted]
    for t in wanted:
        t.grad = None
    return grads


def _forward_gradients(model: Bound, p: Tensors, d: Tensors, g) -> _Truth:
    """Every named tensor the (differentiated) forward computed, and autograd's gradient of
    ``<g, output>`` with respect to it; numpy forwards' and Functions' locals get the gradient
    of the tensor of the reference with the same values."""
    leaves, P, D = oracles.on_leaves(model, p, d)
    tracer = _Tracer(keep_graph=True)
    ops = _Outputs()
    truth = _Truth()
    truth.lines, truth.named = {}, {}
    with torch.enable_grad():
        with ops:
            out = tracer.run(oracles.differentiated, model, P, D)
        seen = {}
        for rec in tracer.records:
            t = rec.value
            if isinstance(t, torch.Tensor) and t.requires_grad and rec.name not in seen:
                seen[rec.name] = (t, (rec.file, rec.line))
        if not (isinstance(out, torch.Tensor) and out.requires_grad):
            return truth
        unnamed = [t for t in ops.seen if all(t is not v for v, _ in seen.values())]
        names = list(seen)
        wanted = [seen[n][0] for n in names] + unnamed
        try:
            grads = torch.autograd.grad((out * g).sum(), wanted, allow_unused=True, retain_graph=True)
        except RuntimeError as e:
            if not oracles.refuses_grad(e):
                raise
            grads = _through_backward((out * g).sum(), wanted)
    values = {}
    for n, gr in zip(names, grads):
        if gr is not None:
            truth[n] = gr.detach().to("cpu", torch.float64)
            truth.lines[n] = seen[n][1]
            values[n] = seen[n][0].detach().to("cpu", torch.float64)
    for i, (t, gr) in enumerate(zip(unnamed, grads[len(names):])):
        if gr is not None:
            truth[f"<op {i}>"] = gr.detach().to("cpu", torch.float64)
            values[f"<op {i}>"] = t.detach().to("cpu", torch.float64)
    truth["output"] = g.detach().to("cpu", torch.float64)
    truth.forward_values = values
    if model.reference is None:
        truth.named = {r.name: (_copy(r.value), (r.file, r.line)) for r in tracer.records}
    else:
        _names_from_forward(model, p, d, truth, values)
    return truth


def _names_from_forward(model: Bound, p: Tensors, d: Tensors, truth: _Truth, values: dict) -> None:
    """The forward's own locals (numpy, or a Function's) named after the reference's tensor
    with the same values; every local it names kept in ``truth.named``."""
    tracer = _Tracer(every_tensor=True)
    with torch.no_grad():
        tracer.run(model.forward, p, d)
    for rec in tracer.records:
        truth.named.setdefault(rec.name, (rec.value, (rec.file, rec.line)))
        if rec.name in truth or not rec.value.is_floating_point():
            continue
        for ref_name, v in values.items():
            if tuple(v.shape) == tuple(rec.value.shape) and torch.allclose(rec.value, v, rtol=1e-9, atol=1e-12):
                truth[rec.name] = truth[ref_name]
                truth.lines[rec.name] = (rec.file, rec.line)
                break


def _matches(value: torch.Tensor, want: torch.Tensor, case: Case, scalar_g: float | None) -> bool:
    """The same values within the dtype's tolerance, or up to the scalar upstream gradient
    (code that multiplies by g at the end)."""
    if tuple(value.shape) != tuple(want.shape):
        return False
    allowed = tolerance(want, case.dtype)
    if bool(((value - want).abs() <= allowed).all()):
        return True
    if scalar_g not in (None, 0.0):
        scaled = want / scalar_g
        return bool(((value - scaled).abs() <= tolerance(scaled, case.dtype)).all())
    return False


def _code(file: str, line: int) -> str:
    """The source line, its comment left out."""
    text = linecache.getline(file, line).strip()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return text
    comment = next((t for t in tokens if t.type == tokenize.COMMENT), None)
    return text[:comment.start[1]].rstrip() if comment else text


def _names(code: str) -> list[str]:
    try:
        return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.NAME]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return re.findall(r"[A-Za-z_]\w*", code)
