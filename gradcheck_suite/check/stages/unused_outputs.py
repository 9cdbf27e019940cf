"""For a shipped op (``op_model``) with several floating-point outputs, on a case that
passes: each output in turn left out of the loss, as training leaves an output it does
not use.  The engine itself then calls the op's backward, so that output's gradient
arrives exactly as torch passes it: ``None`` where the Function calls
``ctx.set_materialize_grads(False)``, zeros otherwise.  The manual gradient must match
autograd of the reference with the same output left out, within the case's bound; a
backward that crashes on the ``None`` is an error naming the output."""
from __future__ import annotations

import torch

from ...record.blame import ours, where
from ...record.errors import ContractError
from ...verdict import oracles
from ...verdict.tolerance import compare
from ..case import float64
from ..result import FAIL
from ..state import CaseState, Stop


def applies(state: CaseState) -> bool:
    """An op whose forward returns two floating-point outputs or more."""
    layout = state.model.layout
    return state.model.op is not None and layout is not None and sum(s is not None for s in layout) > 1


def run(state: CaseState) -> None:
    model, case, res = state.model, state.case, state.result
    layout, op = model.layout, model.op
    for k, shape in enumerate(layout):
        if shape is None:
            continue           # not floating point: it never takes a gradient
        how = _how(k, len(layout))
        manual = state.call(f"backward with {how}", _manual, op, model.user(state.p), model.user(state.d), model.h,
                            model.upstream(state.g), k, how)
        manual = state.call(f"backward with {how}", model.real_grads, manual, state.p, state.d)   # complex: real views
        masked = _masked(state.g, layout, k)
        ag = state.call(state.autograd_phase, oracles.autograd, model, state.p, state.d, masked)
        rounding = {}
        if case.real_dtype != "float64":
            p64, d64 = float64(state.p), float64(state.d)
            ag64 = state.call(state.autograd_phase, oracles.autograd, model, p64, d64, masked.to(torch.float64))
            rounding = {n: (ag[n].to(torch.float64) - ag64[n].to(ag[n].device)).abs().nan_to_num(0.0, 0.0, 0.0).max()
                        for n in ag if ag[n].numel()}
        for n in model.differentiable:
            if n not in manual:
                continue
            c = compare(f"{n} (output {k} unused)", manual[n], ag[n], case.dtype, rounding.get(n),
                        pairs=n in (model.views or ()))
            if c.ok:
                continue
            worst = _beyond(manual[n], ag[n], c.bound, res.tensors.get(n), _aside(state, n))
            if worst is None:
                continue       # within the bound the case's own comparison of n allowed
            index, m, a = worst
            res.tensors[c.name] = c
            res.failing, res.verdict = [c.name], FAIL     # the tensor and the situation, as double backward names it
            res.summary = (f"the manual gradient of {n} is wrong with {how}: "
                           f"{m:.6g} where autograd of the reference gives {a:.6g} at {list(index)}; with every "
                           "output used it agrees, so the backward mishandles the absent gradient")
            raise Stop()


def _how(k: int, count: int) -> str:
    """How the engine passes output ``k``'s gradient, in the user's words.  Whether the
    Function asked for ``None`` is torch's to know (``ctx.set_materialize_grads(False)`` may
    be conditional, or in a helper): the words say both."""
    return (f"output {k} of {count} unused (its gradient as the engine passes it: None after "
            "ctx.set_materialize_grads(False), zeros otherwise)")


def _manual(op, p, d, h, gs, k: int, how: str) -> dict[str, torch.Tensor]:
    """The manual gradient with output ``k`` left out of the loss, through the engine; a
    crash on the ``None`` it passes is named as such."""
    try:
        with torch.no_grad():
            return op.gradients(p, d, h, gs, absent=k)
    except (TypeError, AttributeError) as e:
        if ours(e) or "NoneType" not in str(e):
            raise
        raise ContractError(f"backward raised {type(e).__name__}: {e} with output {k} of {len(gs)} unused: after "
                            "ctx.set_materialize_grads(False) the engine passes None as the gradient of an output "
                            "the loss does not use; test `if grad is None` before using it" f"{where(e)}") from None


def _masked(g: torch.Tensor, layout, k: int) -> torch.Tensor:
    """The case's upstream gradient with output ``k``'s part zero: autograd of the reference
    with that output unused."""
    start = 0
    for j, shape in enumerate(layout):
        if shape is None:
            continue
        n = 1
        for s in shape:
            n *= s
        if j == k:
            masked = g.clone()
            masked[start:start + n] = 0
            return masked
        start += n
    return g


def _aside(state: CaseState, n: str) -> torch.Tensor | None:
    """The elements of ``n`` the case passed while its manual gradient and autograd differ
    beyond the bound (kinks and ties set aside by finite differences), or None: a matter of
    convention there, so not judged again with an output unused."""
    full = state.result.tensors.get(n)
    if full is None or full.ok or state.ag is None or n not in state.grads:
        return None
    err = (state.grads[n].detach().to("cpu", torch.float64) - state.ag[n].detach().to("cpu", torch.float64)).abs()
    return ~(err <= full.bound.to(torch.float64)) if tuple(err.shape) == tuple(full.bound.shape) else None


def _beyond(manual: torch.Tensor, ag: torch.Tensor, bound: torch.Tensor, full, aside: torch.Tensor | None):
    """The worst element of ``manual`` beyond the larger of ``bound`` and the bound the
    case's own comparison of the tensor allowed (the gradient with an output left out sums
    fewer terms of the same computation: its rounding is no larger), where autograd is
    finite and the element is not one the case set aside; None where there is none.
    Returns ``(index, manual, autograd)``."""
    m = manual.detach().to("cpu", torch.float64)
    a = ag.detach().to("cpu", torch.float64)
    allowed = bound.to(torch.float64)
    if full is not None and tuple(full.bound.shape) == tuple(a.shape):
        allowed = torch.maximum(allowed, full.bound.to(torch.float64))
    err = (m - a).abs()
    bad = ~(err <= allowed) & torch.isfinite(a)
    if aside is not None:
        bad &= ~aside
    if not bool(bad.any()):
        return None
    ratio = torch.where(bad, (err / allowed.clamp_min(torch.finfo(torch.float64).tiny)).nan_to_num(float("inf")), torch.zeros_like(err))
    flat = int(ratio.reshape(-1).argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(a.shape))) if a.dim() else ()
    return index, float(m.reshape(-1)[flat]), float(a.reshape(-1)[flat])
