"""No autograd oracle (numpy code without a reference): finite differences alone, a
two-way verdict.  Up to ``rules.FD_ONLY_ELEMENTS`` elements of each tensor are probed one
by one, the rest together along one random direction."""
from __future__ import annotations

import torch

from ...verdict import oracles, rules
from ...verdict.oracles import Finding
from ...verdict.tolerance import Element, TensorComparison, bound, unravel
from ..case import float64
from ..measure import fd_ratio
from ..result import decide, settle
from ..state import CaseState


def run(state: CaseState) -> None:
    model, case, res, g, grads = state.model, state.case, state.result, state.g, state.grads
    res.notes.append("no reference: checked against finite differences alone (a two-way verdict)")
    p64, d64 = float64(state.p), float64(state.d)
    tensors64 = {**p64, **d64}
    gen = torch.Generator().manual_seed(case.seed ^ rules.SALT_FD_ONLY)
    statuses: dict[str, list[Finding]] = {}
    for n in model.differentiable:
        x, m = tensors64[n], grads[n].detach().to("cpu", torch.float64)
        b = bound(m, case.dtype)
        picks = (range(x.numel()) if x.numel() <= rules.FD_ONLY_ELEMENTS
                 else torch.randperm(x.numel(), generator=gen)[:rules.FD_ONLY_ELEMENTS].tolist())
        rows = []
        for i in picks:
            idx = unravel(i, tuple(x.shape))
            v = oracles.element_direction(x, n, idx, case.scale)
            size = float(v[n][idx])
            mi, tol = float(m[idx]), float(b[idx]) * size
            status, est = oracles.judge(oracles.estimates(oracles.line(model, p64, d64, g, v)), mi * size, mi * size,
                                        tol, rules.PRECISE)
            statuses.setdefault(n, []).append(status)
            if est is not None:
                allowed = (rules.ESTIMATE_ERRORS * est.error + tol) / size
                rows.append((idx, mi, est.value / size, allowed, status is Finding.KINK))
        if x.numel() > rules.FD_ONLY_ELEMENTS:   # the elements not probed one by one, all at once
            v = {n: torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.device) * oracles.scale_of(x, case.scale)}
            dm = float((m.to(x.device) * v[n]).sum())
            status, est = oracles.judge(oracles.estimates(oracles.line(model, p64, d64, g, v)), dm, dm,
                                        float((b.to(x.device) * v[n].abs()).sum()), rules.PRECISE)
            fd_ratio(res, est, dm, float((b.to(x.device) * v[n].abs()).sum()), status)
            statuses[n].append(status)
        res.tensors[n] = _fd_comparison(n, m, b, rows, statuses[n].count(Finding.NEITHER))
        res.fd_rel_err = max(res.fd_rel_err, res.tensors[n].max_rel_err)
        res.fd_ratio = max(res.fd_ratio, max((e.ratio for e in res.tensors[n].worst if not e.kink), default=0.0))
    settle(res, decide(statuses, two_way=True),
           failed="the manual gradient of {names} disagrees with finite differences (no reference, so a two-way check)",
           kink="a kink at this point: one-sided differences differ")


def _fd_comparison(name: str, m: torch.Tensor, b: torch.Tensor, rows, mismatched: int) -> TensorComparison:
    """A comparison of the probed elements with finite differences (there is no autograd column)."""
    floor = max(rules.REL_FLOOR * float(m.abs().max()) if m.numel() else 0.0, rules.TINY)
    elements = [Element(idx, mi, None, fd, abs(mi - fd), min(rules.HUGE, abs(mi - fd) / max(abs(fd), floor)),
                        min(rules.HUGE, abs(mi - fd) / max(allowed, rules.TINY)), kink)
                for idx, mi, fd, allowed, kink in rows]
    elements.sort(key=lambda e: -e.ratio)
    return TensorComparison(name, tuple(m.shape), mismatched, max((e.rel_err for e in elements), default=0.0),
                            max((e.ratio for e in elements), default=0.0), elements[:rules.WORST], b)
