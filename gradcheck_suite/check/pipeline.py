"""One case, both oracles, one verdict.

pass             the manual gradient agrees with autograd in every element, and both
                 agree with finite differences
fail             the manual gradient disagrees with oracles that agree with each other;
                 or the forward differs from the record's reference; or (opted in) the
                 double backward disagrees with the reference's second derivative.
                 numpy code without a reference is judged by finite differences alone
oracles disagree autograd and finite differences differ (a forward autograd cannot see
                 through, e.g. a custom autograd Function with its own backward)
non-differentiable point
                 a kink or a tie where the gradients differ: never a failure
skipped          the forward is not finite at this case's values (a domain matter)
error            a broken contract: missing or extra gradients, wrong shape, dtype or
                 device, NaN/Inf where autograd is finite, inputs changed in place,
                 another result on a later call, an exception; for a shipped op also a
                 tensor saved on ctx changed in place, a gradient for a non-tensor
                 argument, or another gradient when some other input is frozen
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
import traceback
from collections.abc import Mapping

import torch

from . import layouts
from ..verdict import oracles
from ..record.blame import ours, where
from .case import (Bound, Case, ContractError, FactoryError, as_tensor_hint, build, describe, float64, split,
                   upstream)
from ..verdict.tolerance import (HUGE, REL_FLOOR, TINY, WORST, Element, TensorComparison, _finite_abs, all_finite, bound, compare,
                      computation_floor, noise as compare_noise, rel_floor, unravel)
from ..verdict.oracles import Finding
from ..record.spec import Model, Tensors

PASS, FAIL, DISAGREE, NONDIFF, SKIPPED, ERROR = (
    "pass", "fail", "oracles disagree", "non-differentiable point", "skipped", "error")
SMALL = 16       # tensors this small get a finite difference for every element
PROBES = 1       # random directions per case (every element is compared with autograd)
EXAMINE = 5      # mismatched elements examined with finite differences, per tensor
PRECISE = 1e-6   # a finite-difference estimate this close (relative) needs no other step


@dataclasses.dataclass
class CaseResult:
    model: str
    case: Case
    verdict: str = PASS
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    tensors: dict[str, TensorComparison] = dataclasses.field(default_factory=dict)
    failing: list[str] = dataclasses.field(default_factory=list)
    autograd_rel_err: float = 0.0
    fd_rel_err: float = 0.0
    autograd_ratio: float = 0.0    # the worst error against autograd over its tolerance: what decided
    fd_ratio: float = 0.0          # the worst distance from finite differences over the allowance they judged
    seconds: float = 0.0
    traceback: str | None = None   # of an exception from the model's code, for --verbose
    summary: str | None = None     # the headline, where it is not "the manual gradient of ... disagrees"
    phase: str = ""                # what runs now (or ran last): forward, backward, ...
    internal: bool = False         # the error is the harness's own (its traceback is always shown)
    diagnosis: list = dataclasses.field(default_factory=list)   # diagnose.Kind per failing tensor
    location: object = None        # diagnose.Location: the first wrong line of the backward
    location_note: str | None = None   # why there is no location
    fd_ran: bool = True            # False: no second oracle ran (the forward fails in float64)
    deferred: str | None = None    # a contract problem judged after the values (see _op_contract)

    @property
    def ok(self) -> bool:
        """Not a failure: pass, and the verdicts that set a case aside."""
        return self.verdict in (PASS, NONDIFF, SKIPPED)

    @property
    def score(self) -> float:
        """Worst error over its tolerance; hypothesis steers toward large values."""
        return max((c.max_ratio for c in self.tensors.values()), default=0.0)


class _Stop(Exception):
    pass


def check_case(model: Model, case: Case, res: CaseResult | None = None) -> CaseResult:
    """Judge one case; ``res``, when given, is filled in (another thread may watch its phase)."""
    res = CaseResult(model.name, case) if res is None else res
    start = time.perf_counter()
    try:
        _check(model, case, res)
    except _Stop:
        pass
    except Exception as e:  # the harness itself, on this model's case: never read as the user's
        _internal(res, "checking the case", e)
    if res.deferred:
        if res.verdict == FAIL:          # wrong values come first: the contract problem explains them
            res.notes.append(res.deferred)
        elif res.verdict in (PASS, NONDIFF, SKIPPED):
            res.verdict = ERROR
            res.problems.insert(0, res.deferred)
        else:
            res.problems.append(res.deferred)
    res.seconds = time.perf_counter() - start
    return res


def _error(res: CaseResult, text: str) -> _Stop:
    res.verdict = ERROR
    res.problems.append(text)
    return _Stop()


def _call(res: CaseResult, what: str, fn, *args):
    res.phase = what
    try:
        return fn(*args)
    except (FactoryError, ContractError) as e:
        raise _error(res, str(e)) from None
    except Exception as e:  # the user's code: report it, never a traceback
        if ours(e):
            _internal(res, what, e)
            raise _Stop() from None
        res.traceback = "".join(traceback.format_exception(e))
        raise _error(res, f"{what} raised {type(e).__name__}: {e}{where(e)}") from None


def _internal(res: CaseResult, what: str, e: BaseException) -> None:
    """A failure of gradcheck-suite itself: said so, with the traceback, never blamed on the model."""
    res.traceback = "".join(traceback.format_exception(e))
    res.internal = True
    res.verdict = ERROR
    frame = traceback.extract_tb(e.__traceback__)[-1]
    res.problems.append(f"internal error in gradcheck-suite while {what}: {type(e).__name__}: {e} "
                        f"(at {frame.filename}:{frame.lineno}); this is not your model's fault: "
                        "please report it with the traceback below")


def _check(model: Model, case: Case, res: CaseResult) -> None:
    model = Bound(model, case)   # hyperparameters passed on, a tuple of outputs joined
    p, d = _call(res, "the tensor factory", build, model, case)
    before = _snapshot(p, d)
    returned, leaves, graph = _forward(model, res, p, d)
    if not (isinstance(returned, tuple) and len(returned) == 2):
        raise _error(res, f"forward must return (output, cache), got {type(returned).__name__}")
    out, cache = returned
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise _error(res, f"forward's output must be a floating-point tensor, got {describe(out)}"
                          + as_tensor_hint(out, "the output"))
    _unchanged(res, "forward", before, p, d)
    if not all_finite(out):
        res.verdict = SKIPPED
        res.notes.append(f"the forward's output is not finite at scale {case.scale!r}; nothing to compare")
        return
    _reference_forward(model, case, res, p, d, out, before)
    g = upstream(out, case.seed)
    before["upstream gradient g"] = g.clone()
    what = "autograd on the " + ("reference" if model.reference else "forward")
    early = None      # autograd through the forward's own graph, before the backward can touch the cache
    if graph is not None:
        res.phase = what
        try:
            early = oracles.vjp(graph, g, leaves)
        except Exception:
            pass          # autograd runs again in its place below, and reports what it raises
        graph = None

    with torch.no_grad():
        grads = _call(res, "backward", model.backward, p, d, cache, g)
    _contract(model, res, p, d, grads)
    _op_contract(model, res, p, d, g)
    _unchanged(res, "backward", before, p, d, g)
    del before        # copies of every input: not read again (a 4096x4096 weight is 67 MB in float32)
    again = _repeated_calls(model, res, p, d, cache, g)
    if model.two_way:
        _repeated_backward(model, res, grads, again, None)
        _fd_only(model, case, res, p, d, g, grads)
        _layouts(model, res, p, d, g, grads, out)
        return

    ag = early if early is not None else _call(res, what, oracles.traced_autograd, model, p, d, g, False).grads
    p64, d64 = float64(p), float64(d)
    rounding = _rounding(model, case, p64, d64, g, ag)
    finite = {n: True if all_finite(ag[n]) else torch.isfinite(ag[n]) for n in model.differentiable}
    for n in model.differentiable:
        if all_finite(grads[n]):
            continue
        bad = ~torch.isfinite(grads[n]) & finite[n]
        if bool(bad.any()):
            idx = [tuple(i) for i in bad.nonzero().tolist()[:3]]
            raise _error(res, f"{n}: the manual gradient is NaN or Inf at {int(bad.sum())} element(s) where "
                              f"autograd is finite, e.g. at {', '.join(map(str, idx))}")
    typical = {n: oracles.scale_of(_tensor(p64, d64, n), case.scale) for n in model.differentiable}
    traced: list[oracles.Traced] = []
    tolerated: dict[str, TensorComparison] = {}   # tensor -> its comparison without the jitter
    carried: dict[str, torch.Tensor] = {}   # tensor -> the rounding the computation carries to it (see full())

    def full() -> oracles.Traced:
        """The comparison with the computation floor, which needs autograd traced once more
        (hooks on every value the forward computes); the bounds only widen."""
        if not traced:
            phase = res.phase
            traced.append(_call(res, what, oracles.traced_autograd, model, p, d, g))
            res.phase = phase or what
            floors = {n: computation_floor(traced[0].resolution, typical[n], traced[0].backward)
                      for n in model.differentiable}
            errors = oracles.backward_rounding(model, p, d, g, case.seed)
            res.phase = phase or what
            for n, e in errors.items():         # the computation's own rounding, carried to each tensor
                carried[n] = _finite(e).mul_(compare_noise(case.dtype))
            res.tensors = {}      # the first comparisons' bounds go before the new ones are made
            res.tensors = {n: compare(n, grads[n], ag[n], case.dtype, rounding.get(n), floors[n],
                                      carried=carried.get(n)) for n in model.differentiable}
            if case.dtype == "float64" and any(not c.ok for c in res.tensors.values()):
                # only where the tight bound is crossed: are the two gradients that inexact here?
                jitter = _jitter(model, case, p, d, g, grads, ag)
                tight = dict(res.tensors)
                for n, c in tight.items():
                    if not c.ok and n in jitter:
                        res.tensors[n] = compare(n, grads[n], ag[n], case.dtype, None, floors[n], jitter[n],
                                                 carried=carried.get(n))
                for n, c in tight.items():
                    if not c.ok and res.tensors[n].ok:
                        tolerated[n] = c   # within a measured allowance only: finite differences may still resolve it
        return traced[0]

    # first without the floor: where every element is within the tighter bound, and every
    # further backward call repeats the first bitwise, the floor cannot change a thing
    res.tensors = {n: compare(n, grads[n], ag[n], case.dtype, rounding.get(n)) for n in model.differentiable}
    bitwise = _bitwise(model, grads, again)
    if not all(c.ok for c in res.tensors.values()) or not bitwise:
        full()
    res.autograd_rel_err = max((c.max_rel_err for c in res.tensors.values()), default=0.0)
    res.autograd_ratio = max((c.max_ratio for c in res.tensors.values()), default=0.0)
    if not bitwise:                # the same gradients bit for bit leave nothing to report
        _repeated_backward(model, res, grads, again, {n: cmp.bound for n, cmp in res.tensors.items()})
    del again         # the further calls' gradients: not read again
    overflow = _not_finite(model, res, grads, ag, finite)

    if model.surrogate:           # the reference defines the gradient; finite differences do not apply
        full()
        res.notes.append("surrogate gradient: checked against the reference's autograd alone, every element "
                         "(finite differences of the forward would give its true derivative)")
        _autograd_only(res)
        _layouts(model, res, p, d, g, grads, out)
        return
    res.phase = "finite differences"
    try:
        if case.dtype == "float64":
            out64 = out                     # the case's own forward already ran in float64
        else:
            with torch.no_grad():
                out64 = model.forward(p64, d64)[0]
    except Exception as e:
        res.fd_ran = False
        res.notes.append(f"no second oracle: the forward fails in float64 ({type(e).__name__}: {e}), so finite "
                         "differences did not run; the reference's autograd alone judged this case")
        _autograd_only(res)
        return
    try:
        _finite_differences(model, case, res, p64, d64, g, grads, ag, full, out64, typical, tolerated,
                            judge_all=not overflow)
    except _Stop:           # autograd, traced late, broke: already reported
        raise
    except Exception as e:  # the user's forward, at a point a finite-difference step away
        if ours(e):         # or the harness itself: never blamed on the model
            _internal(res, "taking finite differences", e)
            raise _Stop() from None
        res.traceback = "".join(traceback.format_exception(e))
        raise _error(res, f"forward raised {type(e).__name__}: {e}{where(e)}, at a point a small step away "
                          "from the case (finite differences); keep the model's domain in its record") from None
    if overflow and res.verdict in (PASS, NONDIFF):
        res.verdict = SKIPPED

    def widened() -> dict[str, torch.Tensor] | None:
        """The bounds with the computation's own rounding, where they were not taken yet
        (every element agreed within the tight ones): a layout that sums in another order
        rounds at the scale of the computation too, not of a gradient that is exactly 0."""
        if traced:
            return None
        kept = res.tensors
        full()
        bounds = {n: c.bound for n, c in res.tensors.items()}
        res.tensors = kept            # the verdict's comparisons, with what finite differences recorded
        return bounds

    _layouts(model, res, p, d, g, grads, out, widened)
    _double_backward(model, case, res, p, d, g)


def _layouts(model, res: CaseResult, p: Tensors, d: Tensors, g: torch.Tensor, grads, out: torch.Tensor,
             widened=None) -> None:
    """The backward as training calls it: the same values in other memory layouts
    (``layouts.problem``), for a case that otherwise passes.  Where a layout crosses the
    bounds, ``widened()`` gives the ones with the computation's rounding (or None where
    they are the ones already used), and they decide."""
    if res.verdict not in (PASS, NONDIFF):
        return
    if model.needs_contiguous:
        res.notes.append("layouts not checked: the record says needs_contiguous (the backward takes "
                         "contiguous tensors only)")
        return
    bounds = {n: res.tensors[n].bound for n in model.differentiable if n in res.tensors}
    with torch.no_grad():
        text = _call(res, "backward in training layouts", layouts.problem, model, p, d, g, grads, bounds, out)
    wide = widened() if text and widened is not None else None
    if wide is not None:
        with torch.no_grad():
            text = _call(res, "backward in training layouts", layouts.problem, model, p, d, g, grads, wide, out)
    if text:
        raise _error(res, text)


def _forward(model, res: CaseResult, p: Tensors, d: Tensors):
    """The forward's call, and its leaves and output as autograd's graph where autograd
    differentiates the forward itself (no reference, not a two-way check): one call in grad
    mode then serves both the manual gradient and autograd, its output and the cache the
    backward gets detached.  The call runs plainly, under no_grad, where the forward raises
    in grad mode (it changes a leaf in place, say: the contract check then says so); and
    for the backward's cache where that is more than tensors and plain values in tuples,
    lists and dicts (the graph still serves autograd)."""
    leaves = graph = None
    if model.reference is None and not model.two_way:
        leaves, P, D = oracles.on_leaves(model, p, d)
        res.phase = "forward"
        try:
            with torch.enable_grad():
                returned = model.forward(P, D)
        except Exception:
            returned = None
        if isinstance(returned, tuple) and len(returned) == 2 and isinstance(returned[0], torch.Tensor):
            graph = returned[0]
            try:
                return (graph.detach(), _detached(returned[1])), leaves, graph
            except _NotPlain:
                pass
    with torch.no_grad():
        return _call(res, "forward", model.forward, p, d), leaves, graph


class _NotPlain(Exception):
    pass


def _detached(x):
    """``x`` with every tensor in it detached; :class:`_NotPlain` where it holds anything
    but tensors, numbers, strings and None in tuples, lists and dicts."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if x is None or isinstance(x, (bool, int, float, complex, str, bytes)):
        return x
    if type(x) in (tuple, list):
        return type(x)(_detached(v) for v in x)
    if type(x) is dict:
        return {k: _detached(v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):          # a namedtuple
        return type(x)(*(_detached(v) for v in x))
    raise _NotPlain()


def _finite(t: torch.Tensor) -> torch.Tensor:
    """|t| in float64 on the CPU, with NaN and Inf as 0."""
    return t.detach().to("cpu", torch.float64).abs().nan_to_num_(0.0, 0.0, 0.0)


def _tensor(p: Tensors, d: Tensors, name: str) -> torch.Tensor:
    return p[name] if name in p else d[name]


def _not_finite(model: Model, res: CaseResult, grads, ag, finite) -> bool:
    """Elements where autograd itself is NaN or Inf (an overflow in float16, say): nothing
    can judge them, so a case with any is set aside, and the note says where."""
    found = False
    for n in model.differentiable:
        if finite[n] is True:
            continue
        bad = ~finite[n]
        if bool(bad.any()):
            found = True
            where = [tuple(i) for i in bad.nonzero().tolist()[:3]]
            i = where[0]
            res.notes.append(
                f"{n}: autograd's gradient is not finite at {int(bad.sum())} of {bad.numel()} element(s), "
                f"e.g. at {', '.join(map(str, where))} (manual {float(grads[n][i])}, autograd {float(ag[n][i])}) "
                f"in {res.case.dtype}; the case is set aside")
    return found


def _finite_differences(model, case, res, p64, d64, g, grads, ag, full, out64, sizes, tolerated,
                        judge_all=True) -> None:
    """``full()`` traces autograd for the forward's rounding bound and compares with the
    computation floor, where that has not run yet; only the random direction, where every
    element agreed within the tighter bound, can go without it.

    ``tolerated``: tensors within the bound only thanks to the measured jitter, with their
    comparison without it.  Their worst elements are probed against that tighter bound: the
    jitter is an allowance for what no oracle can resolve, so where finite differences do
    resolve the element and side with autograd, the manual gradient fails (an error that
    moves to another element at a nearby point looks like jitter)."""
    tensors64 = {**p64, **d64}
    mismatched = [c for c in res.tensors.values() if not c.ok]
    findings: dict[str, list[Finding]] = {}   # tensor -> what its probes concluded
    gen = torch.Generator().manual_seed(case.seed ^ 0xF1D)

    def probe(direction, resolution: float | None = None) -> oracles.Line:
        return oracles.line(model, p64, d64, g, direction,
                            full().resolution if resolution is None else resolution, at_zero=out64)

    def examine(name: str, index: tuple[int, ...], against: TensorComparison | None = None) -> Finding:
        full()                     # the bound below is the one with the computation floor
        x = tensors64[name]
        v = oracles.element_direction(x, name, index, case.scale)
        size = float(v[name][index])
        m, a = float(grads[name][index]), float(ag[name][index])
        tol = float((against or res.tensors[name]).bound[index]) * size
        finding, est = oracles.judge(oracles.estimates(probe(v)), m * size, a * size, tol, PRECISE)
        if finding is Finding.UNRESOLVED and oracles.jumps(model, p64, d64, g, name, index, size, m, tol / size):
            finding = Finding.KINK       # on a kink that the forward's rounding hides from every step
        if finding is Finding.UNRESOLVED and case.dtype == "float64" and _within_fused_rounding(name, index, m, a):
            finding = Finding.AGREE      # autograd's own rounding inside a fused op covers the difference
        if against is not None:    # only a resolved disagreement overrides the jitter
            if finding is not Finding.FOR_AUTOGRAD:
                return finding
            res.tensors[name] = against
        findings.setdefault(name, []).append(finding)
        _fd_ratio(res, est, m * size, tol, finding)
        kink = finding is Finding.KINK
        if _resolved(est, max(abs(a), abs(m)) * size) and not kink:
            fd = est.value / size
            scale = max(abs(fd), rel_floor(grads[name], ag[name]), TINY)
            res.fd_rel_err = min(HUGE, max(res.fd_rel_err, abs(m - fd) / scale))
        _record(res.tensors[name], index, None if est is None else est.value / size, kink)
        return finding

    fused: list[dict[str, torch.Tensor] | None] = []

    def _within_fused_rounding(name: str, index: tuple[int, ...], m: float, a: float) -> bool:
        """Where finite differences cannot tell the two apart: is the difference within the
        gap between autograd and autograd of the same oracle with its fused ops decomposed
        (``oracles.decomposed_autograd``), the oracle's own error that no hook sees?"""
        if not fused:
            fused.append(oracles.decomposed_autograd(model, p64, d64, g))
            if fused[0] is not None:
                fused[0] = {n: (t.double() - ag[n].double()).abs() for n, t in fused[0].items()}
        if fused[0] is None or name not in fused[0]:
            return False
        gap = float(fused[0][name].max()) if fused[0][name].numel() else 0.0
        allowed = float(res.tensors[name].bound[index]) + compare_noise(case.dtype) * gap
        if gap > 0 and abs(m - a) <= allowed:
            res.notes.append(f"{name}: autograd's oracle carries {gap:.1e} of rounding inside fused ops "
                             f"(against the same oracle decomposed); the difference at {list(index)} is within it")
            return True
        return False

    for c in mismatched:
        worst = [e.index for e in c.worst if e.ratio > 1]
        found = [examine(c.name, i) for i in worst]
        if all(f is Finding.KINK for f in found):
            # all kinks: a few more mismatched elements, at random, beyond those already seen
            bad = (_ratio(grads[c.name], ag[c.name], c) > 1).reshape(-1).nonzero().reshape(-1)
            drawn = bad[torch.randperm(bad.numel(), generator=gen)[:EXAMINE + len(worst)]].tolist()
            others = (unravel(i, c.shape) for i in drawn)
            for idx in itertools.islice((i for i in others if i not in worst), EXAMINE):
                examine(c.name, idx)
    for name, tight in tolerated.items():
        for e in [e for e in tight.worst if e.ratio > 1][:EXAMINE]:
            if examine(name, e.index, tight) is Finding.FOR_AUTOGRAD:
                mismatched.append(tight)
                break
    def direction(k: int, masks: Mapping[str, torch.Tensor]) -> Finding:
        """One random direction over every element outside ``masks`` (kinks set aside)."""
        v = oracles.random_direction(model, tensors64, case.seed * 7919 + k, case.scale, sizes)
        for n, mask in masks.items():
            v[n].masked_fill_(mask.to(v[n].device), 0.0)
        dm = sum(_dot(grads[n], v[n]) for n in v)
        da = sum(_dot(ag[n], v[n]) for n in v)

        def tolerance() -> float:   # |v| is each tensor's size wherever it is not set aside
            return sum(sizes[n] * float((res.tensors[n].bound if n not in masks else
                                         res.tensors[n].bound.masked_fill(masks[n], 0.0)).sum()) for n in v)

        # the two-call difference first with the tighter bounds and no rounding bound: what
        # it accepts, the full ones accept too (both only widen the allowance)
        phi = probe(v, 0.0)
        tol = tolerance()
        est = oracles.central(phi, oracles.AGREED_STEPS[0], da, tol)
        if est is None:
            phi.resolution = full().resolution
            tol = tolerance()
            est = oracles.central(phi, oracles.AGREED_STEPS[0], da, tol)
        if est is not None:
            finding = Finding.AGREE
            _fd_ratio(res, est, da, tol, finding)      # it confirmed autograd, which the manual gradient matched
        else:
            finding, est = oracles.judge(oracles.estimates(phi, oracles.AGREED_STEPS), dm, da, tol, PRECISE)
            _fd_ratio(res, est, dm, tol, finding)
        findings.setdefault("a random direction", []).append(finding)
        if _resolved(est, max(abs(da), abs(dm))) and finding is not Finding.KINK:
            mag = sum(sizes[n] * _norm1(ag[n]) for n in v)
            mag = mag or sum(sizes[n] * _norm1(grads[n]) for n in v) / REL_FLOOR
            rel = abs(dm - est.value) / max(abs(est.value), REL_FLOOR * mag, TINY)
            res.fd_rel_err = min(HUGE, max(res.fd_rel_err, rel))
        return finding

    if not mismatched and judge_all:
        for n in model.differentiable:
            x = tensors64[n]
            if 0 < x.numel() <= SMALL:
                for i in range(x.numel()):
                    examine(n, unravel(i, tuple(x.shape)))
        for k in range(PROBES):
            if direction(k, {}) is Finding.KINK:
                # a kink somewhere along it: judge element by element, the kinks set aside
                for n in model.differentiable:
                    x = tensors64[n]
                    if x.numel() > SMALL:
                        for i in torch.randperm(x.numel(), generator=gen)[:EXAMINE].tolist():
                            examine(n, unravel(i, tuple(x.shape)))
    elif mismatched and judge_all and _only_kinks(findings):
        # every difference examined sits on a kink: the elements that differ are set aside,
        # and a random direction over the rest decides
        masks = {c.name: _ratio(grads[c.name], ag[c.name], c) > 1 for c in mismatched}
        if direction(0, masks) is Finding.AGREE:
            mismatched = []
            # the worst relative error is that of the elements judged, the kinks left out
            res.autograd_rel_err = max((_rel_err(grads[n], ag[n], masks.get(n)) for n in model.differentiable),
                                       default=0.0)
            res.autograd_ratio = max((_worst(_ratio(grads[n], ag[n], res.tensors[n])[~masks[n]])
                                      if n in masks else res.tensors[n].max_ratio for n in model.differentiable),
                                     default=0.0)
    _verdict(res, findings, bool(mismatched))


def _worst(values: torch.Tensor) -> float:
    return min(HUGE, float(values.max())) if values.numel() else 0.0


def _fd_ratio(res: CaseResult, est: oracles.Estimate | None, value: float, tol: float, finding: Finding) -> None:
    """How far a finite-difference estimate is from the gradient it was compared with, over
    the allowance it was judged with (``oracles.Estimate.agrees``): at most 1 where it agreed.
    A kink is set aside, and so is its figure."""
    if est is None or est.kink or finding is Finding.KINK:
        return
    allowed = 8.0 * est.error + tol
    gap = abs(value - est.value)
    res.fd_ratio = max(res.fd_ratio, min(HUGE, gap / allowed) if allowed > 0 else (0.0 if gap == 0 else HUGE))


def _rel_err(m: torch.Tensor, a: torch.Tensor, mask: torch.Tensor | None) -> float:
    """The worst relative error of ``m`` against ``a`` outside ``mask``, as ``compare`` takes it."""
    if mask is not None:
        m, a = m.detach().cpu()[~mask], a.detach().cpu()[~mask]
    return compare("", m, a, "float64").max_rel_err


def _only_kinks(findings: Mapping[str, list[Finding]]) -> bool:
    found = [f for fs in findings.values() for f in fs]
    return bool(found) and all(f is Finding.KINK for f in found)


def _resolved(est: oracles.Estimate | None, reference: float) -> bool:
    """An estimate precise enough to report a relative error against: its own error within
    ``oracles.ENOUGH`` of the value (a loss of 1e60 leaves a slope of 1e45 unresolved)."""
    return est is not None and est.error <= oracles.ENOUGH * max(abs(est.value), abs(reference))


def _bitwise(model: Model, grads, again: list) -> bool:
    """Every further backward call returned the first call's gradients, bit for bit."""
    return all(isinstance(other, Mapping) and all(
        isinstance(other.get(n), torch.Tensor) and other[n].shape == grads[n].shape and _same(other[n], grads[n])
        for n in model.differentiable) for other in again)


def _norm1(a: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a.detach(), 1, dtype=torch.float64))


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> in float64, without a temporary the size of the tensors."""
    return float(torch.dot(a.detach().to(torch.float64).reshape(-1), b.detach().to(torch.float64).reshape(-1)))


def _verdict(res: CaseResult, findings: dict[str, list[Finding]], mismatched: bool) -> None:
    if mismatched:
        # resolved for autograd: the manual gradient is the odd one out.  Unresolved: finite
        # differences cannot tell a difference that autograd sees exactly, and no step shows
        # a kink there, so autograd stands.
        res.failing = [n for n, found in findings.items()
                       if Finding.FOR_AUTOGRAD in found or Finding.UNRESOLVED in found]
        if res.failing:
            res.verdict = FAIL
            return
    disputed = [n for n, found in findings.items() if Finding.FOR_MANUAL in found or Finding.NEITHER in found]
    if disputed:
        res.verdict = DISAGREE
        res.problems.append(
            "autograd and finite differences disagree on " + ", ".join(disputed)
            + ": is the forward differentiable, and does it hide a custom autograd Function? (A gradient "
            "that is not the derivative on purpose, straight-through or gradient reversal: set surrogate=True, "
            "with a reference whose autograd gives it.)")
        return
    kinks = [n for n, found in findings.items() if Finding.KINK in found]
    if kinks and any(Finding.AGREE in found for found in findings.values()):
        # judged element by element: the kinks set aside, and the rest agree
        counts = ", ".join(f"{n}: {found.count(Finding.KINK)}" for n, found in findings.items() if n in kinks)
        res.notes.append(f"elements at a kink or tie set aside ({counts} probed); the rest agree")
    elif kinks:
        res.verdict = NONDIFF
        res.notes.append("a kink or tie at this point (" + ", ".join(kinks)
                         + "): one-sided differences differ, so the gradient there is a matter of convention")


def _autograd_only(res: CaseResult) -> None:
    res.failing = [n for n, c in res.tensors.items() if not c.ok]
    if res.failing:
        res.verdict = FAIL


def _ratio(m: torch.Tensor, a: torch.Tensor, c: TensorComparison) -> torch.Tensor:
    m64, a64 = m.detach().to("cpu", torch.float64), a.detach().to("cpu", torch.float64)
    return ((m64 - a64).abs() / c.bound).where(torch.isfinite(a64), torch.zeros_like(a64))


def _record(c: TensorComparison, index: tuple[int, ...], fd: float | None, kink: bool) -> None:
    for e in c.worst:
        if e.index == index:
            e.finite_diff, e.kink = fd, kink
            return


def _contract(model: Model, res: CaseResult, p: Tensors, d: Tensors, grads) -> None:
    if not isinstance(grads, Mapping):
        raise _error(res, f"backward must return a dict of gradients, got {describe(grads)}")
    want = model.differentiable
    missing = [n for n in want if n not in grads]
    extra = [str(n) for n in grads if n not in want]
    if missing or extra:
        parts = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unexpected {', '.join(extra)}"] * bool(extra)
        raise _error(res, f"backward's gradients: {'; '.join(parts)} (expected exactly {', '.join(want)})")
    for n in want:
        x, gr = (p[n] if n in p else d[n]), grads[n]
        if not isinstance(gr, torch.Tensor):
            raise _error(res, f"{n}: gradient is {describe(gr)}, expected a tensor" + as_tensor_hint(gr, "it"))
        if gr.shape != x.shape:
            raise _error(res, f"{n}: gradient shape {tuple(gr.shape)}, expected {tuple(x.shape)}"
                              + shape_hint(tuple(gr.shape), tuple(x.shape)))
        if gr.dtype != x.dtype:
            raise _error(res, f"{n}: gradient dtype {str(gr.dtype).removeprefix('torch.')}, "
                              f"expected {str(x.dtype).removeprefix('torch.')}")
        if gr.device != x.device:
            raise _error(res, f"{n}: gradient on {gr.device}, expected {x.device}")


def shape_hint(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    """What a gradient of the right size in the wrong shape usually means."""
    if [s for s in got if s != 1] == [s for s in want if s != 1] and len(got) > len(want):
        return ": a sum with keepdims?"
    if [s for s in got if s != 1] == [s for s in want if s != 1]:
        return ": a missing unsqueeze, or a sum over the wrong dims?"
    if sorted(got) == sorted(want):
        return ": a transposed product?"
    if math.prod(got) == math.prod(want):
        return ": a reshape?"
    if len(got) == len(want) + 1 and got[1:] == want:
        return ": not summed over the batch?"
    return ""


def _snapshot(*groups: Tensors) -> dict[str, torch.Tensor]:
    return {f"{'p' if i == 0 else 'd'}.{n}": t.clone() for i, grp in enumerate(groups) for n, t in grp.items()}


def _unchanged(res: CaseResult, who: str, before: dict, p: Tensors, d: Tensors, g=None) -> None:
    now = {**{f"p.{n}": t for n, t in p.items()}, **{f"d.{n}": t for n, t in d.items()}}
    if g is not None:
        now["upstream gradient g"] = g
    changed = [k for k, t in before.items() if k in now and not _same(t, now[k])]
    if changed:
        raise _error(res, f"{who} changed its input {', '.join(changed)} in place: compute into a new tensor "
                          "(w = p.w - ..., not p.w -= ...), or change a .clone()")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if torch.equal(a, b):
        return True
    return bool(((a == b) | (a.isnan() & b.isnan())).all()) if a.is_floating_point() else bool(torch.equal(a, b))


def _rounding(model, case, p64, d64, g, ag) -> dict[str, torch.Tensor]:
    """How far autograd in the case's dtype is from autograd in float64: its rounding."""
    if case.dtype == "float64":
        return {}
    try:
        ag64 = oracles.autograd(model, p64, d64, g.to(torch.float64))
    except Exception:
        return {}
    # only its largest element is read (compare.bound): kept as that, not as a tensor the
    # gradient's size for the rest of the case
    return {n: _finite_abs(ag[n].to(torch.float64).sub_(ag64[n].to(ag[n].device))).max() if ag[n].numel() else
            ag[n].to(torch.float64) for n in ag}


#: Relative size of the jitter that measures rounding in float64: large enough to move
#: the rounding of a sigmoid saturated to 1e-13 (see :func:`_jitter`).
JITTER = 1e-4


def _jitter(model, case, p, d, g, grads, ag) -> dict[str, torch.Tensor]:
    """How much the difference ``D = autograd - manual`` moves, element by element, when
    every input is scaled by 1 +- JITTER element-wise.  Where the backward is correct the
    two gradients are the same function, so ``D`` is their rounding alone and what moves
    is rounding.  Two measures of that move, the larger kept:

    - half the second difference of ``D``: the curvature of both gradients cancels, and a
      wrong element moves by about JITTER squared times its error.  It sees rounding that
      changes from point to point (a saturated sigmoid's ``s * (1 - s)``), but not one
      that drifts smoothly with the inputs;
    - each first difference, of ``D`` and of ``D`` relative to autograd (times autograd),
      whichever moved less: it sees a smooth drift (a softmax's ``t_0 - <p, t>`` where
      one probability is ~1), while an error that is a constant, or a constant fraction of
      the element, leaves one of the two unmoved however steep the element is.

    The jump of a kink or tie that the jitter crosses is kept out by
    ``compare.JITTER_CAP``.  Scaling keeps exact zeros, so a unit that sits exactly on a
    ReLU kink stays there."""
    gen = torch.Generator().manual_seed(case.seed ^ 0x717)
    signs = {n: (torch.randint(0, 2, t.shape, generator=gen) * 2 - 1).to(t.device, t.dtype)
             for n, t in (*p.items(), *d.items()) if t.is_floating_point()}

    def gap(sign: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        P = Tensors((n, t * (1 + sign * JITTER * signs[n]) if n in signs else t) for n, t in p.items())
        D = Tensors((n, t * (1 + sign * JITTER * signs[n]) if n in signs else t) for n, t in d.items())
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


# -- steps for references, shipped ops, two-way checks and double backward ----------------

FD_ONLY_ELEMENTS = 24   # elements per tensor probed one by one when finite differences are the only oracle


def _reference_forward(model, case: Case, res: CaseResult, p: Tensors, d: Tensors, out: torch.Tensor,
                       before: dict) -> None:
    """The forward's value must match the reference's, within the dtype's tolerance; and
    the reference, like the forward, must leave its inputs as they were (``before``)."""
    if model.reference is None:
        return
    with torch.no_grad():
        ref = _call(res, "reference", model.reference, p, d)
    _unchanged(res, "the reference", before, p, d)
    if not isinstance(ref, torch.Tensor) or ref.shape != out.shape:
        raise _error(res, f"the reference returns {describe(ref)}, the forward {describe(out)}: they must match")
    p64, d64 = float64(p), float64(d)

    def gap(side, value: torch.Tensor) -> torch.Tensor | None:
        """One side's rounding: its distance from itself in float64."""
        try:
            with torch.no_grad():
                return (value.to(torch.float64) - side().to(value.device, torch.float64)).abs()
        except Exception:
            return None

    layout = model.layout or [tuple(out.shape)]
    labels = ["forward"] if model.layout is None else [f"forward[{k}]" for k in range(len(layout))]

    def compared(rounding: torch.Tensor | None) -> dict[str, TensorComparison]:
        parts = zip(labels, *(_parts(t, model.layout) for t in (out, ref, rounding)))
        return {label: compare(label, o, r, case.dtype, rnd) for label, o, r, rnd in parts}

    rounding = None if case.dtype == "float64" else gap(lambda: model.reference(p64, d64), ref)
    comps = compared(rounding)
    if case.dtype != "float64" and any(not c.ok for c in comps.values()):
        # the forward's own rounding too, only where the reference's alone is crossed (a
        # forward computing sinh as a difference of exps cancels far more than torch.sinh)
        own = gap(lambda: model.forward(p64, d64)[0], out)
        if own is not None:
            comps = compared(own if rounding is None else torch.maximum(rounding, own))
    bad = [c for c in comps.values() if not c.ok]
    if bad:
        res.tensors, res.failing, res.verdict = comps, [bad[0].name], FAIL
        res.summary = f"{bad[0].name} differs from the reference at {list(bad[0].worst[0].index)}"
        raise _Stop()


def _parts(t: torch.Tensor | None, layout) -> list:
    if t is None:
        return [None] * (len(layout) if layout else 1)
    return list(split(t, layout)) if layout else [t]


def _op_contract(model, res: CaseResult, p: Tensors, d: Tensors, g: torch.Tensor) -> None:
    """For a shipped op: ctx hygiene and needs_input_grad, with the op's own ctx."""
    if model.op is None:
        return
    gs = split(g, model.layout)
    text, notes, frozen = _call(res, "backward (called with its ctx)", model.op.contract_problem, p, d, model.h, gs)
    if text and not frozen:
        raise _error(res, text)
    # a frozen-input finding is judged after the values: gradients returned in swapped slots also
    # give "no gradient for b when a needs none", and a backward that is not deterministic
    # "another gradient"; the failure of the values, or the repeated call, names those first
    res.deferred = text or None
    res.notes.extend(notes)


def _repeated_calls(model, res: CaseResult, p, d, cache, g) -> list:
    """The backward called again on the same case (``backward_runs`` calls in all)."""
    again = []
    for run in range(2, model.backward_runs + 1):
        times = "twice" if run == 2 else f"{run} times"
        with torch.no_grad():
            again.append(_call(res, f"backward (called {times})", model.backward, p, d, cache, g))
    return again


def _repeated_backward(model, res: CaseResult, grads, again: list, bounds) -> None:
    """Every further call must agree with the first within the tolerance (``bounds``, or
    the tolerance around the manual gradient itself); a difference in the last bits only
    (a sum over a set, another reduction order) is a note, not an error."""
    bitwise = set()
    for run, other in enumerate(again, start=2):
        times = "twice" if run == 2 else f"{run} times"
        if not isinstance(other, Mapping):
            raise _error(res, f"backward called {times} returned {describe(other)}, not a dict of gradients")
        differs = []
        for n in model.differentiable:
            second, first = other.get(n), grads[n]
            if not isinstance(second, torch.Tensor) or second.shape != first.shape:
                differs.append(n)
            elif not _same(second, first):
                allowed = bounds[n] if bounds else bound(first, res.case.dtype)
                gap = (second.detach().to("cpu", torch.float64) - first.detach().to("cpu", torch.float64)).abs()
                if bool((gap > allowed).any()):
                    differs.append(n)
                else:
                    bitwise.add(n)
        if differs:
            raise _error(res, f"backward gives another result when called {times} on the same case, beyond "
                              f"rounding ({_why_not_repeatable(model, res, again)}): {', '.join(differs)}"
                              + model.held_as.repeat_hint)
    if bitwise and _draws_random(model, res):
        res.notes.append(f"backward is not deterministic on {', '.join(sorted(bitwise))}: it draws random numbers "
                         "(the same seed gives the same result)")
    elif bitwise:
        res.notes.append(f"backward is reproducible within rounding but not bitwise on {', '.join(sorted(bitwise))} "
                         "(e.g. a sum whose order changes between calls)")


def _why_not_repeatable(model, res: CaseResult, again: list) -> str:
    """Random numbers, or state: see :func:`_draws_random`."""
    if _draws_random(model, res):
        return ("it is not deterministic: it draws random numbers, and the same seed gives the same result; "
                "a gradient must not depend on chance")
    return "not deterministic, or state kept between calls, or its cache changed"


def _draws_random(model, res: CaseResult) -> bool:
    """The backward called twice more, each time after the same seed for torch, numpy and
    random: the same result both times, where the plain calls differed."""
    import random

    import numpy as np
    case = res.case
    try:
        p, d = build(Bound(model, case) if not isinstance(model, Bound) else model, case)
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
        return all(_same(runs[0][n], runs[1][n]) for n in model.differentiable)
    except Exception:
        return False


def _fd_only(model, case: Case, res: CaseResult, p: Tensors, d: Tensors, g: torch.Tensor, grads) -> None:
    """No autograd oracle (numpy code without a reference): finite differences alone."""
    res.notes.append("no reference: checked against finite differences alone (a two-way verdict)")
    p64, d64 = float64(p), float64(d)
    tensors64 = {**p64, **d64}
    gen = torch.Generator().manual_seed(case.seed ^ 0x2FD)
    statuses: dict[str, list[Finding]] = {}
    for n in model.differentiable:
        x, m = tensors64[n], grads[n].detach().to("cpu", torch.float64)
        b = bound(m, case.dtype)
        picks = (range(x.numel()) if x.numel() <= FD_ONLY_ELEMENTS
                 else torch.randperm(x.numel(), generator=gen)[:FD_ONLY_ELEMENTS].tolist())
        rows = []
        for i in picks:
            idx = unravel(i, tuple(x.shape))
            v = oracles.element_direction(x, n, idx, case.scale)
            size = float(v[n][idx])
            mi, tol = float(m[idx]), float(b[idx]) * size
            status, est = oracles.judge(oracles.estimates(oracles.line(model, p64, d64, g, v)), mi * size, mi * size,
                                        tol, PRECISE)
            statuses.setdefault(n, []).append(status)
            if est is not None:
                rows.append((idx, mi, est.value / size, (8 * est.error + tol) / size, status is Finding.KINK))
        if x.numel() > FD_ONLY_ELEMENTS:   # the elements not probed one by one, all at once
            v = {n: torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.device) * oracles.scale_of(x, case.scale)}
            dm = float((m.to(x.device) * v[n]).sum())
            status, est = oracles.judge(oracles.estimates(oracles.line(model, p64, d64, g, v)), dm, dm,
                                        float((b.to(x.device) * v[n].abs()).sum()), PRECISE)
            _fd_ratio(res, est, dm, float((b.to(x.device) * v[n].abs()).sum()), status)
            statuses[n].append(status)
        res.tensors[n] = _fd_comparison(n, m, b, rows, statuses[n].count(Finding.NEITHER))
        res.fd_rel_err = max(res.fd_rel_err, res.tensors[n].max_rel_err)
        res.fd_ratio = max(res.fd_ratio, max((e.ratio for e in res.tensors[n].worst if not e.kink), default=0.0))
    res.failing = [n for n, s in statuses.items() if Finding.NEITHER in s]
    if res.failing:
        res.verdict = FAIL
        res.summary = (f"the manual gradient of {', '.join(res.failing)} disagrees with finite differences "
                       "(no reference, so a two-way check)")
    elif any(Finding.KINK in s for s in statuses.values()):
        res.verdict = NONDIFF
        res.notes.append("a kink at this point: one-sided differences differ")


def _fd_comparison(name: str, m: torch.Tensor, b: torch.Tensor, rows, mismatched: int) -> TensorComparison:
    """A comparison of the probed elements with finite differences (there is no autograd column)."""
    floor = max(REL_FLOOR * float(m.abs().max()) if m.numel() else 0.0, TINY)
    elements = [Element(idx, mi, None, fd, abs(mi - fd), min(HUGE, abs(mi - fd) / max(abs(fd), floor)),
                        min(HUGE, abs(mi - fd) / max(allowed, TINY)), kink)
                for idx, mi, fd, allowed, kink in rows]
    elements.sort(key=lambda e: -e.ratio)
    return TensorComparison(name, tuple(m.shape), mismatched, max((e.rel_err for e in elements), default=0.0),
                            max((e.ratio for e in elements), default=0.0), elements[:WORST], b)


def _double_backward(model, case: Case, res: CaseResult, p: Tensors, d: Tensors, g: torch.Tensor) -> None:
    """Opt-in: the gradient of <u, backward> against the reference's second derivative
    and finite differences of the (already checked) backward."""
    if not model.double_backward or res.verdict != PASS:
        return
    gen = torch.Generator().manual_seed(case.seed ^ 0xDB)
    u = {n: torch.randn(tuple(t.shape), generator=gen, dtype=torch.float64).to(t.device, t.dtype)
         for n, t in {**p, **d}.items() if n in model.differentiable}
    manual = _call(res, "double backward through the backward", _second_order, model, p, d, g, u, True)
    ref = _call(res, "double backward through the reference", _second_order, model, p, d, g, u, False)
    rounding = {}
    p64, d64, g64 = float64(p), float64(d), g.detach().to(torch.float64)
    u64 = {n: t.to(torch.float64) for n, t in u.items()}
    if case.dtype != "float64":
        ref64 = _call(res, "double backward through the reference", _second_order, model, p64, d64, g64, u64, False)
        rounding = {n: ref[n].to(torch.float64) - ref64[n] for n in ref}
    comps = {n: compare(f"{n} (double backward)", manual[n], ref[n], case.dtype, rounding.get(n))
             for n in model.differentiable}
    res.tensors.update({c.name: c for c in comps.values()})
    tensors64 = {**p64, **d64}
    statuses: dict[str, list[Finding]] = {}

    def probe(label: str, v, dm: float, da: float, tol: float):
        status, est = oracles.judge(oracles.estimates(_psi_line(model, p64, d64, g64, u64, v)), dm, da, tol, PRECISE)
        statuses.setdefault(label, []).append(status)
        _fd_ratio(res, est, dm, tol, status)
        return status, est

    for n, c in comps.items():
        for e in [e for e in c.worst if e.ratio > 1]:
            v = oracles.element_direction(tensors64[n], n, e.index, case.scale)
            size = float(v[n][e.index])
            _, est = probe(c.name, v, e.manual * size, e.autograd * size, float(c.bound[e.index]) * size)
            _record(c, e.index, None if est is None else est.value / size, est is None or est.kink)
    if not statuses:
        v = oracles.random_direction(model, tensors64, case.seed ^ 0xDB2, case.scale)
        dm = sum(float((manual[n].to(torch.float64) * v[n]).sum()) for n in v)
        da = sum(float((ref[n].to(torch.float64) * v[n]).sum()) for n in v)
        probe("a random direction", v, dm, da, sum(float((comps[n].bound.to(v[n].device) * v[n].abs()).sum()) for n in v))
    res.failing = [n for n, s in statuses.items()
                   if (Finding.FOR_AUTOGRAD in s or Finding.UNRESOLVED in s) and n in res.tensors]
    disputed = [n for n, s in statuses.items() if Finding.FOR_MANUAL in s or Finding.NEITHER in s]
    if res.failing:
        res.verdict = FAIL
        res.summary = (f"the double backward of {', '.join(n.split(' ')[0] for n in res.failing)} disagrees with the "
                       "reference's second derivative and finite differences of the backward")
    elif disputed:
        res.verdict = DISAGREE
        res.problems.append("the reference's second derivative and finite differences of the backward disagree on "
                            + ", ".join(disputed) + ": is the reference twice differentiable?")
    elif any(Finding.KINK in s for s in statuses.values()):
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
