"""Opt-in (``order=N``, N >= 2; ``double_backward=True`` is ``order=2``), for a case that
passes: the derivatives of the backward, one order at a time, as JAX's
``check_grads(order=N)``.

Order k (2 <= k <= N) checks the gradient of
``psi_k = <u_{k-1}, ... gradient of <u_1, backward> ...>`` (autograd through the user's
backward, differentiated k-1 times) against the reference's k-th derivative (autograd of the
reference, the same weights) and finite differences of ``psi_k`` itself, that is of the
(k-1)-th derivative, which order k-1 has already checked.  The weights ``u_k`` are random
per case: ``u_1`` from ``seed ^ rules.SALT_DOUBLE`` (order 2, as it always was), ``u_k``
for k >= 2 from ``(seed ^ rules.SALT_HIGHER) + k``; order k's random direction (where no
element differs) from ``seed ^ rules.SALT_DOUBLE_DIRECTION`` at order 2, else
``seed ^ (rules.SALT_HIGHER_DIRECTION + k)``.  The first order that fails, disagrees
or meets a kink decides, and the higher ones are not looked at.
"""
from __future__ import annotations

import math

import torch

from ...record.spec import Tensors
from ...verdict import oracles, rules
from ...verdict.oracles import Finding
from ...verdict.tolerance import compare, tolerance
from ..case import float64
from ..measure import fd_ratio, record
from ..result import PASS, decide, settle
from ..state import CaseState

_ORDINALS = {2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh", 8: "eighth", 9: "ninth"}


def ordinal(k: int) -> str:
    """``third`` for 3: the words of a k-th derivative."""
    return _ORDINALS.get(k, f"{k}th")


def _times(k: int) -> str:
    return {1: "once", 2: "twice"}.get(k, f"{k} times")


def _label(k: int) -> str:
    """What a tensor's comparison at order k is called: ``w (double backward)`` at order 2
    (as always), ``w (third derivative)`` above."""
    return "double backward" if k == 2 else f"{ordinal(k)} derivative"


def order_of(state: CaseState) -> int:
    """The highest derivative this case checks: ``--order`` (``case.order``) over the
    record's ``order``, save for a kind whose gradient has no graph to differentiate
    (numpy code, sharded ranks)."""
    if state.case.order is None or not state.model.held_as.higher_orders:
        return state.model.order
    return state.case.order


def run(state: CaseState) -> None:
    model, case, p = state.model, state.case, state.p
    tensors = {n: t for n, t in {**p, **state.d}.items() if n in model.differentiable}
    us = []
    # order 1's derivative and the bound it was judged by, for the allowance order 2 inherits
    first = state.result.tensors
    prior = {n: (state.ag[n], first[n].bound if n in first else None) for n in model.differentiable}
    for k in range(2, order_of(state) + 1):
        gen = torch.Generator().manual_seed(case.seed ^ rules.SALT_DOUBLE if k == 2
                                            else (case.seed ^ rules.SALT_HIGHER) + k - 1)
        us.append({n: torch.randn(tuple(t.shape), generator=gen, dtype=torch.float64).to(t.device, t.dtype)
                   for n, t in tensors.items()})
        prior = _order(state, k, us, prior)
        if state.result.verdict != PASS:
            return


def _order(state: CaseState, k: int, us: list, prior: dict) -> dict:
    """Order ``k`` with weights ``us`` (``k - 1`` of them): the comparison, the probes of
    finite differences, and their verdict on ``state.result``.  ``prior``: per tensor, the
    reference's derivative at order ``k - 1`` and the bound it was judged by (see
    :func:`inherited`); returns the same of order ``k``, for the next."""
    model, case, res, p, d, g = state.model, state.case, state.result, state.p, state.d, state.g
    label = _label(k)
    what = "double backward" if k == 2 else f"{ordinal(k)} derivative"
    manual = state.call(f"{what} through the backward", derivative, model, p, d, g, us, True)
    ref = state.call(f"{what} through the reference", derivative, model, p, d, g, us, False)
    rounding = {}
    p64, d64, g64 = float64(p), float64(d), g.detach().to(torch.float64)
    us64 = [{n: t.to(torch.float64) for n, t in u.items()} for u in us]
    if case.real_dtype != "float64":
        ref64 = state.call(f"{what} through the reference", derivative, model, p64, d64, g64, us64, False)
        rounding = {n: ref[n].to(torch.float64) - ref64[n] for n in ref}
    views = model.views or ()     # complex tensors, in their real view: judged as |z|
    allowed = inherited(prior, us[-1], ref, state.typical, case.dtype)

    def compared() -> dict:
        return {n: compare(f"{n} ({label})", manual[n], ref[n], case.dtype, rounding.get(n), carried=allowed.get(n),
                           pairs=n in views)
                for n in model.differentiable}

    comps = compared()
    if case.real_dtype != "float64" and any(not c.ok for c in comps.values()):
        # the backward's own rounding too, only where the reference's alone is crossed (as the
        # forward's against its reference): a backward that computes sigmoid' as s * (1 - s)
        # cancels far more at order 2 than torch's own formula; the same code in float64 makes
        # the same mistakes, so only rounding differs
        own = state.call(f"{what} through the backward", derivative, model, p64, d64, g64, us64, True)
        for n in model.differentiable:
            gap = (manual[n].to(torch.float64) - own[n].to(manual[n].device)).abs()
            rounding[n] = gap if n not in rounding else torch.maximum(rounding[n].abs(), gap)
        comps = compared()
    res.tensors.update({c.name: c for c in comps.values()})
    tensors64 = {**p64, **d64}
    statuses: dict[str, list[Finding]] = {}

    def probe(name: str, v, dm: float, da: float, tol: float):
        status, est = oracles.judge(oracles.estimates(_psi_line(model, p64, d64, g64, us64, v)), dm, da, tol,
                                    rules.PRECISE)
        statuses.setdefault(name, []).append(status)
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
        salt = rules.SALT_DOUBLE_DIRECTION if k == 2 else (rules.SALT_HIGHER_DIRECTION + k)
        v = oracles.random_direction(model, tensors64, case.seed ^ salt, case.scale)
        dm = sum(float((manual[n].to(torch.float64) * v[n]).sum()) for n in v)
        da = sum(float((ref[n].to(torch.float64) * v[n]).sum()) for n in v)
        probe("a random direction", v, dm, da, sum(float((comps[n].bound.to(v[n].device) * v[n].abs()).sum()) for n in v))
    decision = decide(statuses, mismatched=elements)
    if k == 2:
        settle(res, decision,
               failed="the double backward of {names} disagrees with the reference's second derivative and finite "
                      "differences of the backward",
               disputed="the reference's second derivative and finite differences of the backward disagree on "
                        "{names}: is the reference twice differentiable?",
               kink="a kink in the backward at this point: its own one-sided differences differ")
    else:
        nth, below = ordinal(k), ordinal(k - 1)
        settle(res, decision,
               failed=f"the {nth} derivative of {{names}} (the backward differentiated {_times(k - 1)}) disagrees "
                      f"with the reference's {nth} derivative and finite differences of the {below} derivative",
               disputed=f"the reference's {nth} derivative and finite differences of the {below} derivative disagree "
                        f"on {{names}}: is the reference differentiable {_times(k)}?",
               kink=f"a kink in the {below} derivative at this point: its own one-sided differences differ")
    return {n: (ref[n], comps[n].bound) for n in model.differentiable}


def inherited(prior: dict, u: dict, reference: dict, typical: dict, dtype: str) -> dict[str, torch.Tensor]:
    """What order k may not demand of the reference: the difference order ``k - 1``
    allowed, carried up one order.

    Order k differentiates ``psi_k = sum_m <u_m, a_m>``, ``a_m`` the (k-1)-th derivative of
    tensor m, which order k - 1 accepted within its bound ``b_m`` of the reference's: a
    reference inexact by that much (``F.softplus``, linear above its threshold, whose first
    derivative is 1 where the exact one is ``1 - 3e-14``; a clamp, a ``where`` that switches
    to a tail) is one order k - 1 passed.  A difference of ``b_m`` is a k-th derivative of
    ``b_m`` times the rate at which the computation's derivatives change: ``1 / s_n``
    across the typical size ``s_n`` of tensor n, or, where faster, the reference's own:
    its largest k-th derivative of n over the largest ``|u_m a_m|``, and element by element
    ``|reference_n| / |u_n a_n|`` where ``|u_n a_n|`` is at least ``rules.REL_FLOOR`` of its
    largest (the floor below which relative errors are not taken either); about 4 for a
    softplus of ``4x``.  Below that, order k cannot tell a correct backward from the reference's own
    inexactness.  Element by element, the relative part ``rtol |u_n a_n|`` of the tensor's
    own element (it grows with the element, so a large neighbour widens nothing), plus, for
    every tensor, the largest ``|u_m|`` times the rest of ``b_m`` (its absolute part: the
    floor, the rounding measured).  It is allowed as the computation's carried rounding is
    (``carried`` in :func:`..tolerance.compare`): in full where the reference's k-th
    derivative is below it, as ``allowed**2 / |reference|`` above, so an element well above
    it keeps its relative bound (a 1e-5 relative error in one element of a second or third
    derivative fails)."""
    rtol = tolerance(dtype).rtol
    terms = 0.0
    own, absolute = {}, {}
    for m, (a, b) in prior.items():
        if m not in u or b is None or b.shape != a.shape or not a.numel():
            continue
        w = u[m].detach().to("cpu", torch.float64).abs()
        weighted = a.detach().to("cpu", torch.float64).abs().nan_to_num_(0.0, 0.0, 0.0).mul_(w)
        terms += float(weighted.max())
        rel = weighted.mul_(rtol)
        bw = b.detach().to("cpu", torch.float64).mul(w).nan_to_num_(0.0, 0.0, 0.0)
        absolute[m] = float(bw.sub_(rel).clamp_min_(0.0).max())
        own[m] = rel
    out = {}
    for n, rel in own.items():
        s, r = typical.get(n, 0.0), reference.get(n)
        if r is None or r.shape != rel.shape:
            continue
        r = _finite(r)
        rate = float(r.max()) / terms if terms > 0 else 0.0     # the reference's own rate ...
        big = rel >= rules.REL_FLOOR * float(rel.max())
        if float(rel.max()) > 0 and bool(big.any()):    # ... and its elements', where not negligible
            rate = max(rate, float((r[big] / rel[big]).max()) * rtol)
        across = max(rate, 1.0 / s if 0 < s < math.inf else 0.0)
        if not (math.isfinite(rate) and math.isfinite(across)):
            continue
        # where the reference's k-th derivative is exactly 0 (a piece, a clamp, a saturated
        # tail) it has no rate of its own: the input's typical size stands in for it
        flat = r == 0
        out[n] = rel.add_(sum(absolute.values())).mul_(torch.where(flat, across, rate)).nan_to_num_(0.0, 0.0, 0.0)
    return out


def _finite(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64).abs().nan_to_num_(0.0, 0.0, 0.0)


def derivative(model, p: Tensors, d: Tensors, g: torch.Tensor, us: list, manual: bool) -> dict[str, torch.Tensor]:
    """The gradient of ``psi = <u_{k-1}, ... gradient of <u_1, first> ...>`` (``k - 1 =
    len(us)``), where ``first`` is the first-order gradient through the user's backward
    (``manual``) or through autograd of the reference: the k-th derivative, weighted."""
    names = model.differentiable
    leaves = {n: (p[n] if n in p else d[n]).detach().clone().requires_grad_(True) for n in names}
    with torch.enable_grad():
        grads = _weighted(model, p, d, g, us, manual, leaves, last=True)
    return {n: torch.zeros_like(leaves[n]) if s is None else s.detach() for n, s in zip(names, grads)}


def _weighted(model, p: Tensors, d: Tensors, g: torch.Tensor, us: list, manual: bool, leaves, last: bool) -> list:
    """The first-order gradient at ``leaves``, then, for each weight ``u`` in ``us``, the
    gradient of ``<u, previous>``: a graph of the leaves for every step but the ``last``
    (where ``last`` is False, the result stays differentiable)."""
    names = model.differentiable
    P = Tensors((n, leaves[n] if n in leaves else t) for n, t in p.items())
    D = Tensors((n, leaves.get(n, t)) for n, t in d.items())
    if manual:
        out, cache = model.forward(P, D)
        grads = model.backward(P, D, cache, g)
        current = [grads[n] for n in names]
    else:
        out = oracles.differentiated(model, P, D)
        current = list(torch.autograd.grad(out, [leaves[n] for n in names], grad_outputs=g, create_graph=True,
                                           allow_unused=True))
    for i, u in enumerate(us):
        terms = [(f * u[n]).sum() for n, f in zip(names, current) if f is not None and f.requires_grad]
        if not terms:
            return [None] * len(names)
        final = last and i == len(us) - 1
        current = list(torch.autograd.grad(sum(terms), [leaves[n] for n in names], allow_unused=True,
                                           create_graph=not final))
    return current


def _psi_line(model, p64: Tensors, d64: Tensors, g64: torch.Tensor, us64: list, v):
    """t -> (psi at theta + t v, its magnitude): finite differences of the (k-1)-th
    derivative, weighted by the last of ``us64`` (by autograd through the backward, which
    the orders below have checked; the backward alone at order 2)."""
    names, u = model.differentiable, us64[-1]

    def phi(t: float) -> tuple[float, float]:
        P = Tensors((n, x + t * v[n] if n in v else x) for n, x in p64.items())
        D = Tensors((n, x + t * v[n] if n in v else x) for n, x in d64.items())
        if len(us64) == 1:
            with torch.no_grad():
                out, cache = model.forward(P, D)
                grads = model.backward(P, D, cache, g64)
            current = [grads[n] for n in names]
        else:
            leaves = {n: (P[n] if n in P else D[n]).detach().clone().requires_grad_(True) for n in names}
            with torch.enable_grad():
                current = _weighted(model, P, D, g64, us64[:-1], True, leaves, last=True)
        now = dict(zip(names, current))
        terms = [(now[n].detach().to(torch.float64) * u[n]) for n in u if now[n] is not None]
        if not terms:
            return 0.0, 0.0
        return float(sum(t.sum() for t in terms)), float(sum(t.abs().sum() for t in terms))

    return phi
