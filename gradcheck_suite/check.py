"""One case, both oracles, one verdict.

pass             the manual gradient agrees with autograd in every element, and both
                 agree with finite differences
fail             the manual gradient disagrees with oracles that agree with each other
oracles disagree autograd and finite differences differ (a forward autograd cannot see
                 through, e.g. a custom autograd Function with its own backward)
non-differentiable point
                 a kink or a tie where the gradients differ: never a failure
skipped          the forward is not finite at this case's values (a domain matter)
error            a broken contract: missing or extra gradients, wrong shape, dtype or
                 device, NaN/Inf where autograd is finite, inputs changed in place,
                 another result on a second call, an exception
"""
from __future__ import annotations

import dataclasses
import os
import time
import traceback
from collections.abc import Mapping

import torch

from . import oracles
from .case import Case, FactoryError, build, upstream
from .compare import HUGE, REL_FLOOR, TINY, TensorComparison, compare, rel_floor
from .spec import Model, Tensors

PASS, FAIL, DISAGREE, NONDIFF, SKIPPED, ERROR = (
    "pass", "fail", "oracles disagree", "non-differentiable point", "skipped", "error")
SMALL = 16       # tensors this small get a finite difference for every element
PROBES = 2       # random directions per case
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
    seconds: float = 0.0
    traceback: str | None = None   # of an exception from the model's code, for --verbose
    phase: str = ""                # what runs now (or ran last): forward, backward, ...

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
    except FactoryError as e:
        raise _error(res, str(e)) from None
    except Exception as e:  # the user's code: report it, never a traceback
        res.traceback = "".join(traceback.format_exception(e))
        raise _error(res, f"{what} raised {type(e).__name__}: {e}{_where(e)}") from None


def _where(e: BaseException) -> str:
    here = os.path.dirname(__file__)
    torch_dir = os.path.dirname(torch.__file__)
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith((here, torch_dir)) or "/models/" in f.filename]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _check(model: Model, case: Case, res: CaseResult) -> None:
    p, d = _call(res, "the tensor factory", build, model, case)
    before = _snapshot(p, d)
    with torch.no_grad():
        returned = _call(res, "forward", model.forward, p, d)
    if not (isinstance(returned, tuple) and len(returned) == 2):
        raise _error(res, f"forward must return (output, cache), got {type(returned).__name__}")
    out, cache = returned
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise _error(res, f"forward's output must be a floating-point tensor, got {_kind(out)}")
    _unchanged(res, "forward", before, p, d)
    if not bool(torch.isfinite(out).all()):
        res.verdict = SKIPPED
        res.notes.append(f"the forward's output is not finite at scale {case.scale!r}; nothing to compare")
        return
    g = upstream(out, case.seed)
    before["upstream gradient g"] = g.clone()

    with torch.no_grad():
        grads = _call(res, "backward", model.backward, p, d, cache, g)
    _contract(model, res, p, d, grads)
    _unchanged(res, "backward", before, p, d, g)
    with torch.no_grad():
        again = _call(res, "backward (called a second time)", model.backward, p, d, cache, g)
    if isinstance(again, Mapping):
        differs = [n for n in model.differentiable
                   if not isinstance(again.get(n), torch.Tensor) or again[n].shape != grads[n].shape
                   or not _same(again[n], grads[n])]
        if differs:
            raise _error(res, "backward gives another result when called twice on the same case "
                              f"(state kept between calls, or its cache changed): {', '.join(differs)}")

    ag = _call(res, "autograd on the forward", oracles.autograd, model, p, d, g)
    p64, d64 = _float64(p), _float64(d)
    rounding = _rounding(model, case, p64, d64, g, ag)
    for n in model.differentiable:
        bad = ~torch.isfinite(grads[n]) & torch.isfinite(ag[n])
        if bool(bad.any()):
            idx = [tuple(i) for i in bad.nonzero().tolist()[:3]]
            raise _error(res, f"{n}: the manual gradient is NaN or Inf at {int(bad.sum())} element(s) where "
                              f"autograd is finite, e.g. at {', '.join(map(str, idx))}")
    res.tensors = {n: compare(n, grads[n], ag[n], case.dtype, rounding.get(n)) for n in model.differentiable}
    res.autograd_rel_err = max((c.max_rel_err for c in res.tensors.values()), default=0.0)

    res.phase = "finite differences"
    try:
        with torch.no_grad():
            model.forward(p64, d64)
    except Exception as e:
        res.notes.append(f"finite differences unavailable: the forward fails in float64 ({type(e).__name__}: {e})")
        _autograd_only(res)
        return
    _finite_differences(model, case, res, p64, d64, g, grads, ag)


def _finite_differences(model, case, res, p64, d64, g, grads, ag) -> None:
    tensors64 = {**p64, **d64}
    mismatched = [c for c in res.tensors.values() if not c.ok]
    findings: dict[str, list[str]] = {}   # tensor -> statuses of its examined elements
    gen = torch.Generator().manual_seed(case.seed ^ 0xF1D)

    def examine(name: str, index: tuple[int, ...]) -> str:
        x = tensors64[name]
        v = oracles.element_direction(x, name, index, case.scale)
        size = float(v[name][index])
        m, a = float(grads[name][index]), float(ag[name][index])
        tol = float(res.tensors[name].bound[index]) * size
        status, est = _judge(oracles.estimates(oracles.line(model, p64, d64, g, v)), m * size, a * size, tol)
        findings.setdefault(name, []).append(status)
        if est is not None:
            fd = est.value / size
            scale = max(abs(fd), rel_floor(grads[name], ag[name]), TINY)
            res.fd_rel_err = min(HUGE, max(res.fd_rel_err, abs(m - fd) / scale))
            _record(res.tensors[name], index, fd, status == "kink")
        else:
            _record(res.tensors[name], index, None, True)
        return status

    for c in mismatched:
        worst = [e.index for e in c.worst if e.ratio > 1]
        statuses = [examine(c.name, i) for i in worst]
        if all(s == "kink" for s in statuses):
            bad = (_ratio(grads[c.name], ag[c.name], c) > 1).reshape(-1).nonzero().reshape(-1)
            pick = bad[torch.randperm(bad.numel(), generator=gen)[:EXAMINE]].tolist()
            for i in pick:
                idx = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), c.shape)) if c.shape else ()
                examine(c.name, idx)
    if not mismatched:
        for n in model.differentiable:
            x = tensors64[n]
            if 0 < x.numel() <= SMALL:
                for i in range(x.numel()):
                    examine(n, tuple(int(j) for j in torch.unravel_index(torch.tensor(i), x.shape)) if x.dim() else ())
        for k in range(PROBES):
            v = oracles.random_direction(model, tensors64, case.seed * 7919 + k, case.scale)
            dm = sum(float((grads[n].to(torch.float64) * v[n]).sum()) for n in v)
            da = sum(float((ag[n].to(torch.float64) * v[n]).sum()) for n in v)
            tol = sum(float((res.tensors[n].bound.to(v[n].device) * v[n].abs()).sum()) for n in v)
            status, est = _judge(oracles.estimates(oracles.line(model, p64, d64, g, v)), dm, da, tol)
            findings.setdefault("a random direction", []).append(status)
            if est is not None:
                mag = sum(float((ag[n].to(torch.float64) * v[n]).abs().sum()) for n in v)
                mag = mag or sum(float((grads[n].to(torch.float64) * v[n]).abs().sum()) for n in v) / REL_FLOOR
                rel = abs(dm - est.value) / max(abs(est.value), REL_FLOOR * mag, TINY)
                res.fd_rel_err = min(HUGE, max(res.fd_rel_err, rel))
    _verdict(res, findings, bool(mismatched))


def _judge(estimates, dm: float, da: float, tol: float) -> tuple[str, oracles.Estimate | None]:
    """Which side finite differences take: 'agree', 'manual' (sides with autograd against
    the manual gradient), 'autograd' (sides with the manual one), 'neither', or 'kink'.

    Steps are tried in turn until an estimate is precise; of those that agree with both,
    the most precise one is kept, so a noisy first step does not stand for the probe."""
    best, last, status = None, None, "kink"
    for est in estimates:
        if est.kink:
            continue
        with_manual, with_autograd = est.agrees(dm, tol), est.agrees(da, tol)
        if with_manual and with_autograd:
            best = est if best is None or est.error < best.error else best
            if est.error <= PRECISE * max(abs(est.value), abs(da)):
                break
        elif with_autograd:
            return "manual", est
        else:
            last, status = est, ("autograd" if with_manual else "neither")
    if best is not None:
        return "agree", best
    return status, last


def _verdict(res: CaseResult, findings: dict[str, list[str]], mismatched: bool) -> None:
    if mismatched:
        # 'agree': finite differences cannot resolve a difference autograd sees exactly;
        # they still agree with autograd, so the manual gradient is the odd one out
        res.failing = [n for n, s in findings.items() if "manual" in s or "agree" in s]
        if res.failing:
            res.verdict = FAIL
            return
    disputed = [n for n, s in findings.items() if "autograd" in s or "neither" in s]
    if disputed:
        res.verdict = DISAGREE
        res.problems.append(
            "autograd and finite differences disagree on " + ", ".join(disputed)
            + ": is the forward differentiable, and does it hide a custom autograd Function?")
        return
    kinks = [n for n, s in findings.items() if "kink" in s]
    if kinks:
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
        raise _error(res, f"backward must return a dict of gradients, got {_kind(grads)}")
    want = model.differentiable
    missing = [n for n in want if n not in grads]
    extra = [str(n) for n in grads if n not in want]
    if missing or extra:
        parts = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unexpected {', '.join(extra)}"] * bool(extra)
        raise _error(res, f"backward's gradients: {'; '.join(parts)} (expected exactly {', '.join(want)})")
    for n in want:
        x, gr = (p[n] if n in p else d[n]), grads[n]
        if not isinstance(gr, torch.Tensor):
            raise _error(res, f"{n}: gradient is {_kind(gr)}, expected a tensor")
        if gr.shape != x.shape:
            raise _error(res, f"{n}: gradient shape {tuple(gr.shape)}, expected {tuple(x.shape)}")
        if gr.dtype != x.dtype:
            raise _error(res, f"{n}: gradient dtype {str(gr.dtype).removeprefix('torch.')}, "
                              f"expected {str(x.dtype).removeprefix('torch.')}")
        if gr.device != x.device:
            raise _error(res, f"{n}: gradient on {gr.device}, expected {x.device}")


def _snapshot(*groups: Tensors) -> dict[str, torch.Tensor]:
    return {f"{'p' if i == 0 else 'd'}.{n}": t.clone() for i, grp in enumerate(groups) for n, t in grp.items()}


def _unchanged(res: CaseResult, who: str, before: dict, p: Tensors, d: Tensors, g=None) -> None:
    now = {**{f"p.{n}": t for n, t in p.items()}, **{f"d.{n}": t for n, t in d.items()}}
    if g is not None:
        now["upstream gradient g"] = g
    changed = [k for k, t in before.items() if k in now and not _same(t, now[k])]
    if changed:
        raise _error(res, f"{who} changed its input {', '.join(changed)} in place")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(((a == b) | (a.isnan() & b.isnan())).all()) if a.is_floating_point() else bool(torch.equal(a, b))


def _float64(t: Tensors) -> Tensors:
    return Tensors((n, x.detach().to(torch.float64) if x.is_floating_point() else x) for n, x in t.items())


def _rounding(model, case, p64, d64, g, ag) -> dict[str, torch.Tensor]:
    """How far autograd in the case's dtype is from autograd in float64: its rounding."""
    if case.dtype == "float64":
        return {}
    try:
        ag64 = oracles.autograd(model, p64, d64, g.to(torch.float64))
    except Exception:
        return {}
    return {n: ag[n].to(torch.float64) - ag64[n] for n in ag}


def _kind(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {str(x.dtype).removeprefix('torch.')} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
