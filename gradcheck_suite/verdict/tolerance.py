"""Tolerances from dtype and measured magnitudes; element-wise comparison; the worst elements."""
from __future__ import annotations

import dataclasses
import math

import torch

from . import rules

#: a complex dtype's real counterpart: its parts' dtype, whose resolution and rules it takes
REAL_COUNTERPART = {"complex64": "float32", "complex128": "float64"}


def real_dtype(dtype: str) -> str:
    """The dtype whose rules ``dtype`` takes: the real counterpart of a complex one, else itself."""
    return REAL_COUNTERPART.get(dtype, dtype)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """``|manual - reference| <= rtol * |reference| + max(atol * max|reference|,
    noise * rounding, computation)``.

    ``atol`` is relative to the tensor's largest element, so the bound scales with the
    values; ``rounding`` is the autograd gradient's own measured rounding error
    (its distance from a float64 autograd run), which covers another summation order;
    ``computation`` is rounding at the scale of the whole computation (see
    :func:`computation_floor`), which covers a reference that is itself inexact or exactly 0.
    """

    rtol: float
    atol: float
    noise: float




def tolerance(dtype: str) -> Tolerance:
    """The tolerance of ``dtype``, from ``rules.TOLERANCES``; a complex dtype takes its real
    counterpart's (its parts are judged in the real view, see ``check.case.Bound``)."""
    return Tolerance(**rules.TOLERANCES[real_dtype(dtype)])


@dataclasses.dataclass
class Element:
    index: tuple[int, ...]
    manual: float
    autograd: float
    finite_diff: float | None
    abs_err: float
    rel_err: float
    ratio: float  # abs_err / tolerance; above 1 is a mismatch
    kink: bool = False

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"index": list(self.index)}


@dataclasses.dataclass
class TensorComparison:
    name: str
    shape: tuple[int, ...]
    mismatched: int
    max_rel_err: float
    max_ratio: float
    worst: list[Element]
    bound: torch.Tensor  # per-element tolerance, for projecting onto probe directions

    @property
    def ok(self) -> bool:
        return self.mismatched == 0


def computation_floor(resolution: float, typical: float, backward: float = 0.0) -> tuple[float, float]:
    """Rounding at the scale of the computation, for a tensor of ``typical`` magnitude, as
    ``(absolute, faded)``, ``rules.COMPUTATION_RTOL`` times two measures of that scale:

    - the output's first-order rounding bound ``resolution`` (see ``oracles.Traced``) per
      unit of the tensor: allowed to every element;
    - the largest gradient the ``backward`` passed through: the scale at which a saturated
      sigmoid's ``s * (1 - s)`` or a softmax's ``t_0 - <p, t>`` rounds, wherever the tensor
      is in the computation.  It is allowed in full where the reference is below it, and
      fades as ``sqrt(faded / |reference|)`` above it (see :func:`bound`): an element that
      is the small difference of terms this large (a softmax's ``t_0 - <p, t>`` where one
      probability is ~1) rounds at ``faded`` itself, one computed without a cancellation at
      ``faded**2 / |reference|``, and nothing tells the two apart, so the allowance is
      their geometric mean.

    Differences below them are negligible against the computation, even where the reference
    is exactly 0 (a softmax at 1e3, whose exact gradient is 1e-172) or itself inexact."""
    def finite(value: float) -> float:
        return value if 0 < value < float("inf") else 0.0

    rtol = rules.COMPUTATION_RTOL
    return finite(rtol * resolution / typical if typical > 0 else 0.0), finite(rtol * backward)


def bound(reference: torch.Tensor, dtype: str, rounding: torch.Tensor | None = None,
          floor: tuple[float, float] = (0.0, 0.0), jitter: torch.Tensor | None = None) -> torch.Tensor:
    """The per-element tolerance for gradients of ``reference``'s size in ``dtype``.

    ``rounding``: autograd's measured rounding (its distance from float64 autograd), whose
    largest element widens the whole tensor's bound.  ``floor``: rounding at the scale of
    the computation (:func:`computation_floor`): its absolute part allowed everywhere, its
    faded part in full where the reference is below it and as ``faded / |reference|``
    above, so that an element far above the computation's rounding keeps its relative bound.  ``jitter``: per element, the
    rounding of the two gradients measured by moving the inputs a little (a float64
    reference that is itself inexact), allowed up to ``rules.JITTER_CAP`` of the element.
    """
    return _bound(_finite_abs(reference.detach().to(torch.float64)), dtype, rounding, floor, jitter)


def noise(dtype: str) -> float:
    """How many times over a measured rounding is allowed in ``dtype``."""
    return tolerance(dtype).noise


def all_finite(t: torch.Tensor) -> bool:
    """Every element finite.  One sum decides where it is finite (a NaN or an Inf would
    carry into it); the element-wise test runs only where it is not (possibly an overflow
    of finite values)."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    if math.isfinite(float(t.detach().sum(dtype=torch.float64))):
        return True
    return bool(torch.isfinite(t).all())


def _finite_abs(t: torch.Tensor) -> torch.Tensor:
    out = t.abs()
    return out if all_finite(out) else out.nan_to_num_(0.0, 0.0, 0.0)


def _bound(ref: torch.Tensor, dtype: str, rounding, floor: tuple[float, float], jitter,
           top: float | None = None, carried: torch.Tensor | None = None) -> torch.Tensor:
    """``ref`` holds |reference|; one new tensor, built in place (each temporary the size
    of a gradient costs as much as a pass over it).  ``carried``: the rounding the
    computation carries to the tensor (``oracles.backward_rounding``), allowed in full
    where the reference is below it and as ``carried**2 / |ref|`` above (the rounding of
    an element computed without a cancellation), so that it settles a reference that is
    exactly 0 or nearly so, and never an element well above the computation's rounding.
    Element by element: one element's overflowing neighbour (1/1e-5 in float16) carries
    nothing to it."""
    tol = tolerance(dtype)
    if top is None:
        top = float(ref.max()) if ref.numel() else 0.0
    least = tol.atol * top
    if rounding is not None and rounding.numel():
        least = max(least, tol.noise * float(_finite_abs(rounding.detach().to("cpu", torch.float64)).max()))
    absolute, faded = floor
    least = max(least, absolute, rules.TINY)
    if faded <= 0 and jitter is None and carried is None:
        return ref.mul(tol.rtol).add_(least)
    extra = torch.zeros_like(ref)
    if faded > 0:     # faded * sqrt(min(1, faded / |ref|)), in an order that cannot overflow at 1e155
        extra = torch.div(faded, ref.clamp_min(faded)).sqrt_().mul_(faded)
    if carried is not None:   # carried * min(1, carried / |ref|), element by element
        c = _finite_abs(carried.detach().to("cpu", torch.float64))
        extra = extra.maximum(torch.div(c, torch.maximum(ref, c).clamp_min_(rules.TINY)).mul_(c))
    if jitter is not None:
        measured = torch.minimum(_finite_abs(jitter.detach().to("cpu", torch.float64)).mul_(rules.JITTER_NOISE),
                                 rules.JITTER_CAP * ref)
        extra = extra.maximum(measured)
    return extra.clamp_min_(least).add_(ref, alpha=tol.rtol)


def rel_floor(manual: torch.Tensor, reference: torch.Tensor) -> float:
    """Relative errors are taken against max(|reference|, this): ``rules.REL_FLOOR`` of the
    reference's largest element, or the manual gradient's largest where the reference
    is all zero."""
    def top(t: torch.Tensor) -> float:
        return float(_finite_abs(t.detach().to("cpu", torch.float64)).max()) if t.numel() else 0.0

    ref = top(reference)
    return rules.REL_FLOOR * ref if ref > 0 else top(manual)


def unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index of element ``flat`` of a row-major tensor of ``shape``."""
    index = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        index.append(i)
    return tuple(reversed(index))


def _moduli(t: torch.Tensor) -> torch.Tensor:
    """A complex tensor's real view: each element's modulus |z|, in both its parts."""
    return torch.linalg.vector_norm(t, dim=-1, keepdim=True).expand_as(t).contiguous()


def compare(name: str, manual: torch.Tensor, reference: torch.Tensor, dtype: str,
            rounding: torch.Tensor | None = None, floor: tuple[float, float] = (0.0, 0.0),
            jitter: torch.Tensor | None = None, carried: torch.Tensor | None = None,
            pairs: bool = False) -> TensorComparison:
    """Compare every element of ``manual`` with ``reference`` (same shape, any device).

    Elements where the reference is not finite are left out: there is nothing to compare.
    ``pairs``: the tensors are a complex tensor's real view (a last axis of 2): the bound of
    each element is that of its modulus ``|reference|``, in both its parts (a part near 0 of a
    large complex value rounds at the value's scale), and each part's error is judged
    against it, so that a report shows the part that is wrong.
    """
    # three float64 tensors the gradient's size, each reused in place (a 4096x4096 gradient is
    # 134 MB in float64): m becomes the error and then the ratio, r |r| and then the relative
    # error; the elements reported are read from the tensors given
    m = manual.detach().to(device="cpu", dtype=torch.float64, copy=True)
    r = reference.detach().to(device="cpu", dtype=torch.float64, copy=True)
    err = m.sub_(r)
    rabs = _moduli(r) if pairs else r.abs_()
    top = float(rabs.max()) if rabs.numel() else 0.0
    every = math.isfinite(top)              # a NaN or an Inf anywhere makes the max non-finite
    if not every:
        finite = torch.isfinite(rabs)
        rabs.masked_fill_(~finite, 0.0)
        top = float(rabs.max())
    b = _bound(rabs, dtype, rounding, floor, jitter, top, carried)
    err.abs_()
    if not every:
        err.masked_fill_(~finite, 0.0)
    if top > 0:
        base = rules.REL_FLOOR * top
    elif every:     # the reference is all 0, so err is |manual|: no other float64 copy of it
        largest = float(err.max()) if err.numel() else 0.0
        base = largest if math.isfinite(largest) else rel_floor(manual, reference)
    else:
        base = rel_floor(manual, reference)
    rel = torch.div(err, rabs.clamp_min_(max(base, rules.TINY)), out=rabs)   # |reference| is not needed again
    ratio = err.div_(b)                                                # nor is the error tensor
    flat_ratio = ratio.reshape(-1)
    worst = []
    if flat_ratio.numel():
        peak, top = flat_ratio.max(dim=0)    # value and index in one pass (argmax alone is slower)
        top = int(top)
        if not float(peak) <= 1:             # a mismatch (or NaN): its worst elements, for the report
            values, indices = torch.topk(flat_ratio.nan_to_num(rules.HUGE, rules.HUGE), min(rules.WORST, flat_ratio.numel()))
        else:                                # within tolerance: the closest call is enough
            values, indices = flat_ratio[top:top + 1], [top]
        flat_rel = rel.reshape(-1)
        shape = tuple(reference.shape)
        for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices):
            at = unravel(i, shape)
            mi, ri = float(manual[at]), float(reference[at])
            worst.append(Element(unravel(i, r.shape), mi, ri, None, abs(mi - ri) if math.isfinite(ri) else 0.0,
                                 min(rules.HUGE, float(flat_rel[i])), min(rules.HUGE, float(flat_ratio[i]))))
        max_ratio = min(rules.HUGE, float(values[0]))
    else:
        max_ratio = 0.0
    return TensorComparison(
        name=name,
        shape=tuple(r.shape),
        mismatched=int((~(ratio <= 1)).sum()) if max_ratio > 1 else 0,   # NaN counts
        max_rel_err=min(rules.HUGE, float(rel.max())) if rel.numel() else 0.0,
        max_ratio=max_ratio,
        worst=worst,
        bound=b,
    )
