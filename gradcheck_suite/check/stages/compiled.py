"""Opt-in (``--compile``, a record's ``compile=True``, the nightly profile), for a case that
passes in eager: the same case through ``torch.compile`` (``case.compile`` names the
backend), its output and manual gradient against eager's within the case's bound.

- an op (``op_model``: an ``autograd.Function`` or a custom op): the op compiled, called on
  fresh leaves, and ``torch.autograd.grad`` of ``<out, g>`` through it, as training does;
  then ``torch.func.vjp`` of the compiled op, where eager ``torch.func`` takes the op;
- a plain record whose forward is torch code: one compiled function that runs the forward
  and then the backward on the case's tensors.

A graph break is a note naming its reason (with ``--compile-fullgraph``, ``case.fullgraph``,
an error naming it, as ``torch.compile(fullgraph=True)`` refuses it); an exception from torch's compiler is a note
naming its message (the user's code ran in eager on the same tensors); different values
fail.  Dynamo is reset before and after, so that compiled code does not pile up from case
to case, and its recompiles are capped (``rules.COMPILE_RECOMPILES``).
"""
from __future__ import annotations

import math
import warnings

import torch

from ...kinds import kind_named
from ...record.errors import RunNote
from ...record.spec import Model, Tensors
from ...verdict import rules
from ...verdict.tolerance import Element, TensorComparison, all_finite, bound, noise
from ..case import float64, join, split
from ..result import FAIL, NONDIFF, PASS
from ..state import CaseState, Stop


def backend_for(model: Model, profile: str, asked: str | None) -> str | None:
    """The backend a run compiles with, or None: the record's ``compile`` first (False:
    never), then the option (``--compile``), then the profile (nightly: on)."""
    if model.compile is False or not applies_to(model):
        return None
    if asked:
        return asked
    if model.compile is True or profile == "nightly":
        return rules.COMPILE_BACKEND
    return None


def applies_to(model: Model) -> bool:
    """An op as it ships, or a record whose forward and backward are torch code."""
    if model.two_way:
        return False
    return model.op is not None or kind_named(model.kind).plain_torch


def wanted(state: CaseState) -> bool:
    """The case asks for it, and passed in eager (a wrong eager gradient is already reported)."""
    return state.case.compile is not None and applies_to(state.model) and state.result.verdict in (PASS, NONDIFF)


def run(state: CaseState) -> None:
    backend = state.case.compile
    label = f"torch.compile ({backend})"
    state.result.phase = label
    import torch._dynamo
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    breaks = []
    try:
        with torch._dynamo.config.patch(recompile_limit=rules.COMPILE_RECOMPILES), warnings.catch_warnings():
            warnings.simplefilter("ignore")      # dynamo's advice, once a case: the notes say what matters
            if state.model.op is not None:
                _op(state, backend, label)
            else:
                _record(state, backend, label)
    finally:
        breaks = sorted(counters.get("graph_break", {}).items(), key=lambda kv: -kv[1])
        torch._dynamo.reset()
        counters.clear()
        if breaks and (not state.case.fullgraph or not state.result.ok):   # fullgraph: an error, below
            state.result.notes.append(RunNote(
                f"{label} broke the graph: {_reasons(breaks)}; the pieces ran compiled and were checked, but a graph "
                "break costs speed (fullgraph=True would refuse it)", key="compile graph break"))
    if breaks and state.case.fullgraph:   # reached only where the values agreed: a failure comes first
        raise state.error(f"{label} broke the graph, and fullgraph was asked for (--compile-fullgraph): "
                          f"{_reasons(breaks)}; torch.compile(fullgraph=True) refuses this code")


def _reasons(breaks: list) -> str:
    """Dynamo's graph-break reasons, the most frequent first, at most three."""
    return "; ".join(f"{_first_line(r)}" + (f" ({n} times)" if n > 1 else "") for r, n in breaks[:3])


def _first_line(text: str) -> str:
    """The message's first line, and dynamo's ``Explanation:`` line where it gives one."""
    lines = [t.strip() for t in str(text).strip().splitlines() if t.strip()]
    if not lines:
        return "(no message)"
    why = next((t for t in lines[1:] if t.startswith("Explanation:")), None)
    return lines[0] + (f" ({why})" if why else "")


def _reason(e: BaseException) -> str:
    """The exception's first line, and that of its innermost cause where there is one
    (torch wraps the reason: "RuntimeError when making fake tensor call", caused by "no fake
    impl registered")."""
    text = f"{type(e).__name__}: {_first_line(str(e))}"
    cause = e
    while cause.__cause__ is not None and cause.__cause__ is not cause:
        cause = cause.__cause__
    if cause is not e:
        text += f", caused by {type(cause).__name__}: {_first_line(str(cause))}"
    return text


def _torch_refused(state: CaseState, label: str, what: str, e: BaseException) -> None:
    """An exception under compile, on tensors the user's code ran in eager: torch's compiler."""
    state.result.notes.append(RunNote(
        f"{label} could not run {what}: {_reason(e)} (raised by torch's compiler; the same call runs in "
        "eager on the same tensors, so this is a note, and the check under compile is left out)",
        key=f"compile error {what}"))


def _op(state: CaseState, backend: str, label: str) -> None:
    model, info = state.model, state.model.op
    h = model.h
    gs = split(state.g, model.layout)
    gs = gs if isinstance(gs, tuple) else (gs,)

    def call(*args, **kwargs):
        return info.call(*args, **kwargs)

    leaves = {n: state.p[n].detach().clone().requires_grad_(True) for n in info.inputs}
    values = info.arguments(leaves, state.d, h)
    positional = [v for n, v in zip(info.args, values) if n not in info.keywords]
    keywords = {n: v for n, v in zip(info.args, values) if n in info.keywords}
    compiled = torch.compile(call, backend=backend, dynamic=False)
    try:
        with torch.enable_grad():
            outs = compiled(*positional, **keywords)
            outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
            pairs = [(o, g) for o, g in zip(outs, gs) if o.requires_grad]
            grads = torch.autograd.grad([o for o, _ in pairs], [leaves[n] for n in info.inputs],
                                        grad_outputs=[g for _, g in pairs], allow_unused=True) if pairs else ()
    except Exception as e:  # torch's compiler: the same call ran in eager
        _torch_refused(state, label, "the op and its backward", e)
        return
    out = join(tuple(o.detach() for o in outs) if len(outs) > 1 else outs[0].detach(), "the compiled op")[0]
    got = {n: torch.zeros_like(leaves[n]) if gr is None else gr for n, gr in zip(info.inputs, grads)} if grads \
        else {n: torch.zeros_like(leaves[n]) for n in info.inputs}
    _judge(state, label, out, got, "the manual gradient of {n} under " + label)
    if not any(n in info.keywords for n in info.inputs):
        _func_vjp(state, backend, label, call, positional, keywords, gs)


def _func_vjp(state: CaseState, backend: str, label: str, call, positional, keywords, gs) -> None:
    """``torch.func.vjp`` of the compiled op, where eager ``torch.func.vjp`` takes the op
    (an ``autograd.Function`` needs ``setup_context`` for torch.func: without it torch
    refuses, which is documented, and only a note)."""
    info = state.model.op
    if getattr(state.model.h, "sparse", None):   # it would differentiate the rebuilt sparse tensor, not its values
        state.result.notes.append(RunNote(f"torch.func.vjp under {label} is not checked with a sparse COO input "
                                          "(the op under torch.compile and autograd through it are)", key="compile func"))
        return
    where = [i for i, (n, v) in enumerate(zip([n for n in info.args if n not in info.keywords], positional))
             if n in info.inputs]
    primals = tuple(positional[i].detach() for i in where)

    def over(*xs):
        args = list(positional)
        for i, x in zip(where, xs):
            args[i] = x
        out = call(*args, **keywords)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    names = [n for n in info.args if n not in info.keywords and n in info.inputs]
    try:
        _, eager_fn = torch.func.vjp(over, *primals)
        eager = dict(zip(names, eager_fn(gs)))
    except Exception as e:  # torch.func refuses the op in eager: documented, a note
        state.result.notes.append(RunNote(f"torch.func.vjp does not take this op in eager ({_first_line(str(e))}); "
                                          f"torch.func under {label} went unchecked", key="compile func"))
        return
    if any(_compare(n, eager.get(n), state.grads[n], bound(state.grads[n], state.case.dtype, state.rounding.get(n)))
           is not None for n in names):
        # not compile's doing: eager torch.func already gives another gradient (a matter for torch.func)
        state.result.notes.append(RunNote(f"torch.func.vjp of the op gives another gradient than autograd in eager; "
                                          f"torch.func under {label} went unchecked", key="compile func"))
        return
    compiled = torch.compile(over, backend=backend, dynamic=False)
    what = f"torch.func.vjp of the op under {label}"
    try:
        outs, vjp_fn = torch.func.vjp(compiled, *primals)
        grads = vjp_fn(gs)
    except Exception as e:  # torch's compiler: eager torch.func ran the same call
        _torch_refused(state, label, "torch.func.vjp of the op", e)
        return
    out = join(tuple(o.detach() for o in outs) if len(outs) > 1 else outs[0].detach(), "the compiled op")[0]
    _judge(state, label, out, dict(zip(names, grads)), "the manual gradient of {n} through " + what)


def _record(state: CaseState, backend: str, label: str) -> None:
    model = state.model
    raw, extra = model.model, model.extra
    gs = split(state.g, model.layout)

    def step(p, d, g):
        out, cache = raw.forward(p, d, *extra)
        return out, raw.backward(p, d, cache, g, *extra)

    p = Tensors((n, t.clone()) for n, t in state.p.items())
    d = Tensors((n, t.clone()) for n, t in state.d.items())
    compiled = torch.compile(step, backend=backend, dynamic=False)
    try:
        with torch.no_grad():
            out, grads = compiled(p, d, gs)
    except Exception as e:  # torch's compiler: the same forward and backward ran in eager
        _torch_refused(state, label, "the forward and backward", e)
        return
    out = join(out, "the compiled forward")[0]
    _judge(state, label, out, grads, "the manual gradient of {n} under " + label)


def _judge(state: CaseState, label: str, out, grads, headline: str) -> None:
    """The compiled output and gradients against eager's, each within the case's bound (the
    output: the dtype's bound of eager's output); outside float64, an element beyond it is
    given eager's own rounding too (its distance from eager in float64, as the reference
    stage allows the forward's own): a compiler may sum in another order.  The first that
    differs fails the case."""
    res, case = state.result, state.case
    checks = [("forward", out, state.out, bound(state.out, case.dtype))]
    for n in state.model.differentiable:
        c = res.tensors.get(n)
        b = c.bound if c is not None and c.bound is not None and tuple(c.bound.shape) == tuple(state.grads[n].shape) \
            else bound(state.grads[n], case.dtype, state.rounding.get(n))
        checks.append((n, grads.get(n) if hasattr(grads, "get") else None, state.grads[n], b))
    own = None
    for n, got, eager, b in checks:
        comp = _compare(f"{n} under {label}", got, eager, b)
        if comp is not None and case.dtype != "float64" and isinstance(got, torch.Tensor) and got.shape == eager.shape:
            own = _own_rounding(state) if own is None else own
            if own.get(n) is not None:
                comp = _compare(f"{n} under {label}", got, eager, b.to(torch.float64) + noise(case.dtype) * own[n])
        if comp is None:
            continue
        res.tensors[comp.name] = comp
        res.verdict, res.failing = FAIL, [comp.name]
        worst = comp.worst[0] if comp.worst else None
        at = f" at {list(worst.index)}: compiled {worst.manual:.6g}, eager {worst.autograd:.6g}" if worst else ""
        what = "the output of the forward under " + label if n == "forward" else headline.format(n=n)
        shape = "the shape " + str(tuple(got.shape)) if isinstance(got, torch.Tensor) and got.shape != eager.shape \
            else f"{comp.mismatched} of {max(1, eager.numel())} elements"
        res.summary = (f"{what} differs from eager{at} ({shape} outside the case's bound): "
                       "eager passes, so training under torch.compile gets another result")
        raise Stop()


def _own_rounding(state: CaseState) -> dict[str, torch.Tensor]:
    """Eager's own rounding, the largest element per tensor: the forward and the manual
    gradient in the case's dtype against the same in float64 (empty where float64 raises)."""
    model = state.model
    p64, d64 = float64(state.p), float64(state.d)
    try:
        with torch.no_grad():
            out64, cache64 = model.forward(p64, d64)
            grads64 = model.backward(p64, d64, cache64, state.g.to(torch.float64))
    except Exception:  # the user's code in float64: the bound stays as it is
        return {}
    pairs = {"forward": (state.out, out64), **{n: (state.grads[n], grads64.get(n)) for n in model.differentiable}}
    return {n: (a.detach().to("cpu", torch.float64) - b.detach().to("cpu", torch.float64)).abs()
            .nan_to_num(0.0, 0.0, 0.0).max() if isinstance(b, torch.Tensor) and b.shape == a.shape and a.numel() else None
            for n, (a, b) in pairs.items()}


def _compare(name: str, got, eager: torch.Tensor, b: torch.Tensor) -> TensorComparison | None:
    """None where ``got`` is within ``b`` of ``eager`` in every element (NaN where eager is
    NaN allowed); else the comparison, its worst elements first."""
    shape = tuple(eager.shape)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        return TensorComparison(name, shape, max(1, eager.numel()), math.inf, math.inf, [], b)
    g64 = got.detach().to("cpu", torch.float64)
    e64 = eager.detach().to("cpu", torch.float64)
    b64 = b.detach().to("cpu", torch.float64)
    if all_finite(e64) and all_finite(g64):
        err = (g64 - e64).abs()
    else:
        same = (g64 == e64) | (g64.isnan() & e64.isnan())
        err = torch.where(same, torch.zeros_like(g64), (g64 - e64).abs().nan_to_num(math.inf))
    ratio = err / b64.clamp_min(rules.TINY)
    bad = ratio > 1
    if not bool(bad.any()):
        return None
    flat = ratio.reshape(-1)
    top = torch.topk(flat, min(rules.WORST, flat.numel())).indices.tolist()
    worst = []
    for i in top:
        if not float(flat[i]) > 1:
            break
        index = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), shape)) if shape else ()
        e = float(e64.reshape(-1)[i])
        worst.append(Element(index, float(g64.reshape(-1)[i]), e, None, float(err.reshape(-1)[i]),
                             float(err.reshape(-1)[i]) / max(abs(e), rules.TINY), float(flat[i])))
    rel = max((w.rel_err for w in worst), default=0.0)
    return TensorComparison(name, shape, int(bad.sum()), rel, float(flat.max()), worst, b64)
