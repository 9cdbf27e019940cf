"""The finite-difference oracle, of the forward alone.

Finite differences run in float64 along a direction ``v`` (a random one over every
differentiable tensor, or one element), on ``phi(t) = <g, f(theta + t v)>``: the
directional derivative ``phi'(0)`` equals ``<gradient, v>``.  Nothing the size of a
Jacobian is ever built: a probe costs five forward calls.  Richardson extrapolation
of two central differences gives the estimate and its own error; comparing the
one-sided differences at two steps tells a kink (their gap stays as the step halves)
from a smooth curve (their gap halves with the step).
"""
from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch

from . import rules
from ..record.spec import Model, Tensors
from .autograd_oracle import autograd


class Finding(enum.Enum):
    """What finite differences concluded about one probe (a direction or an element)."""

    AGREE = "agree"                    # manual and autograd agree, and so does the estimate
    FOR_AUTOGRAD = "resolved for autograd"  # sides with autograd: the manual gradient is wrong
    FOR_MANUAL = "resolved for manual"  # sides with the manual gradient: autograd is not the derivative
    NEITHER = "neither"                # agrees with neither
    KINK = "kink"                      # one-sided differences differ at a step that resolves them
    UNRESOLVED = "unresolved"          # manual and autograd differ, but no step can tell them apart


#: Which finding stands for a probe when its steps conclude differently: a step that
#: resolves the two gradients wins, then agreement, then evidence of a kink, which outweighs
#: a step too noisy to tell the two apart.
_RANK = {Finding.FOR_AUTOGRAD: 0, Finding.AGREE: 1, Finding.KINK: 2, Finding.UNRESOLVED: 3,
         Finding.FOR_MANUAL: 4, Finding.NEITHER: 4}


@dataclasses.dataclass(frozen=True)
class Estimate:
    """One finite-difference estimate of a directional derivative."""

    value: float
    error: float  # the estimate's own error: truncation (Richardson) plus rounding
    kink: bool
    step: float

    def agrees(self, value: float, tolerance: float) -> bool:
        return abs(value - self.value) <= rules.ESTIMATE_ERRORS * self.error + tolerance


Phi = Callable[[float], tuple[float, float]]


class Line:
    """``phi(t) = (<g, f(theta + t v)>, its rounding scale)`` in float64, ``v`` given by
    ``direction``; see :func:`line`.  Each ``t`` runs the forward once: the values are kept,
    and ``resolution`` may be raised later without running them again."""

    def __init__(self, model: Model, p: Tensors, d: Tensors, g: torch.Tensor,
                 direction: Mapping[str, torch.Tensor], resolution: float = 0.0,
                 at_zero: torch.Tensor | None = None):
        self.model, self.p, self.d, self.direction = model, p, d, direction
        self.g64 = g.detach().to(torch.float64)
        self.resolution = resolution
        self.memo: dict[float, tuple[float, float]] = {}
        if at_zero is not None:
            self.memo[0.0] = self._value(at_zero)

    def _value(self, out: torch.Tensor) -> tuple[float, float]:
        prod = self.g64 * out.to(torch.float64)
        return float(prod.sum()), float(prod.abs_().sum())

    def __call__(self, t: float) -> tuple[float, float]:
        if t not in self.memo:
            P, D = moved(self.p, self.d, self.direction, t)
            with torch.no_grad():
                out, _ = self.model.forward(P, D)
            self.memo[t] = self._value(out)
        value, size = self.memo[t]
        return value, max(size, self.resolution)


def line(model: Model, p: Tensors, d: Tensors, g: torch.Tensor, direction: Mapping[str, torch.Tensor],
         resolution: float = 0.0, at_zero: torch.Tensor | None = None) -> Line:
    """``t -> (<g, f(theta + t v)>, its rounding scale)`` in float64, ``v`` given by ``direction``.

    The rounding scale is ``sum|g * f|``, or the forward's first-order rounding bound
    ``resolution`` (see :class:`Traced`) where that is larger: a saturated
    ``log(1 - sigmoid(z))`` returns exactly 0 after passing through 1.  ``phi(0)`` runs the
    forward once, or not at all where its output is given as ``at_zero``.
    """
    return Line(model, p, d, g, direction, resolution, at_zero)


def jumps(model: Model, p: Tensors, d: Tensors, g: torch.Tensor, name: str, index: tuple[int, ...],
          size: float, manual: float, tol: float) -> bool:
    """Whether one element sits on a kink that finite differences cannot resolve (its
    slope is lost in the rounding of a large output): autograd's gradient of that element,
    taken to either side and extrapolated to the point, jumps by more than ``tol``, and
    ``manual`` lies between the two sides (within ``tol``), a one-sided derivative or a mix
    of the two.  Each side is ``2 a(s) - a(2 s)`` at ``s = +-rules.JUMP * size``, so that a
    gradient that itself changes fast beside the kink (a large curvature on one side) does
    not pass for a jump, or hide one.  Autograd needs no step to resolve a slope, so the
    steps can be ones that no other kink is likely to fall within."""
    x = p[name] if name in p else d[name]
    v = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    v[index] = size
    g64 = g.detach().to(torch.float64)

    def at(t: float) -> float:
        return float(autograd(model, *moved(p, d, {name: v}, t), g64)[name][index])

    try:
        sides = [2 * at(t) - at(2 * t) for t in (rules.JUMP, -rules.JUMP)]
    except Exception:     # the reference fails beside the case: no evidence of a kink
        return False
    low, high = min(sides), max(sides)
    return high - low > tol and low - tol <= manual <= high + tol


def moved(p: Tensors, d: Tensors, direction: Mapping[str, torch.Tensor], t: float) -> tuple[Tensors, Tensors]:
    """The case's tensors at ``theta + t v``, in float64 (``v`` given by ``direction``)."""
    return (Tensors((n, _moved(n, x, direction, t)) for n, x in p.items()),
            Tensors((n, _moved(n, x, direction, t)) for n, x in d.items()))


def _moved(name: str, x: torch.Tensor, direction: Mapping[str, torch.Tensor], t: float) -> torch.Tensor:
    if not x.is_floating_point():
        return x
    x = x.detach().to(torch.float64)
    v = direction.get(name)
    return x if v is None or t == 0.0 else torch.add(x, v, alpha=t)


def estimate(phi: Phi, h: float) -> Estimate:
    """Central differences at h and h/2, Richardson-extrapolated; one-sided gaps for kinks."""
    (f0, a0), (fp, ap), (fm, am) = phi(0.0), phi(h), phi(-h)
    (fp2, ap2), (fm2, am2) = phi(h / 2), phi(-h / 2)
    d1 = (fp - fm) / (2 * h)
    d2 = (fp2 - fm2) / h
    value = (4 * d2 - d1) / 3
    rounding = rules.ROUNDING * rules.EPS64 * max(a0, ap, am, ap2, am2, abs(f0)) / h
    error = abs(value - d2) + rounding
    bent1 = (fp - 2 * f0 + fm) / h            # one-sided slopes' gap, signed: the curvature,
    bent2 = (fp2 - 2 * f0 + fm2) / (h / 2)    # times the step, plus any kink's jump
    gap1, gap2 = abs(bent1), abs(bent2)
    floor = max(4 * rounding, rules.KINK_FLOOR * (abs(d1) + abs(d2)))
    kink = (gap2 > rules.KINK_RATIO * gap1 and gap2 > floor) or _curved_kink(phi, h, f0, bent1, bent2, rounding, floor)
    if kink:
        error = max(error, gap2)
    return Estimate(value, error, kink, h)


def _curved_kink(phi: Phi, h: float, f0: float, bent1: float, bent2: float, rounding: float,
                 floor: float) -> bool:
    """A kink whose sides curve apart, the curvature outweighing the jump at every step
    (a unit on its kink under a large loss): the gap's ratio is then ~0.5, as if smooth.
    Richardson on the signed gaps cancels the curvature, ``jump(h) = 2 gap(h/2) - gap(h)``:
    a kink's jump stays as the step halves, a smooth curve's falls 8-fold (it is O(h^3)).
    Two more forward calls (at +-h/4), only where ``jump(h)`` stands above rounding."""
    jump1 = 2 * bent2 - bent1
    if abs(jump1) <= max(10 * rounding, floor):   # 20/h of rounding in all, half of it as for gap2
        return False
    (fp4, ap4), (fm4, am4) = phi(h / 4), phi(-h / 4)
    bent4 = (fp4 - 2 * f0 + fm4) / (h / 4)
    jump2 = 2 * bent4 - bent2
    rounding4 = max(rounding, rules.ROUNDING * rules.EPS64 * max(ap4, am4) / h)
    return jump1 * jump2 > 0 and abs(jump2) > rules.KINK_RATIO * abs(jump1) and abs(jump2) > max(20 * rounding4, floor)


def central(phi: Phi, h: float, target: float, tol: float) -> Estimate | None:
    """The central difference at ``h`` alone (two forward calls), where it agrees with
    ``target`` within ``tol`` plus ``rules.ESTIMATE_ERRORS`` times its rounding, and that
    rounding is within ``rules.ENOUGH`` of the value: the allowance :meth:`Estimate.agrees` gives the same step,
    less its truncation error, so it accepts nothing the full estimate at that step would
    not.  None otherwise: then the full estimate decides (``phi`` keeps the two values)."""
    (f0, a0), (fp, ap), (fm, am) = phi(0.0), phi(h), phi(-h)
    value = (fp - fm) / (2 * h)
    rounding = rules.ROUNDING * rules.EPS64 * max(a0, ap, am, abs(f0)) / h
    if (abs(value - target) <= rules.ESTIMATE_ERRORS * rounding + tol
            and rounding <= rules.ENOUGH * max(abs(value), abs(target))):
        return Estimate(value, rounding + abs(value - target), False, h)
    return None


class _Steps:
    """Estimates at each step in ``steps`` (``rules.STEPS``), in turn and lazily (stop when satisfied).  A step
    at least as wide as one that saw a kink is not evaluated (``skip_from``): it straddles
    that kink as well."""

    def __init__(self, phi: Phi, steps: tuple[float, ...] | None = None):
        self.phi, self.steps, self.skip_from = phi, rules.STEPS if steps is None else steps, float("inf")

    def __iter__(self):
        for h in self.steps:
            if h < self.skip_from:
                yield estimate(self.phi, h)


def estimates(phi: Phi, steps: tuple[float, ...] | None = None) -> _Steps:
    """Estimates at each of ``steps`` (``rules.STEPS`` where not given), lazily; see :func:`judge`."""
    return _Steps(phi, steps)


def judge(steps, dm: float, da: float, tol: float, precise: float) -> tuple[Finding, Estimate | None]:
    """What finite differences say of one probe, where the manual gradient projects to ``dm``
    and autograd to ``da`` (``tol`` apart at most where they agree).

    Steps are tried in turn.  A step at least as wide as one that saw a kink straddles that
    kink: it is not evaluated, or counts as the kink.  One that sides with autograd alone
    settles the probe, unless a narrower step then sees a kink (a kink whose two sides curve
    differently looks smooth, and sides with autograd, at a wide step), so the narrower steps
    are still tried.  Otherwise the steps' findings are ranked (``_RANK``), and of equal
    findings the most precise estimate is kept; the search stops at an agreement within
    ``precise`` (relative)."""
    differ = abs(dm - da) > tol
    best: Finding | None = None
    kept: Estimate | None = None
    kinked: Estimate | None = None     # the narrowest step that saw a kink
    resolved: Estimate | None = None   # a step that sided with autograd alone

    def narrower_only(step: float) -> None:   # wider steps are not evaluated from here on
        if isinstance(steps, _Steps):
            steps.skip_from = min(steps.skip_from, step)

    for est in steps:
        if est.kink and (kinked is None or est.step < kinked.step):
            kinked = est
            narrower_only(est.step)
        finding = Finding.KINK if kinked is not None and est.step >= kinked.step else _finding(est, dm, da, tol, differ)
        if finding is Finding.FOR_AUTOGRAD:
            resolved = resolved or est
            narrower_only(est.step)           # only narrower steps can still show a kink
            continue
        if best is None or _RANK[finding] < _RANK[best]:
            best, kept = finding, est
        elif finding is best and est.error < kept.error:
            kept = est
        if resolved is None and finding is Finding.AGREE and est.error <= (
                rules.ENOUGH if not differ else precise) * max(abs(est.value), abs(da)):
            # where the two gradients agree, no later step outranks an agreement (``_RANK``):
            # a narrower step would only make the estimate more precise than it needs to be
            break
    if resolved is not None:
        if kinked is not None and kinked.step < resolved.step:
            return Finding.KINK, kinked
        return Finding.FOR_AUTOGRAD, resolved
    return (best or Finding.KINK), kept


def _finding(est: Estimate, dm: float, da: float, tol: float, differ: bool) -> Finding:
    if est.kink:
        return Finding.KINK
    with_manual, with_autograd = est.agrees(dm, tol), est.agrees(da, tol)
    if with_manual and with_autograd:
        return Finding.UNRESOLVED if differ else Finding.AGREE
    if with_autograd:
        return Finding.FOR_AUTOGRAD
    if with_manual:
        return Finding.FOR_MANUAL
    if min(dm, da) < est.value < max(dm, da):
        # strictly between the two: the average of one-sided slopes that differ, a kink
        # whose gap the curvature hides at every step (a ReLU unit whose two sides slope alike)
        return Finding.KINK
    return Finding.NEITHER


def scale_of(x: torch.Tensor, fallback: float) -> float:
    """A tensor's typical magnitude (rms), for sizing steps relative to its values."""
    if not x.is_floating_point() or x.numel() == 0:
        return fallback
    rms = float(torch.linalg.vector_norm(x.detach(), dtype=torch.float64)) / math.sqrt(x.numel())
    return rms if rms > 0 and rms == rms and rms != float("inf") else fallback


def random_direction(model: Model, tensors: Mapping[str, torch.Tensor], seed: int, fallback: float,
                     sizes: Mapping[str, float] | None = None) -> dict[str, torch.Tensor]:
    """A random direction over every differentiable tensor, each part sized like its values
    (``sizes``, where the caller has them): random signs (Rademacher), as good as Gaussian
    for a projection and cheaper to draw (one random bit each)."""
    draws = np.random.Generator(np.random.SFC64(seed % 2**64))
    names = list(model.differentiable)
    counts = [tensors[n].numel() for n in names]
    bits = np.unpackbits(np.frombuffer(draws.bytes((sum(counts) + 7) // 8), np.uint8), count=sum(counts))
    signs = torch.from_numpy(bits).to(torch.float64).mul_(2).sub_(1)     # one draw for every tensor
    out = {}
    for n, part in zip(names, signs.split(counts)):
        x = tensors[n]
        size = sizes[n] if sizes is not None else scale_of(x, fallback)
        out[n] = part.reshape(x.shape).mul_(size).to(x.device)
    return out


def element_direction(x: torch.Tensor, name: str, index: tuple[int, ...], fallback: float) -> dict[str, torch.Tensor]:
    """The unit direction of one element, sized like that element (or its tensor)."""
    v = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    size = abs(float(x[index])) if x.dim() else abs(float(x))
    v[index] = max(size, scale_of(x, fallback))
    return {name: v}
