"""Small measures that several stages share: bitwise sameness, changes in place, and what
a finite-difference estimate adds to a case's result."""
from __future__ import annotations

import torch

from ..record.spec import Tensors
from ..verdict import oracles, rules
from ..verdict.oracles import Finding
from ..verdict.tolerance import TensorComparison


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same shape, dtype and values, bit for bit (NaN where both are NaN counts as the same)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if torch.equal(a, b):
        return True
    return bool(((a == b) | (a.isnan() & b.isnan())).all()) if a.is_floating_point() else bool(torch.equal(a, b))


def snapshot(*groups: Tensors) -> dict[str, torch.Tensor]:
    """A copy of every tensor of ``p`` and ``d``, keyed ``p.name`` and ``d.name``."""
    return {f"{'p' if i == 0 else 'd'}.{n}": t.clone() for i, grp in enumerate(groups) for n, t in grp.items()}


def changed(before: dict[str, torch.Tensor], p: Tensors, d: Tensors, g: torch.Tensor | None = None) -> list[str]:
    """The keys of ``before`` (a :func:`snapshot`, with ``upstream gradient g`` where given)
    whose tensor is no longer the same."""
    now = {**{f"p.{n}": t for n, t in p.items()}, **{f"d.{n}": t for n, t in d.items()}}
    if g is not None:
        now["upstream gradient g"] = g
    return [k for k, t in before.items() if k in now and not same(t, now[k])]


def finite_abs(t: torch.Tensor) -> torch.Tensor:
    """|t| in float64 on the CPU, with NaN and Inf as 0."""
    return t.detach().to("cpu", torch.float64).abs().nan_to_num_(0.0, 0.0, 0.0)


def fd_ratio(res, est: oracles.Estimate | None, value: float, tol: float, finding: Finding) -> None:
    """Raise ``res.fd_ratio`` to how far a finite-difference estimate is from the gradient it
    was compared with, over the allowance it was judged with (``oracles.Estimate.agrees``):
    at most 1 where it agreed.  A kink is set aside, and so is its figure."""
    if est is None or est.kink or finding is Finding.KINK:
        return
    allowed = rules.ESTIMATE_ERRORS * est.error + tol
    gap = abs(value - est.value)
    res.fd_ratio = max(res.fd_ratio, min(rules.HUGE, gap / allowed) if allowed > 0 else (0.0 if gap == 0 else rules.HUGE))


def resolved(est: oracles.Estimate | None, reference: float) -> bool:
    """An estimate precise enough to report a relative error against: its own error within
    ``rules.ENOUGH`` of the value (a loss of 1e60 leaves a slope of 1e45 unresolved)."""
    return est is not None and est.error <= rules.ENOUGH * max(abs(est.value), abs(reference))


def record(c: TensorComparison, index: tuple[int, ...], fd: float | None, kink: bool) -> None:
    """Write a finite-difference estimate (and whether it saw a kink) on the element
    ``index`` of ``c``'s worst ones, where it is one of them."""
    for e in c.worst:
        if e.index == index:
            e.finite_diff, e.kink = fd, kink
            return
