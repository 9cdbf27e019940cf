"""The manual gradient against autograd, every element: first with the tighter bounds
alone, then, where an element crosses them or a further backward call differs bitwise,
with the computation floor (:func:`..floor.with_floor`).  A manual gradient that is NaN or
Inf where autograd is finite is an error."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from ...verdict import oracles
from ...verdict.tolerance import all_finite, compare
from .. import messages
from ..case import float64
from ..floor import with_floor
from ..measure import same
from ..state import CaseState


def run(state: CaseState) -> None:
    model, case, res, grads = state.model, state.case, state.result, state.grads
    ag = state.early if state.early is not None else state.call(
        state.autograd_phase, oracles.traced_autograd, model, state.p, state.d, state.g, False).grads
    state.ag, state.early = ag, None
    state.p64, state.d64 = float64(state.p), float64(state.d)
    state.rounding = _rounding(state)
    state.finite = {n: True if all_finite(ag[n]) else torch.isfinite(ag[n]) for n in model.differentiable}
    for n in model.differentiable:
        if all_finite(grads[n]):
            continue
        bad = ~torch.isfinite(grads[n]) & state.finite[n]
        if bool(bad.any()):
            raise state.error(messages.manual_not_finite(n, bad))
    state.typical = {n: oracles.scale_of(state.tensor(n, float64=True), case.scale) for n in model.differentiable}
    # first without the floor: where every element is within the tighter bound, and every
    # further backward call repeats the first bitwise, the floor cannot change a thing
    views = model.views or ()     # complex tensors, in their real view: judged as |z|
    res.tensors = {n: compare(n, grads[n], ag[n], case.dtype, state.rounding.get(n), pairs=n in views)
                   for n in model.differentiable}
    state.bitwise = _bitwise(model, grads, state.again)
    if not all(c.ok for c in res.tensors.values()) or not state.bitwise:
        with_floor(state)
    res.autograd_rel_err = max((c.max_rel_err for c in res.tensors.values()), default=0.0)
    res.autograd_ratio = max((c.max_ratio for c in res.tensors.values()), default=0.0)


def _rounding(state: CaseState) -> dict[str, torch.Tensor]:
    """How far autograd in the case's dtype is from autograd in float64: its rounding."""
    if state.case.real_dtype == "float64":
        return {}
    ag = state.ag
    try:
        ag64 = oracles.autograd(state.model, state.p64, state.d64, state.g.to(torch.float64))
    except Exception:
        return {}
    # only its largest element is read (tolerance.bound): kept as that, not as a tensor the
    # gradient's size for the rest of the case
    return {n: ag[n].to(torch.float64).sub_(ag64[n].to(ag[n].device)).abs().nan_to_num_(0.0, 0.0, 0.0).max()
            if ag[n].numel() else ag[n].to(torch.float64) for n in ag}


def _bitwise(model, grads, again: list) -> bool:
    """Every further backward call returned the first call's gradients, bit for bit."""
    return all(isinstance(other, Mapping) and all(
        isinstance(other.get(n), torch.Tensor) and other[n].shape == grads[n].shape and same(other[n], grads[n])
        for n in model.differentiable) for other in again)
