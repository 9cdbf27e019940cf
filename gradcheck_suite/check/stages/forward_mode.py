"""Forward mode: a ``Function.jvp`` checked where the op has one.

Reverse mode never calls ``jvp``, so a Function whose backward is right and whose ``jvp``
is wrong passes every other stage, and gives wrong values under ``torch.func.jvp``,
``jacfwd`` and ``torch.autograd.forward_ad``.  For an ``op_model`` record whose op (or an
``autograd.Function`` inside a wrapper) overrides ``jvp``, and a case that otherwise passes,
each differentiable input ``x`` in turn gets a random tangent ``v`` (seeded from the case,
``rules.SALT_FORWARD_MODE``), the others none, and the op runs on dual numbers
(``torch.autograd.forward_ad``), exactly as ``torch.func.jvp`` runs it.  Its tangent of
each output is compared with

(a) the tangent of the reference in the same direction: forward-mode autograd through
    the plain-torch reference, or, where the reference has no forward-mode formula, the
    double-vjp trick (``J v`` as the gradient of ``<J^T u, v>`` in ``u``);
(b) the reverse-mode identity ``<u, J v> = <J^T u, v>``, with a random ``u`` and ``J^T u``
    from the manual backward (judged already by the earlier stages).

Tolerances are the case dtype's (``verdict.tolerance``), widened by the reference's own
rounding where the case is not float64.  A ``jvp`` torch cannot run (``NotImplementedError``,
an op without a forward-mode formula) is a note: forward mode is then unsupported, which
torch documents, not wrong.  An op without ``jvp`` is not looked at.

A plain record may give its own forward-mode rule, ``jvp(p, d, tangents[, h]) -> output
tangent`` (``tangents``: ``{name: tensor}`` for every differentiable input).  It is checked
the same way: each differentiable input in turn gets the random tangent, the others zeros,
and its output tangent is compared with (a), where autograd's oracle (the reference, else a
torch forward) has a tangent, and with (b) the identity with the record's backward.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.autograd.forward_ad as fwAD

from ...record.spec import Tensors
from ...verdict import rules
from ...record.errors import ContractError
from ...verdict.tolerance import TensorComparison, bound, compare
from ...verdict.oracles import differentiated
from ..case import float64, join
from ..result import FAIL
from ..state import CaseState

_UNSUPPORTED = re.compile(r"forward (mode )?AD|forward-mode|jvp", re.IGNORECASE)


class _Unsupported(Exception):
    """Torch cannot run forward mode here (not the op's numbers being wrong)."""


def applies(state: CaseState) -> bool:
    """A record with its own ``jvp``, or an ``op_model`` record holding an
    ``autograd.Function`` (or a wrapper around one): only there can a ``jvp`` be; a
    ``torch.library`` custom op has none."""
    if state.model.jvp is not None:
        return True
    return (state.model.kind == "function" and getattr(state.model, "op", None) is not None
            and hasattr(state.model.op, "invoke"))


def overrides_jvp(cls) -> bool:
    """An ``autograd.Function`` subclass with its own ``jvp`` (not the base class's)."""
    return (isinstance(cls, type) and issubclass(cls, torch.autograd.Function)
            and getattr(cls, "jvp", None) is not torch.autograd.Function.jvp)


def functions_with_jvp(op, p: Tensors, d: Tensors, h) -> list[type]:
    """The Functions with a ``jvp`` that the op runs: the op itself, or, for a wrapper, the
    Functions on its autograd graph (found by one call)."""
    owner = getattr(op.call, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        return [owner] if overrides_jvp(owner) else []
    with torch.enable_grad():
        leaves = {n: p[n].detach().clone().requires_grad_(True) for n in op.inputs}
        out = op.invoke(leaves, d, h)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    seen, found, todo = set(), [], [o.grad_fn for o in outs if isinstance(o, torch.Tensor) and o.grad_fn is not None]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        cls = getattr(node, "_forward_cls", None)
        if overrides_jvp(cls) and cls not in found:
            found.append(cls)
        todo += [f for f, _ in node.next_functions]
    return found


class _Wrong(NamedTuple):
    """What shows a wrong ``jvp``: the input whose direction shows it, the message, and the
    comparison of the tangents (None for the identity)."""

    name: str
    text: str
    comparison: TensorComparison | None = None


def run(state: CaseState) -> None:
    if state.model.jvp is not None:
        _run_record(state)
        return
    model, case, res = state.model, state.case, state.result
    op, h = model.op, model.h
    p, d = state.p, state.d
    names = [n for n in op.inputs if n in model.differentiable and p[n].is_floating_point()]
    if not names:
        return
    found = state.call("forward mode: finding the Function's jvp", functions_with_jvp, op, p, d, h)
    if not found:
        return
    who = ", ".join(f"{c.__name__}.jvp" for c in found)
    gen = torch.Generator().manual_seed(case.seed ^ rules.SALT_FORWARD_MODE)
    v = {n: torch.randn(tuple(p[n].shape), generator=gen, dtype=torch.float64).to(p[n].device, p[n].dtype)
         for n in names}
    u = _like(state.out, gen)                  # for <u, Jv> = <J^T u, v>, on the joined output
    ref = model.model.reference
    reference = (lambda P, D: ref(P, D, *model.extra)) if ref is not None else None
    judge = _Judge(model, op, h, reference, who, names)
    with torch.no_grad():
        found = _guarded(state, f"forward mode ({who})", judge, p, d, state.cache, v, u, case.dtype)
    if isinstance(found, _Unsupported):
        res.notes.append(f"forward mode not checked: torch cannot run {who} on this op ({found}); "
                         "torch.func.jvp and jacfwd will raise there too")
        return
    res.notes.extend(judge.notes)
    if found is None:
        return
    if case.dtype != "float64":
        # beyond the bounds in low precision: a wrong formula is wrong in float64 too, while
        # rounding (the jvp's, in another order than the reference's) is gone there
        p64, d64 = float64(p), float64(d)
        again = _Judge(model, op, h, reference, who, names)
        try:
            with torch.no_grad():
                in64 = again(p64, d64, state.cache, {n: t.to(torch.float64) for n, t in v.items()},
                             u.to(torch.float64), "float64")
        except Exception:   # a Function that takes its own dtype only: the low-precision finding stands
            in64 = found
        if in64 is None and _finite_where_reference_is(found):
            return
    if found.comparison is not None:
        res.tensors[found.comparison.name] = found.comparison
    _fail(res, found.name, found.text)


def _finite_where_reference_is(found: _Wrong) -> bool:
    """The low-precision tangent is finite wherever the reference's is (no overflow)."""
    c = found.comparison
    return c is None or all(math.isfinite(e.manual) or not math.isfinite(e.autograd) for e in c.worst)


class _Judge:
    """The forward-mode check on one set of tensors, in one dtype: the first finding that
    shows a wrong ``jvp``, or None; raises what the op raises."""

    def __init__(self, model, op, h, reference, who: str, names: list[str]):
        self.model, self.op, self.h, self.reference, self.who, self.names = model, op, h, reference, who, names
        self.oracle = "the reference"     # whose forward-mode tangent autograd gives
        self.notes: list[str] = []

    def theirs(self, P, D):
        return self.op.invoke(P, D, self.h)

    def tangents(self, p, d, name: str, v: torch.Tensor) -> list[torch.Tensor]:
        """The op's tangent of each output in the direction ``v`` of input ``name``."""
        return _tangents(self.theirs, p, d, name, v)

    def backward(self, p, d, cache, u):
        return self.model.backward(p, d, cache, u)

    def __call__(self, p, d, cache, v, u, dtype: str) -> _Wrong | None:
        names, who = self.names, self.who
        mine = {n: self.tangents(p, d, n, v[n]) for n in names}
        refs: dict[str, list | None] = {}
        p64, d64 = float64(p), float64(d)
        for n in names:
            refs[n] = None
            if self.reference is None:
                continue
            r = _reference_tangents(self.reference, p, d, n, v[n])
            if r is None:
                continue
            rounding = [None] * len(r)
            if dtype != "float64":
                r64 = _reference_tangents(self.reference, p64, d64, n, v[n].to(torch.float64))
                if r64 is not None:
                    rounding = [a.to(torch.float64) - b for a, b in zip(r, r64)]
            refs[n] = list(zip(r, rounding))
        several = len(next(iter(mine.values()))) > 1
        for n in names:
            if refs[n] is None:
                continue
            if len(refs[n]) != len(mine[n]):
                raise ContractError(f"forward mode ({who}) gives {len(mine[n])} output tangents, the reference "
                                    f"{len(refs[n])} outputs")
            for k, (t, (r, rounding)) in enumerate(zip(mine[n], refs[n])):
                label = f"{n} (forward mode{f', output {k}' if several else ''})"
                c = compare(label, t, r, dtype, rounding)
                if not c.ok:
                    e = c.worst[0]
                    at = f" at {tuple(e.index)}" if e.index else ""
                    return _Wrong(n, f"the forward-mode tangent ({who}) of output {k} in the direction of {n} differs "
                                     f"from autograd's forward-mode tangent of {self.oracle}: {c.mismatched} of "
                                     f"{max(1, t.numel())} elements outside tolerance, worst{at}: {e.manual:.6g} vs "
                                     f"{e.autograd:.6g} (relative error {e.rel_err:.3g}); is {n}'s term of the jvp "
                                     "missing a factor, or its sign flipped?", c)
        if all(refs[n] is None for n in names):
            self.notes.append(f"forward mode: the reference gives no forward-mode tangent here; {who} is checked "
                              "against the backward only (<u, Jv> = <J^T u, v>)")
        return self.identity(p, d, cache, v, u, dtype, mine, refs)

    def identity(self, p, d, cache, v, u, dtype, mine, refs) -> _Wrong | None:
        """``<u, J v>`` from the jvp against ``<J^T u, v>`` from the manual backward, per input."""
        back = self.backward(p, d, cache, u.clone())
        back64 = None
        if dtype != "float64":
            back64 = self.backward(float64(p), float64(d), cache, u.to(torch.float64))
        parts = _parts(u, [t.shape for t in next(iter(mine.values()))])
        for n in self.names:
            jt = back[n]
            rounding = None if back64 is None else jt.to(torch.float64) - back64[n].to(torch.float64)
            vn = v[n].to(torch.float64)
            left = sum(float((uk.to(torch.float64) * t.to(torch.float64)).sum()) for uk, t in zip(parts, mine[n]))
            right = float((jt.to(torch.float64) * vn).sum())
            allowed = float((bound(jt, dtype, rounding) * vn.abs()).sum())
            for k, (uk, t) in enumerate(zip(parts, mine[n])):
                r, rr = refs[n][k] if refs[n] is not None else (t, None)
                allowed += float((bound(r, dtype, rr) * uk.to(torch.float64).abs()).sum())
            if not abs(left - right) <= allowed:
                return _Wrong(n, f"the forward-mode tangent ({self.who}) in the direction of {n} breaks the reverse-mode "
                                 f"identity <u, Jv> = <J^T u, v> with the backward: {left:.6g} vs {right:.6g} (allowed "
                                 f"{allowed:.3g}); is {n}'s term of the jvp missing a factor, or its sign flipped?")
        return None


class _RecordJudge(_Judge):
    """The check of a record's own ``jvp(p, d, tangents[, h])``: one input's tangent at a
    time, the others zero; the backward on a forward run in the dtype it is given."""

    def __init__(self, model, reference, names: list[str], shape: tuple[int, ...]):
        super().__init__(model, None, model.h, reference, "the record's jvp", names)
        self.shape = shape
        self.oracle = "the reference" if model.reference is not None else "the forward"

    def tangents(self, p, d, name: str, v: torch.Tensor) -> list[torch.Tensor]:
        given = {n: v if n == name else torch.zeros_like(p[n] if n in p else d[n]) for n in self.names}
        t = self.model.model.jvp(p, d, given, *self.model.extra)
        flat = join(tuple(t) if isinstance(t, list) else t, "jvp")[0]
        if not isinstance(flat, torch.Tensor):
            raise ContractError(f"jvp must return the output's tangent as a tensor (a tuple of them for a tuple of "
                                f"outputs), got {type(t).__name__}")
        if tuple(flat.shape) != self.shape:
            raise ContractError(f"jvp returned an output tangent of shape {tuple(flat.shape)}; the forward's output "
                                f"has shape {self.shape}")
        return [flat.detach()]

    def backward(self, p, d, cache, u):
        _, cache = self.model.forward(p, d)
        return self.model.backward(p, d, cache, u)


def _run_record(state: CaseState) -> None:
    """A plain record's ``jvp``: see the module's docstring."""
    model, case, res = state.model, state.case, state.result
    p, d = state.p, state.d
    names = [n for n in model.differentiable if state.tensor(n).is_floating_point()]
    if not names or not isinstance(state.out, torch.Tensor):
        return
    gen = torch.Generator().manual_seed(case.seed ^ rules.SALT_FORWARD_MODE)
    v = {n: torch.randn(tuple(state.tensor(n).shape), generator=gen, dtype=torch.float64)
         .to(state.tensor(n).device, state.tensor(n).dtype) for n in names}
    u = _like(state.out, gen)
    reference = None
    if model.reference is not None or model.held_as.plain_torch:   # autograd's oracle, where it is torch code
        reference = lambda P, D: differentiated(model, P, D)         # noqa: E731
    judge = _RecordJudge(model, reference, names, tuple(state.out.shape))
    with torch.no_grad():
        found = state.call("forward mode (the record's jvp)", judge, p, d, state.cache, v, u, case.dtype)
    res.notes.extend(judge.notes)
    if found is None:
        return
    if case.dtype != "float64":   # as for an op: a wrong rule is wrong in float64 too
        again = _RecordJudge(model, reference, names, tuple(state.out.shape))
        with torch.no_grad():
            in64 = state.call("forward mode (the record's jvp)", again, float64(p), float64(d), None,
                              {n: t.to(torch.float64) for n, t in v.items()}, u.to(torch.float64), "float64")
        if in64 is None and _finite_where_reference_is(found):
            return
    if found.comparison is not None:
        res.tensors[found.comparison.name] = found.comparison
    _fail(res, found.name, found.text)


def _fail(res, name: str, text: str) -> None:
    res.verdict = FAIL
    res.failing = [name]
    res.summary = text


def _like(out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(tuple(out.shape), generator=gen, dtype=torch.float64).to(out.device, out.dtype)


def _parts(flat: torch.Tensor, shapes) -> list[torch.Tensor]:
    """The joined output's ``u`` split as the op's outputs are."""
    if len(shapes) == 1:
        return [flat.reshape(shapes[0])]
    parts, start = [], 0
    for s in shapes:
        k = int(torch.Size(s).numel())
        parts.append(flat[start:start + k].reshape(s))
        start += k
    return parts


def _outputs(out) -> list[torch.Tensor]:
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()]


def _tangents(fn: Callable, p: Tensors, d: Tensors, name: str, v: torch.Tensor) -> list[torch.Tensor]:
    """The tangent of each output of ``fn(p, d)`` with tangent ``v`` on input ``name`` (of
    ``p``, or of ``d``: a record's data that takes a gradient) (dual numbers, as
    ``torch.func.jvp`` runs it); zeros where an output has none."""
    with fwAD.dual_level():
        P = Tensors((n, fwAD.make_dual(t.detach(), v) if n == name else t.detach()) for n, t in p.items())
        if name not in p:
            d = Tensors((n, fwAD.make_dual(t.detach(), v) if n == name else t) for n, t in d.items())
        outs = _outputs(fn(P, d))
        tangents = [fwAD.unpack_dual(o).tangent for o in outs]
        return [torch.zeros_like(o.detach()) if t is None else t.detach().clone()
                for o, t in zip(outs, tangents)]


def _double_vjp(fn: Callable, p: Tensors, d: Tensors, name: str, v: torch.Tensor) -> list[torch.Tensor]:
    """``J v`` through reverse mode only: the gradient in ``u`` of ``<J^T u, v>``."""
    with torch.enable_grad():
        x = (p[name] if name in p else d[name]).detach().clone().requires_grad_(True)
        P = Tensors((n, x if n == name else t.detach()) for n, t in p.items())
        if name not in p:
            d = Tensors((n, x if n == name else t) for n, t in d.items())
        outs = _outputs(fn(P, d))
        us = [torch.zeros_like(o, requires_grad=True) for o in outs]
        live = [(o, w) for o, w in zip(outs, us) if o.requires_grad]
        if not live:
            return [torch.zeros_like(o.detach()) for o in outs]
        (gx,) = torch.autograd.grad([o for o, _ in live], [x], [w for _, w in live], create_graph=True,
                                    allow_unused=True)
        if gx is None:
            return [torch.zeros_like(o.detach()) for o in outs]
        if not gx.requires_grad or _blind(gx):   # a backward autograd cannot see into: J v is unknown, not 0
            raise RuntimeError("the reference's backward is not differentiable")
        jv = torch.autograd.grad((gx * v).sum(), us, allow_unused=True)
        if all(t is None for t in jv):
            raise RuntimeError("the reference's backward does not reach its upstream gradient")
    return [torch.zeros_like(o.detach()) if t is None else t.detach() for o, t in zip(outs, jv)]


def _blind(t: torch.Tensor) -> bool:
    """Whether ``t``'s graph holds an error node (a ``once_differentiable`` backward, one
    that cannot be differentiated): gradients through it would come back as None, not J v."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "Error" in type(node).__name__ or "Error" in node.name():
            return True
        todo += [f for f, _ in node.next_functions]
    return False


def _reference_tangents(reference, p, d, name, v) -> list[torch.Tensor] | None:
    """The reference's tangent (forward-mode autograd, else the double-vjp trick), or None
    where neither runs."""
    for how in (_tangents, _double_vjp):
        try:
            return how(reference, p, d, name, v)
        except (RuntimeError, NotImplementedError):
            continue
    return None


def _guarded(state: CaseState, what: str, fn: Callable, *args):
    """``state.call`` for the op's forward mode: torch refusing forward mode comes back as
    :class:`_Unsupported` (a note), anything else raised is the case's error."""
    def attempt():
        try:
            return fn(*args)
        except NotImplementedError as e:
            return _Unsupported(_first(e))
        except RuntimeError as e:
            if _UNSUPPORTED.search(str(e)) and re.search(r"not (been )?implemented|not support|does not support",
                                                          str(e), re.IGNORECASE):
                return _Unsupported(_first(e))
            raise
    return state.call(what, attempt)


def _first(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"

