"""The further backward calls (:mod:`.repeated`) must agree with the first within the
tolerance: the bounds of the comparison with autograd where it ran, else the tolerance
around the manual gradient itself.  A difference in the last bits only (a sum over a set,
another reduction order) is a note, not an error; calls that repeat the first bitwise
(known from the comparison with autograd) leave nothing to report."""
from __future__ import annotations

import random
from collections.abc import Mapping

import numpy as np
import torch

from ...verdict.tolerance import bound
from ..case import Bound, describe, upstream
from ..measure import same
from ..state import CaseState


def run(state: CaseState) -> None:
    if not state.bitwise:
        bounds = None if state.model.two_way else {n: cmp.bound for n, cmp in state.result.tensors.items()}
        _judge(state, bounds)
    state.again = None        # the further calls' gradients: not read again


def _judge(state: CaseState, bounds) -> None:
    model, res, grads, again = state.model, state.result, state.grads, state.again
    bitwise = set()
    for call, other in enumerate(again, start=2):
        times = "twice" if call == 2 else f"{call} times"
        if not isinstance(other, Mapping):
            raise state.error(f"backward called {times} returned {describe(other)}, not a dict of gradients")
        differs = []
        for n in model.differentiable:
            second, first = other.get(n), grads[n]
            if not isinstance(second, torch.Tensor) or second.shape != first.shape:
                differs.append(n)
            elif not same(second, first):
                allowed = bounds[n] if bounds else bound(first, res.case.dtype)
                gap = (second.detach().to("cpu", torch.float64) - first.detach().to("cpu", torch.float64)).abs()
                if bool((gap > allowed).any()):
                    differs.append(n)
                else:
                    bitwise.add(n)
        if differs:
            raise state.error(f"backward gives another result when called {times} on the same case, beyond "
                              f"rounding ({_why_not_repeatable(model, res)}): {', '.join(differs)}"
                              + model.held_as.repeat_hint)
    if bitwise and _draws_random(model, res):
        res.notes.append(f"backward is not deterministic on {', '.join(sorted(bitwise))}: it draws random numbers "
                         "(the same seed gives the same result)")
    elif bitwise:
        res.notes.append(f"backward is reproducible within rounding but not bitwise on {', '.join(sorted(bitwise))} "
                         "(e.g. a sum whose order changes between calls)")


def _why_not_repeatable(model, res) -> str:
    """Random numbers, or state: see :func:`_draws_random`."""
    if _draws_random(model, res):
        return ("it is not deterministic: it draws random numbers, and the same seed gives the same result; "
                "a gradient must not depend on chance")
    return "not deterministic, or state kept between calls, or its cache changed"


def _draws_random(model, res) -> bool:
    """The backward called twice more, each time after the same seed for torch, numpy and
    random: the same result both times, where the plain calls differed."""
    case = res.case
    try:
        p, d = (model if isinstance(model, Bound) else Bound(model, case)).build(case)
        runs = []
        for _ in range(2):
            states = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
            try:
                torch.manual_seed(0), np.random.seed(0), random.seed(0)
                with torch.no_grad():
                    out, cache = model.forward(p, d)
                    runs.append(model.backward(p, d, cache, upstream(out, case.seed)))
            finally:
                torch.random.set_rng_state(states[0]), np.random.set_state(states[1]), random.setstate(states[2])
        return all(same(runs[0][n], runs[1][n]) for n in model.differentiable)
    except Exception:
        return False
