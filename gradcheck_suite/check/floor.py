"""The comparison with autograd at its widest: the computation floor, the computation's own
rounding, and in float64 the measured jitter.

The autograd stage compares first with the tighter bounds alone; where every element is
within them, and every further backward call repeats the first bitwise, the floor cannot
change a thing.  Otherwise (and wherever a later stage needs the forward's rounding)
:func:`with_floor` traces autograd once more, with hooks on every value the forward
computes, and compares again; the bounds only widen.
"""
from __future__ import annotations

import torch

from ..record.spec import Tensors
from ..verdict import oracles, rules
from ..verdict.tolerance import compare, computation_floor, noise as compare_noise
from .measure import finite_abs
from .state import CaseState


def with_floor(state: CaseState) -> oracles.Traced:
    """The comparison with the computation floor, which needs autograd traced once more
    (hooks on every value the forward computes); the bounds only widen.  Done once a case:
    later calls give the same trace."""
    if state.traced is None:
        res, model, case, what = state.result, state.model, state.case, state.autograd_phase
        p, d, g, grads, ag = state.p, state.d, state.g, state.grads, state.ag
        phase = res.phase
        state.traced = state.call(what, oracles.traced_autograd, model, p, d, g)
        res.phase = phase or what
        floors = {n: computation_floor(state.traced.resolution, state.typical[n], state.traced.backward)
                  for n in model.differentiable}
        errors = oracles.backward_rounding(model, p, d, g, case.seed)
        res.phase = phase or what
        for n, e in errors.items():         # the computation's own rounding, carried to each tensor
            state.carried[n] = finite_abs(e).mul_(compare_noise(case.dtype))
        carried, rounding = state.carried, state.rounding
        views = model.views or ()     # complex tensors, in their real view: judged as |z|
        res.tensors = {}      # the first comparisons' bounds go before the new ones are made
        res.tensors = {n: compare(n, grads[n], ag[n], case.dtype, rounding.get(n), floors[n],
                                  carried=carried.get(n), pairs=n in views) for n in model.differentiable}
        if case.real_dtype == "float64" and any(not c.ok for c in res.tensors.values()):
            # only where the tight bound is crossed: are the two gradients that inexact here?
            jitter = _jitter(model, case, p, d, g, grads, ag)
            tight = dict(res.tensors)
            for n, c in tight.items():
                if not c.ok and n in jitter:
                    res.tensors[n] = compare(n, grads[n], ag[n], case.dtype, None, floors[n], jitter[n],
                                             carried=carried.get(n), pairs=n in views)
            for n, c in tight.items():
                if not c.ok and res.tensors[n].ok:
                    state.tolerated[n] = c   # within a measured allowance only: finite differences may still resolve it
    return state.traced


def widened(state: CaseState) -> dict[str, torch.Tensor] | None:
    """The bounds with the computation's own rounding, where they were not taken yet
    (every element agreed within the tight ones): a layout that sums in another order
    rounds at the scale of the computation too, not of a gradient that is exactly 0.
    None where the case's bounds already are these; the case's comparisons stay."""
    if state.traced is not None:
        return None
    res = state.result
    kept = res.tensors
    with_floor(state)
    bounds = {n: c.bound for n, c in res.tensors.items()}
    res.tensors = kept            # the verdict's comparisons, with what finite differences recorded
    return bounds


def _jitter(model, case, p, d, g, grads, ag) -> dict[str, torch.Tensor]:
    """How much the difference ``D = autograd - manual`` moves, element by element, when
    every input is scaled by 1 +- ``rules.JITTER`` element-wise.  Where the backward is
    correct the two gradients are the same function, so ``D`` is their rounding alone and
    what moves is rounding.  Two measures of that move, the larger kept:

    - half the second difference of ``D``: the curvature of both gradients cancels, and a
      wrong element moves by about JITTER squared times its error.  It sees rounding that
      changes from point to point (a saturated sigmoid's ``s * (1 - s)``), but not one
      that drifts smoothly with the inputs;
    - each first difference, of ``D`` and of ``D`` relative to autograd (times autograd),
      whichever moved less: it sees a smooth drift (a softmax's ``t_0 - <p, t>`` where
      one probability is ~1), while an error that is a constant, or a constant fraction of
      the element, leaves one of the two unmoved however steep the element is.

    The jump of a kink or tie that the jitter crosses is kept out by
    the tolerance's ``JITTER_CAP``.  Scaling keeps exact zeros, so a unit that sits exactly on a
    ReLU kink stays there."""
    gen = torch.Generator().manual_seed(case.seed ^ rules.SALT_JITTER)
    signs = {n: (torch.randint(0, 2, t.shape, generator=gen) * 2 - 1).to(t.device, t.dtype)
             for n, t in (*p.items(), *d.items()) if t.is_floating_point()}

    def gap(sign: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        P = Tensors((n, t * (1 + sign * rules.JITTER * signs[n]) if n in signs else t) for n, t in p.items())
        D = Tensors((n, t * (1 + sign * rules.JITTER * signs[n]) if n in signs else t) for n, t in d.items())
        with torch.no_grad():
            manual = model.backward(P, D, model.forward(P, D)[1], g)
        reference = oracles.autograd(model, P, D, g)
        return ({n: reference[n].double() - manual[n].double() for n in reference},
                {n: reference[n].double() for n in reference})

    try:
        (up, a_up), (down, a_down) = gap(1.0), gap(-1.0)
    except Exception:     # the backward broke at a nearby point: no measurement, no allowance
        return {}
    out = {}
    for n in ag:
        a, here = ag[n].double(), ag[n].double() - grads[n].double()
        if not up[n].shape == here.shape == down[n].shape:
            continue
        moved = (up[n] + down[n] - 2 * here).abs_().div_(2)
        for other, a_other in ((up[n], a_up[n]), (down[n], a_down[n])):
            plain = (other - here).abs_()
            relative = (other * (a / a_other) - here).abs_()   # D / autograd moved, times autograd
            first = torch.minimum(plain, relative.nan_to_num_(float("inf"), float("inf"), float("inf")))
            moved = torch.maximum(moved, first)
        out[n] = moved
    return out
