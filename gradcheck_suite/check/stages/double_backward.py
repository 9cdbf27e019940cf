"""Opt-in (``double_backward=True``), for a case that passes: the gradient of
``<u, backward>`` against the reference's second derivative and finite differences of the
(already checked) backward."""
from __future__ import annotations

import torch

from ...record.spec import Tensors
from ...verdict import oracles, rules
from ...verdict.oracles import Finding
from ...verdict.tolerance import compare
from ..case import float64
from ..measure import fd_ratio, record
from ..result import DISAGREE, FAIL, NONDIFF, decide
from ..state import CaseState


def run(state: CaseState) -> None:
    model, case, res, p, d, g = state.model, state.case, state.result, state.p, state.d, state.g
    gen = torch.Generator().manual_seed(case.seed ^ rules.SALT_DOUBLE)
    u = {n: torch.randn(tuple(t.shape), generator=gen, dtype=torch.float64).to(t.device, t.dtype)
         for n, t in {**p, **d}.items() if n in model.differentiable}
    manual = state.call("double backward through the backward", _second_order, model, p, d, g, u, True)
    ref = state.call("double backward through the reference", _second_order, model, p, d, g, u, False)
    rounding = {}
    p64, d64, g64 = float64(p), float64(d), g.detach().to(torch.float64)
    u64 = {n: t.to(torch.float64) for n, t in u.items()}
    if case.real_dtype != "float64":
        ref64 = state.call("double backward through the reference", _second_order, model, p64, d64, g64, u64, False)
        rounding = {n: ref[n].to(torch.float64) - ref64[n] for n in ref}
    views = model.views or ()     # complex tensors, in their real view: judged as |z|
    comps = {n: compare(f"{n} (double backward)", manual[n], ref[n], case.dtype, rounding.get(n), pairs=n in views)
             for n in model.differentiable}
    res.tensors.update({c.name: c for c in comps.values()})
    tensors64 = {**p64, **d64}
    statuses: dict[str, list[Finding]] = {}

    def probe(label: str, v, dm: float, da: float, tol: float):
        status, est = oracles.judge(oracles.estimates(_psi_line(model, p64, d64, g64, u64, v)), dm, da, tol,
                                    rules.PRECISE)
        statuses.setdefault(label, []).append(status)
        fd_ratio(res, est, dm, tol, status)
        return status, est

    for n, c in comps.items():
        for e in [e for e in c.worst if e.ratio > 1]:
            v = oracles.element_direction(tensors64[n], n, e.index, case.scale)
            size = float(v[n][e.index])
            _, est = probe(c.name, v, e.manual * size, e.autograd * size, float(c.bound[e.index]) * size)
            record(c, e.index, None if est is None else est.value / size, est is None or est.kink)
    elements = bool(statuses)     # elements differ, and were probed: only they can fail the backward
    if not statuses:
        v = oracles.random_direction(model, tensors64, case.seed ^ rules.SALT_DOUBLE_DIRECTION, case.scale)
        dm = sum(float((manual[n].to(torch.float64) * v[n]).sum()) for n in v)
        da = sum(float((ref[n].to(torch.float64) * v[n]).sum()) for n in v)
        probe("a random direction", v, dm, da, sum(float((comps[n].bound.to(v[n].device) * v[n].abs()).sum()) for n in v))
    decision = decide(statuses, mismatched=elements)
    res.failing = decision.failing
    if decision.verdict == FAIL:
        res.verdict = FAIL
        res.summary = (f"the double backward of {', '.join(n.split(' ')[0] for n in res.failing)} disagrees with the "
                       "reference's second derivative and finite differences of the backward")
    elif decision.verdict == DISAGREE:
        res.verdict = DISAGREE
        res.problems.append("the reference's second derivative and finite differences of the backward disagree on "
                            + ", ".join(decision.disputed) + ": is the reference twice differentiable?")
    elif decision.verdict == NONDIFF:
        res.verdict = NONDIFF
        res.notes.append("a kink in the backward at this point: its own one-sided differences differ")


def _second_order(model, p: Tensors, d: Tensors, g: torch.Tensor, u, manual: bool) -> dict[str, torch.Tensor]:
    """The gradient of psi = <u, first-order gradient>, through the user's backward
    (``manual``) or through autograd of the reference."""
    names = model.differentiable
    leaves = {n: (p[n] if n in p else d[n]).detach().clone().requires_grad_(True) for n in names}
    P = Tensors((n, leaves[n]) for n in p)
    D = Tensors((n, leaves.get(n, t)) for n, t in d.items())
    with torch.enable_grad():
        if manual:
            out, cache = model.forward(P, D)
            grads = model.backward(P, D, cache, g)
            first = [grads[n] for n in names]
        else:
            out = oracles.differentiated(model, P, D)
            first = torch.autograd.grad(out, [leaves[n] for n in names], grad_outputs=g, create_graph=True,
                                        allow_unused=True)
        terms = [(f * u[n]).sum() for n, f in zip(names, first) if f is not None and f.requires_grad]
        if not terms:
            return {n: torch.zeros_like(leaves[n]) for n in names}
        second = torch.autograd.grad(sum(terms), [leaves[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(leaves[n]) if s is None else s.detach() for n, s in zip(names, second)}


def _psi_line(model, p64: Tensors, d64: Tensors, g64: torch.Tensor, u64, v):
    """t -> (<u, backward(theta + t v)>, its magnitude): finite differences of the backward."""
    def phi(t: float) -> tuple[float, float]:
        P = Tensors((n, x + t * v[n] if n in v else x) for n, x in p64.items())
        D = Tensors((n, x + t * v[n] if n in v else x) for n, x in d64.items())
        with torch.no_grad():
            out, cache = model.forward(P, D)
            grads = model.backward(P, D, cache, g64)
        terms = [(grads[n].to(torch.float64) * u64[n]) for n in u64]
        return float(sum(t.sum() for t in terms)), float(sum(t.abs().sum() for t in terms))

    return phi
