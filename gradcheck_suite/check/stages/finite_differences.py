"""The second oracle: finite differences of the forward, in float64.

Where the manual gradient and autograd differ, finite differences examine the worst
elements and say which of the two they side with (or a kink); where they agree, tensors of
up to ``rules.SMALL_TENSOR`` elements are probed element by element, and a random direction
over every element confirms the rest.  :func:`..result.decide` maps the findings to the
verdict.  A forward that fails in float64 leaves autograd alone to judge, and ends the case.
"""
from __future__ import annotations

import itertools
import traceback
from collections.abc import Mapping

import torch

from ...record.blame import ours, where
from ...verdict import oracles, rules
from ...verdict.oracles import Finding
from ...verdict.tolerance import TensorComparison, compare, noise as compare_noise, rel_floor, unravel
from ..floor import with_floor
from ..measure import fd_ratio, record, resolved
from ..result import DISAGREE, FAIL, NONDIFF, PASS, SKIPPED, by_comparison, decide
from ..state import CaseState, Stop, internal
from . import reference


def run(state: CaseState) -> None:
    model, case, res = state.model, state.case, state.result
    res.phase = "finite differences"
    try:
        if case.real_dtype == "float64":
            out64 = state.out               # the case's own forward already ran in float64
        else:
            with torch.no_grad():
                out64 = model.forward(state.p64, state.d64)[0]
            if state.ref64 is not None and isinstance(out64, torch.Tensor):
                # how precise the forward is in float64, against the reference's float64 output
                # the reference stage kept: one that computes in float32 inside gives its finite
                # differences a float32 noise floor (as reference.py does for a float64 case)
                state.forward_gap = reference.forward_gap(out64, state.ref64)
    except Exception as e:
        res.fd_ran = False
        res.notes.append(f"no second oracle: the forward fails in float64 ({type(e).__name__}: {e}), so finite "
                         "differences did not run; the reference's autograd alone judged this case")
        decision = by_comparison(res)
        res.failing = decision.failing
        if decision.verdict == FAIL:
            res.verdict = FAIL
        raise Stop() from None
    try:
        _Probes(state, out64).judge(judge_all=not state.overflow)
    except Stop:            # autograd, traced late, broke: already reported
        raise
    except Exception as e:  # the user's forward, at a point a finite-difference step away
        if ours(e):         # or the harness itself: never blamed on the model
            internal(res, "taking finite differences", e)
            raise Stop() from None
        res.traceback = "".join(traceback.format_exception(e))
        raise state.error(f"forward raised {type(e).__name__}: {e}{where(e)}, at a point a small step away "
                          "from the case (finite differences); keep the model's domain in its record") from None
    if state.overflow and res.verdict in (PASS, NONDIFF):
        res.verdict = SKIPPED


class _Probes:
    """The probes of one case.  :func:`with_floor` traces autograd for the forward's
    rounding bound and compares with the computation floor, where that has not run yet;
    only the random direction, where every element agreed within the tighter bound, can go
    without it.

    ``state.tolerated``: tensors within the bound only thanks to the measured jitter, with
    their comparison without it.  Their worst elements are probed against that tighter
    bound: the jitter is an allowance for what no oracle can resolve, so where finite
    differences do resolve the element and side with autograd, the manual gradient fails
    (an error that moves to another element at a nearby point looks like jitter)."""

    def __init__(self, state: CaseState, out64: torch.Tensor):
        self.state, self.out64 = state, out64
        self.model, self.case, self.res = state.model, state.case, state.result
        self.grads, self.ag, self.sizes = state.grads, state.ag, state.typical
        self.tensors64 = {**state.p64, **state.d64}
        self.findings: dict[str, list[Finding]] = {}   # tensor -> what its probes concluded
        self.gen = torch.Generator().manual_seed(self.case.seed ^ rules.SALT_EXAMINE)
        self.fused: list[dict[str, torch.Tensor] | None] = []

    def judge(self, judge_all: bool = True) -> None:
        model, res, grads, ag, gen = self.model, self.res, self.grads, self.ag, self.gen
        mismatched = [c for c in res.tensors.values() if not c.ok]
        for c in mismatched:
            worst = [e.index for e in c.worst if e.ratio > 1]
            found = [self.examine(c.name, i) for i in worst]
            if all(f is Finding.KINK for f in found):
                # all kinks: a few more mismatched elements, at random, beyond those already seen
                bad = (_ratio(grads[c.name], ag[c.name], c) > 1).reshape(-1).nonzero().reshape(-1)
                drawn = bad[torch.randperm(bad.numel(), generator=gen)[:rules.EXAMINE + len(worst)]].tolist()
                others = (unravel(i, c.shape) for i in drawn)
                for idx in itertools.islice((i for i in others if i not in worst), rules.EXAMINE):
                    self.examine(c.name, idx)
        for name, tight in self.state.tolerated.items():
            for e in [e for e in tight.worst if e.ratio > 1][:rules.EXAMINE]:
                if self.examine(name, e.index, tight) is Finding.FOR_AUTOGRAD:
                    mismatched.append(tight)
                    break

        if not mismatched and judge_all:
            for n in model.differentiable:
                x = self.tensors64[n]
                if 0 < x.numel() <= rules.SMALL_TENSOR:
                    for i in range(x.numel()):
                        self.examine(n, unravel(i, tuple(x.shape)))
            for k in range(rules.PROBES):
                if self.direction(k, {}) is Finding.KINK:
                    # a kink somewhere along it: judge element by element, the kinks set aside
                    for n in model.differentiable:
                        x = self.tensors64[n]
                        if x.numel() > rules.SMALL_TENSOR:
                            for i in torch.randperm(x.numel(), generator=gen)[:rules.EXAMINE].tolist():
                                self.examine(n, unravel(i, tuple(x.shape)))
        elif mismatched and judge_all and _only_kinks(self.findings):
            # every difference examined sits on a kink: the elements that differ are set aside,
            # and a random direction over the rest decides
            masks = {c.name: _ratio(grads[c.name], ag[c.name], c) > 1 for c in mismatched}
            if self.direction(0, masks) is Finding.AGREE:
                mismatched = []
                # the worst relative error is that of the elements judged, the kinks left out
                res.autograd_rel_err = max((_rel_err(grads[n], ag[n], masks.get(n)) for n in model.differentiable),
                                           default=0.0)
                res.autograd_ratio = max((_worst(_ratio(grads[n], ag[n], res.tensors[n])[~masks[n]])
                                          if n in masks else res.tensors[n].max_ratio for n in model.differentiable),
                                         default=0.0)
        self.verdict(bool(mismatched))

    def verdict(self, mismatched: bool) -> None:
        res, findings = self.res, self.findings
        decision = decide(findings, mismatched=mismatched, kinks_aside=True)
        res.failing = decision.failing
        if decision.verdict == FAIL:
            res.verdict = FAIL
        elif decision.verdict == DISAGREE:
            res.verdict = DISAGREE
            res.problems.append(
                "autograd and finite differences disagree on " + ", ".join(decision.disputed)
                + ": is the forward differentiable, and does it hide a custom autograd Function? (A gradient "
                "that is not the derivative on purpose, straight-through or gradient reversal: set surrogate=True, "
                "with a reference whose autograd gives it.)")
        elif decision.set_aside:
            # judged element by element: the kinks set aside, and the rest agree
            counts = ", ".join(f"{n}: {found.count(Finding.KINK)}" for n, found in findings.items()
                               if n in decision.kinks)
            res.notes.append(f"elements at a kink or tie set aside ({counts} probed); the rest agree")
        elif decision.verdict == NONDIFF:
            res.verdict = NONDIFF
            res.notes.append("a kink or tie at this point (" + ", ".join(decision.kinks)
                             + "): one-sided differences differ, so the gradient there is a matter of convention")

    def probe(self, direction, resolution: float | None = None) -> oracles.Line:
        s = self.state
        resolution = with_floor(s).resolution if resolution is None else resolution
        return oracles.line(self.model, s.p64, s.d64, s.g, direction, max(resolution, self.coarse()),
                            at_zero=self.out64)

    def coarse(self) -> float:
        """The forward's own noise floor where it computes inside in a lower precision than
        float64 (``state.forward_gap``, its distance from the float64 reference): as a
        rounding scale (``oracles.Line``), the bound ``sum|g| * gap`` on what that noise
        moves ``<g, f>``, over float64's eps; 0 for a forward precise to float64."""
        gap = self.state.forward_gap
        if gap <= 0:
            return 0.0
        return gap * float(self.state.g.detach().abs().sum(dtype=torch.float64)) / rules.EPS64

    def examine(self, name: str, index: tuple[int, ...], against: TensorComparison | None = None) -> Finding:
        """One element, probed alone; ``against``: a comparison without the jitter, that
        only a disagreement resolved for autograd puts back in place."""
        res, model, case, s = self.res, self.model, self.case, self.state
        with_floor(s)              # the bound below is the one with the computation floor
        x = self.tensors64[name]
        v = oracles.element_direction(x, name, index, case.scale)
        size = float(v[name][index])
        m, a = float(self.grads[name][index]), float(self.ag[name][index])
        tol = float((against or res.tensors[name]).bound[index]) * size
        finding, est = oracles.judge(oracles.estimates(self.probe(v)), m * size, a * size, tol, rules.PRECISE)
        if finding is Finding.UNRESOLVED and oracles.jumps(model, s.p64, s.d64, s.g, name, index, size, m, tol / size):
            finding = Finding.KINK       # on a kink that the forward's rounding hides from every step
        if finding is Finding.UNRESOLVED and case.real_dtype == "float64" and self.within_fused_rounding(name, index, m, a):
            finding = Finding.AGREE      # autograd's own rounding inside a fused op covers the difference
        if against is not None:    # only a resolved disagreement overrides the jitter
            if finding is not Finding.FOR_AUTOGRAD:
                return finding
            res.tensors[name] = against
        self.findings.setdefault(name, []).append(finding)
        fd_ratio(res, est, m * size, tol, finding)
        kink = finding is Finding.KINK
        if resolved(est, max(abs(a), abs(m)) * size) and not kink:
            fd = est.value / size
            scale = max(abs(fd), rel_floor(self.grads[name], self.ag[name]), rules.TINY)
            res.fd_rel_err = min(rules.HUGE, max(res.fd_rel_err, abs(m - fd) / scale))
        record(res.tensors[name], index, None if est is None else est.value / size, kink)
        return finding

    def within_fused_rounding(self, name: str, index: tuple[int, ...], m: float, a: float) -> bool:
        """Where finite differences cannot tell the two apart: is the difference within the
        gap between autograd and autograd of the same oracle with its fused ops decomposed
        (``oracles.decomposed_autograd``), the oracle's own error that no hook sees?"""
        fused, s = self.fused, self.state
        if not fused:
            fused.append(oracles.decomposed_autograd(self.model, s.p64, s.d64, s.g))
            if fused[0] is not None:
                fused[0] = {n: (t.double() - self.ag[n].double()).abs() for n, t in fused[0].items()}
        if fused[0] is None or name not in fused[0]:
            return False
        gap = float(fused[0][name].max()) if fused[0][name].numel() else 0.0
        allowed = float(self.res.tensors[name].bound[index]) + compare_noise(self.case.dtype) * gap
        if gap > 0 and abs(m - a) <= allowed:
            self.res.notes.append(f"{name}: autograd's oracle carries {gap:.1e} of rounding inside fused ops "
                                  f"(against the same oracle decomposed); the difference at {list(index)} is within it")
            return True
        return False

    def direction(self, k: int, masks: Mapping[str, torch.Tensor]) -> Finding:
        """One random direction over every element outside ``masks`` (kinks set aside)."""
        res, sizes, grads, ag, s = self.res, self.sizes, self.grads, self.ag, self.state
        v = oracles.random_direction(self.model, self.tensors64, self.case.seed * rules.SALT_PROBES + k,
                                     self.case.scale, sizes)
        for n, mask in masks.items():
            v[n].masked_fill_(mask.to(v[n].device), 0.0)
        dm = sum(_dot(grads[n], v[n]) for n in v)
        da = sum(_dot(ag[n], v[n]) for n in v)

        def tolerance() -> float:   # |v| is each tensor's size wherever it is not set aside
            return sum(sizes[n] * float((res.tensors[n].bound if n not in masks else
                                         res.tensors[n].bound.masked_fill(masks[n], 0.0)).sum()) for n in v)

        # the two-call difference first with the tighter bounds and no rounding bound: what
        # it accepts, the full ones accept too (both only widen the allowance)
        phi = self.probe(v, 0.0)
        tol = tolerance()
        est = oracles.central(phi, rules.AGREED_STEPS[0], da, tol)
        if est is None:
            phi.resolution = max(with_floor(s).resolution, self.coarse())
            tol = tolerance()
            est = oracles.central(phi, rules.AGREED_STEPS[0], da, tol)
        if est is not None:
            finding = Finding.AGREE
            fd_ratio(res, est, da, tol, finding)      # it confirmed autograd, which the manual gradient matched
        else:
            finding, est = oracles.judge(oracles.estimates(phi, rules.AGREED_STEPS), dm, da, tol, rules.PRECISE)
            fd_ratio(res, est, dm, tol, finding)
        self.findings.setdefault("a random direction", []).append(finding)
        if resolved(est, max(abs(da), abs(dm))) and finding is not Finding.KINK:
            mag = sum(sizes[n] * _norm1(ag[n]) for n in v)
            mag = mag or sum(sizes[n] * _norm1(grads[n]) for n in v) / rules.REL_FLOOR
            rel = abs(dm - est.value) / max(abs(est.value), rules.REL_FLOOR * mag, rules.TINY)
            res.fd_rel_err = min(rules.HUGE, max(res.fd_rel_err, rel))
        return finding


def _worst(values: torch.Tensor) -> float:
    return min(rules.HUGE, float(values.max())) if values.numel() else 0.0


def _rel_err(m: torch.Tensor, a: torch.Tensor, mask: torch.Tensor | None) -> float:
    """The worst relative error of ``m`` against ``a`` outside ``mask``, as ``compare`` takes it."""
    if mask is not None:
        m, a = m.detach().cpu()[~mask], a.detach().cpu()[~mask]
    return compare("", m, a, "float64").max_rel_err


def _only_kinks(findings: Mapping[str, list[Finding]]) -> bool:
    found = [f for fs in findings.values() for f in fs]
    return bool(found) and all(f is Finding.KINK for f in found)


def _norm1(a: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a.detach(), 1, dtype=torch.float64))


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> in float64, without a temporary the size of the tensors."""
    return float(torch.dot(a.detach().to(torch.float64).reshape(-1), b.detach().to(torch.float64).reshape(-1)))


def _ratio(m: torch.Tensor, a: torch.Tensor, c: TensorComparison) -> torch.Tensor:
    m64, a64 = m.detach().to("cpu", torch.float64), a.detach().to("cpu", torch.float64)
    return ((m64 - a64).abs() / c.bound).where(torch.isfinite(a64), torch.zeros_like(a64))
