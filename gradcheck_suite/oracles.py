"""The two oracles: torch autograd, and finite differences of the forward alone.

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
from collections.abc import Callable, Mapping

import torch

from .spec import Model, Tensors

#: Steps relative to each tensor's typical magnitude.  The first is where Richardson's
#: truncation (~h^4) and rounding (~eps/h) errors are both near 1e-12; the larger one
#: helps where rounding dominates (a large loss, a small slope); the smaller ones are
#: tried when a kink sits inside the first step.
STEPS = (1e-4, 1e-2, 1e-6, 1e-8)
EPS64 = torch.finfo(torch.float64).eps
ROUNDING = 64.0      # forward rounding taken as ROUNDING * eps * sum|g * f|
KINK_RATIO = 0.7     # one-sided gap at h/2 over gap at h: ~0.5 when smooth, ~1 at a kink
KINK_FLOOR = 1e-7    # a gap below this fraction of the slope is smooth, whatever the ratio


@dataclasses.dataclass(frozen=True)
class Estimate:
    """One finite-difference estimate of a directional derivative."""

    value: float
    error: float  # the estimate's own error: truncation (Richardson) plus rounding
    kink: bool
    step: float

    def agrees(self, value: float, tolerance: float) -> bool:
        return abs(value - self.value) <= 8.0 * self.error + tolerance


def autograd(model: Model, p: Tensors, d: Tensors, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Autograd's gradient of ``<g, reference(p, d)>`` (or of the forward) for every differentiable tensor."""
    names = model.differentiable
    leaves = {n: (p[n] if n in p else d[n]).detach().clone().requires_grad_(True) for n in names}
    P = Tensors((n, leaves[n]) for n in p)
    D = Tensors((n, leaves[n] if n in leaves else t) for n, t in d.items())
    with torch.enable_grad():
        out = differentiated(model, P, D)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return {n: torch.zeros_like(leaves[n]) for n in names}
        grads = torch.autograd.grad(out, [leaves[n] for n in names], grad_outputs=g, allow_unused=True)
    return {n: (torch.zeros_like(leaves[n]) if gr is None else gr.detach()) for n, gr in zip(names, grads)}


def differentiated(model: Model, p: Tensors, d: Tensors) -> torch.Tensor:
    """The output autograd differentiates: the model's plain-torch ``reference`` where it
    has one (its forward may be a custom op or numpy), else its forward's output."""
    if model.reference is not None:
        return model.reference(p, d)
    return model.forward(p, d)[0]


Phi = Callable[[float], tuple[float, float]]


def line(model: Model, p: Tensors, d: Tensors, g: torch.Tensor, direction: Mapping[str, torch.Tensor]) -> Phi:
    """``t -> (<g, f(theta + t v)>, sum|g * f|)`` in float64, ``v`` given by ``direction``."""
    g64 = g.detach().to(torch.float64)

    def phi(t: float) -> tuple[float, float]:
        P = Tensors((n, _moved(n, x, direction, t)) for n, x in p.items())
        D = Tensors((n, _moved(n, x, direction, t)) for n, x in d.items())
        with torch.no_grad():
            out, _ = model.forward(P, D)
            out = out.to(torch.float64)
            return float((g64 * out).sum()), float((g64 * out).abs().sum())

    return phi


def _moved(name: str, x: torch.Tensor, direction: Mapping[str, torch.Tensor], t: float) -> torch.Tensor:
    if not x.is_floating_point():
        return x
    x = x.detach().to(torch.float64)
    v = direction.get(name)
    return x if v is None or t == 0.0 else x + t * v


def estimate(phi: Phi, h: float) -> Estimate:
    """Central differences at h and h/2, Richardson-extrapolated; one-sided gaps for kinks."""
    (f0, a0), (fp, ap), (fm, am) = phi(0.0), phi(h), phi(-h)
    (fp2, ap2), (fm2, am2) = phi(h / 2), phi(-h / 2)
    d1 = (fp - fm) / (2 * h)
    d2 = (fp2 - fm2) / h
    value = (4 * d2 - d1) / 3
    rounding = ROUNDING * EPS64 * max(a0, ap, am, ap2, am2, abs(f0)) / h
    error = abs(value - d2) + rounding
    gap1 = abs(fp - 2 * f0 + fm) / h
    gap2 = abs(fp2 - 2 * f0 + fm2) / (h / 2)
    floor = max(4 * rounding, KINK_FLOOR * (abs(d1) + abs(d2)))
    kink = gap2 > KINK_RATIO * gap1 and gap2 > floor
    if kink:
        error = max(error, gap2)
    return Estimate(value, error, kink, h)


def estimates(phi: Phi):
    """Estimates at each step in ``STEPS``, largest first (lazily: stop when satisfied)."""
    for h in STEPS:
        yield estimate(phi, h)


def scale_of(x: torch.Tensor, fallback: float) -> float:
    """A tensor's typical magnitude (rms), for sizing steps relative to its values."""
    if not x.is_floating_point() or x.numel() == 0:
        return fallback
    rms = float(x.detach().to(torch.float64).pow(2).mean().sqrt())
    return rms if rms > 0 and rms == rms and rms != float("inf") else fallback


def random_direction(model: Model, tensors: Mapping[str, torch.Tensor], seed: int, fallback: float) -> dict[str, torch.Tensor]:
    """A random direction over every differentiable tensor, each part sized like its values."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n in model.differentiable:
        x = tensors[n]
        z = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        out[n] = (z * scale_of(x, fallback)).to(x.device)
    return out


def element_direction(x: torch.Tensor, name: str, index: tuple[int, ...], fallback: float) -> dict[str, torch.Tensor]:
    """The unit direction of one element, sized like that element (or its tensor)."""
    v = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    size = abs(float(x[index])) if x.dim() else abs(float(x))
    v[index] = max(size, scale_of(x, fallback))
    return {name: v}
