"""The mistake, by value: the simplest relation between the manual gradient M and autograd's
A, over the whole tensor, within the case's own per-element bound.

    ignores_upstream  M does not move when the upstream gradient g does, where A does
    zero              M = 0 where A is not
    conjugate         M = conj(A), for a complex tensor (checked in its real view: the
                      imaginary part's sign flipped): the unconjugated derivative
    sign              M = -A
    scale             M = k·A, with k named where it is a simple fraction or a dim
    transpose         M = Aᵀ (a square tensor, or the same elements reshaped)
    swapped           M = A of another tensor of the same shape
    permuted          M = A with two (or more) axes swapped, of itself, of the upstream gradient
                      g, or of an input: the axes are named (a B×T read as T×B)
    partial           M = A except on some rows or columns, or a few elements
    other             none of these
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping
from fractions import Fraction

import torch

from ..check.case import Case, conjugate
from ..record.spec import Tensors
from ..verdict import oracles, rules
from ..verdict.tolerance import bound as tolerance
from .result import Mistake


def classify(n: str, model, case: Case, p: Tensors, d: Tensors, cache, g, manual, auto, bounds,
             deadline: float | None = None) -> Mistake:
    """The mistake of tensor ``n``'s manual gradient against autograd's, at ``case``
    (``bounds``: the check's own per-element bounds, where it has them); ``deadline``
    (``time.perf_counter()``) stops the search over axis orders."""
    m = manual[n].detach().to("cpu", torch.float64)
    a = auto[n].detach().to("cpu", torch.float64)
    given = bounds.get(n)

    def explains(r: torch.Tensor) -> bool:
        allowed = tolerance(r, case.dtype)
        if given is not None and given.shape == allowed.shape:
            allowed = torch.maximum(allowed, given)
        return r.shape == m.shape and bool(((m - r).abs() <= allowed).all())

    if float(a.abs().max()) > 0 and explains(torch.zeros_like(a)):
        return Mistake(n, "zero", 0.0, "the manual gradient is 0 where autograd's is not (zero)")
    if _ignores_upstream(n, model, p, d, cache, g, m, a, case):
        return Mistake(n, "ignores_upstream", None, "the manual gradient does not change with the upstream gradient "
                                                     "g, where autograd's does (ignores_upstream): is g multiplied in?")
    if n in (getattr(model, "views", None) or ()) and _unconjugated(n, model, p, d, g, a, explains):
        return Mistake(n, "conjugate", None, f"the manual gradient of {n} is the conjugate of autograd's: "
                       "torch expects the conjugate Wirtinger derivative of a complex tensor, dL/dx + i·dL/dy "
                       "(what torch.autograd.grad returns), and this is the unconjugated one (conjugate): "
                       "multiply g by the conjugate of the local derivative (g * f'(z).conj(), not g * f'(z))")
    if explains(-a):
        return Mistake(n, "sign", -1.0, "the manual gradient is −1 × autograd (sign)")
    k = _factor(m, a)
    if k is not None and explains(k * a):
        named = _named_factor(k, case.dims)
        dim = next((name for name, size in case.dims.items()
                    if size > 1 and (math.isclose(k, size, rel_tol=rules.FACTOR_DIM_RTOL)
                                     or math.isclose(k, 1 / size, rel_tol=rules.FACTOR_DIM_RTOL))),
                   None)
        return Mistake(n, "scale", k, f"the manual gradient is {_show(k)} × autograd (scale{named})",
                       f"dim {dim} {k > 1}" if dim else _show(k))
    if a.dim() == 2 and a.shape[0] == a.shape[1] and a.shape[0] > 1 and explains(a.T):
        return Mistake(n, "transpose", None, "the manual gradient is autograd's transposed (transpose)")
    if a.dim() == 2 and a.numel() > 1 and explains(a.T.reshape(a.shape)) and not explains(a):
        return Mistake(n, "transpose", None, "the manual gradient holds autograd's elements transposed, reshaped "
                                             "(transpose)")
    for other, t in auto.items():
        if other != n and tuple(t.shape) == tuple(a.shape) and explains(t.detach().to("cpu", torch.float64)):
            return Mistake(n, "swapped", None, f"the manual gradient of {n} is autograd's gradient of {other} "
                                               f"(swapped): two gradients returned in each other's place?")
    permuted = _permuted(n, model, case, p, d, g, m, a, explains, deadline)
    if permuted is not None:
        return permuted
    return _partial(n, m, a, explains, case)


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
              deadline: float | None) -> Mistake | None:
    """M is A with axes swapped: of the gradient itself, of the upstream gradient g (autograd
    again with g's axes reordered), or of one input (autograd again with that input's axes
    reordered).  Two-axis tensors are the transpose mistake's; the identity and orders that
    leave a tensor as it is (axes of size 1) are skipped."""
    def late() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    record = getattr(model, "model", model)
    shapes = {**getattr(record, "params", {}), **getattr(record, "data", {})}
    if 3 <= a.dim() <= rules.PERMUTED_RANK:
        for order in _orders(a.dim()):
            r = _reordered(a, order)
            if not torch.equal(r, a) and explains(r):
                return Mistake(n, "permuted", None, f"the manual gradient is autograd's with "
                               f"{_axes(order, tuple(a.shape), shapes.get(n), case.dims)} (permuted)", f"{n} {order}")
    if a.dim() < 2:
        # a vector from a square g read transposed is also a sum over the wrong axis
        # (np.sum(dout, axis=1) for axis=0): nothing tells the two apart, so neither is named
        return None
    candidates = []
    if isinstance(g, torch.Tensor) and 2 <= g.dim() <= rules.PERMUTED_RANK:
        candidates.append(("the upstream gradient g", None, g))
    for name, t in {**p, **d}.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and 2 <= t.dim() <= rules.PERMUTED_RANK:
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
            except Exception:     # the model at a reordered input: not this mistake
                continue
            other = auto.get(n) if isinstance(auto, Mapping) else None
            if other is None or not explains(other.detach().to("cpu", torch.float64)):
                continue
            axes = _axes(order, tuple(t.shape), shapes.get(name) if name else g_names, case.dims)
            read = "g" if name is None else name
            return Mistake(n, "permuted", None, f"the manual gradient is autograd's for {what} with {axes} "
                           f"(permuted): {read} read in another axis order?", f"{read} {order}")
    return None


def _unconjugated(n, model, p, d, g, a, explains) -> bool:
    """M is the unconjugated derivative of complex tensor ``n``: where torch's gradient is
    ``J^H g`` (``g * f'(z).conj()`` element-wise), M is ``J^T g`` (``g * f'(z)``), the
    conjugate of autograd's at the conjugate upstream gradient; where the output is real
    (``g`` real), simply the conjugate of autograd's."""
    if explains(conjugate(a)):
        return True
    g2 = model.conjugated(g)
    if g2 is None:
        return False
    a2 = oracles.autograd(model, p, d, g2)[n].detach().to("cpu", torch.float64)
    return explains(conjugate(a2))


def _ignores_upstream(n, model, p, d, cache, g, m, a, case) -> bool:
    """Called again with another upstream gradient: the manual one stays, autograd's moves."""
    if g.dim():
        gen = torch.Generator().manual_seed(case.seed ^ rules.SALT_IGNORES_UPSTREAM)
        g2 = torch.randn(g.shape, generator=gen, dtype=torch.float64).to(g.dtype) + g
    else:
        g2 = g * rules.SCALAR_UPSTREAM_FACTOR
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
    return k if math.isfinite(k) and abs(k - 1) > rules.FACTOR_NOT_ONE and k != 0 else None


def _named_factor(k: float, dims: Mapping[str, int]) -> str:
    """``×0.5``, ``×N (N = 8): ...``: what a factor usually means."""
    for name, size in dims.items():
        if size > 1 and math.isclose(k, size, rel_tol=rules.FACTOR_DIM_RTOL):
            return f" ×{name} ({name} = {size}): a mean taken as a sum?"
        if size > 1 and math.isclose(k, 1 / size, rel_tol=rules.FACTOR_DIM_RTOL):
            return f" ×1/{name} ({name} = {size}): a sum divided by {name}, as if it were a mean?"
    frac = Fraction(k).limit_denominator(rules.FACTOR_MAX_DENOMINATOR)
    if frac.denominator <= rules.FACTOR_MAX_DENOMINATOR and abs(frac.numerator) <= rules.FACTOR_MAX_NUMERATOR \
            and math.isclose(k, float(frac), rel_tol=rules.FACTOR_FRACTION_RTOL):
        text = f"{frac.numerator}" if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"
        why = {Fraction(1, 2): ": a missing ½?", Fraction(2): ": a factor 2 too many?",
               Fraction(-1, 2): ": a sign and a ½?"}.get(frac, "")
        return f" ×{text}{why}"
    return ""


def _show(k: float) -> str:
    """A factor as a simple fraction where it is one, else to four digits."""
    frac = Fraction(k).limit_denominator(rules.FACTOR_MAX_DENOMINATOR)
    if math.isclose(k, float(frac), rel_tol=rules.FACTOR_FRACTION_RTOL) and \
            frac.denominator <= rules.FACTOR_MAX_DENOMINATOR:
        return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"
    return f"{k:.4g}"


def _partial(n: str, m: torch.Tensor, a: torch.Tensor, explains, case: Case) -> Mistake:
    """Right except on some rows, columns or elements: which."""
    allowed = tolerance(a, case.dtype)
    wrong = (m - a).abs() > allowed
    count, total = int(wrong.sum()), wrong.numel()
    if 0 < count < total:
        if wrong.dim() == 2:
            rows = wrong.any(1).nonzero().reshape(-1).tolist()
            cols = wrong.any(0).nonzero().reshape(-1).tolist()
            if len(rows) < wrong.shape[0] and bool(wrong[rows].all()):
                return Mistake(n, "partial", None, f"the manual gradient is autograd's except in rows {_few(rows)} "
                                                   f"of {wrong.shape[0]} (partial)")
            if len(cols) < wrong.shape[1] and bool(wrong[:, cols].all()):
                return Mistake(n, "partial", None, f"the manual gradient is autograd's except in columns "
                                                   f"{_few(cols)} of {wrong.shape[1]} (partial)")
        # not all of them: millions at a wide layer
        where = [tuple(i) for i in wrong.nonzero()[:rules.DIAGNOSIS_SHOWN_ELEMENTS].tolist()]
        return Mistake(n, "partial", None, f"the manual gradient is autograd's except at {count} of {total} "
                                           f"elements, e.g. {', '.join(map(str, where))} (partial)")
    return Mistake(n, "other", None, "no simple relation to autograd's gradient (other)")


def _few(items: list[int]) -> str:
    """Rows or columns as a list, the first few of a long one."""
    shown = rules.DIAGNOSIS_SHOWN_INDICES
    return str(items) if len(items) <= shown else f"[{', '.join(map(str, items[:shown]))}, ...]"
