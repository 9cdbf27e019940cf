"""For a shipped op (``op_model``) whose case passes: the backward under vmap, as per-sample
gradients, ``jacrev`` and ``torch.autograd.grad(..., is_grads_batched=True)`` call it.

1. The op's graph once, and ``rules.BATCH`` upstream gradients ``G`` (drawn like the case's
   ``g``, salted with ``rules.SALT_BATCHED``): the gradients under ``torch.func.vmap`` over
   ``torch.autograd.grad`` and then under ``is_grads_batched=True``, each member against the
   same backward called on that member alone.  ``torch.func.vmap`` runs first: it refuses
   cleanly what the older batching behind ``is_grads_batched`` may crash the process on
   (``g.data`` in a backward).
2. Where the op is an ``autograd.Function`` with a ``vmap`` staticmethod or
   ``generate_vmap_rule = True``: ``torch.vmap`` of the op over a batch of inputs (the case's
   own and ``BATCH - 1`` more drawn like it), its output and its per-sample gradients (the
   backward through the vmapped op), against a loop of single calls.  (Not ``torch.func.vjp``
   inside vmap: its first call imports ``torch._dynamo``, seconds a process.)

Wrong values fail, naming the tensor and "under vmap".  Torch's own refusal of the
Function's ``vmap`` staticmethod's return is an error.  Where torch documents vmap as
unsupported (an op without a batching rule, ``.item()``, ``.data``, writes into
an unbatched tensor), that is a note on the run, never a failure.
"""
from __future__ import annotations

import dataclasses

import torch

from ...record.errors import RunNote
from ...record.spec import Tensors
from ...verdict import rules
from ...verdict.oracles import refuses_grad
from ...verdict.tolerance import bound, noise, unravel
from ..case import build, split, upstream
from ..floor import widened
from ..result import FAIL
from ..state import CaseState, Stop

#: what torch says when it rejects a Function's own ``vmap`` staticmethod (an error of the user's rule)
_RULE_REJECTED = ("The autograd.Function's vmap staticmethod returned", "Expected the vmap staticmethod to have two returns",
                  "it has both generate_vmap_rule=True and an overridden vmap staticmethod")


class _Unsupported(Exception):
    """Torch does not run this under vmap (documented): a note, not a failure."""


class _NotForTransforms(_Unsupported):
    """An old-style Function (``forward(ctx, ...)``, no ``setup_context``): torch.func takes none
    of them, as torch documents, so per-sample gradients were never on offer; nothing to say."""


#: what torch says when a torch.func transform meets an old-style Function
_OLD_STYLE = "must override the setup_context staticmethod"


def run(state: CaseState) -> None:
    model = state.model
    op = model.op
    try:
        text = _grads_batched(state, op)
        fn = _function(op)
        if text is None and fn is not None and _declares_vmap(fn):      # a Function without a vmap rule:
            text = _vmapped_op(state, op, fn)       # torch documents vmap over it as unsupported, nothing to say
    except _NotForTransforms:
        return
    except _Unsupported as e:
        state.result.notes.append(RunNote(str(e), key="batched"))
        return
    except _Rejected as e:
        first = (str(e.error).strip().splitlines() or [""])[0]
        raise state.error(f"{e.fn.__name__}'s vmap staticmethod: torch rejects what it returns under torch.vmap "
                          f"({type(e.error).__name__}: {first})") from None
    if text is not None:
        name, message = text
        res = state.result
        res.verdict = FAIL
        res.failing = [f"{name} (under vmap)"]
        res.summary = message
        raise Stop()


# -- 1. the backward over a batch of upstream gradients ---------------------------------------

def _grads_batched(state: CaseState, op) -> tuple[str, str] | None:
    model, case, p, d = state.model, state.case, state.p, state.d
    G = [_parts(split(upstream(state.out, (case.seed ^ rules.SALT_BATCHED) + b), model.layout))
         for b in range(rules.BATCH)]
    names = list(op.inputs)

    def graph():
        """The op's graph, built anew for each backward: a Function may let its saved
        tensors be read once only (``clear_saved_tensors_on_access``), as training does."""
        leaves = [p[n].detach().requires_grad_(True) for n in names]
        with torch.enable_grad():
            outs = _outputs(op.invoke(dict(zip(names, leaves)), d, model.h))
        return leaves, [(i, o) for i, o in enumerate(outs) if o.requires_grad]

    def grad(leaves, kept, gs, **how):
        got = torch.autograd.grad([o for _, o in kept], leaves, grad_outputs=list(gs), allow_unused=True, **how)
        shape = (rules.BATCH,) if how.get("is_grads_batched") else ()
        return tuple(torch.zeros(shape + tuple(x.shape), dtype=x.dtype, device=x.device) if r is None else r
                     for x, r in zip(leaves, got))

    def per_sample(b):
        leaves, kept = graph()
        return grad(leaves, kept, [G[b][i] for i, _ in kept])

    refused = []

    def per_sample_or_refused(b):
        try:
            return per_sample(b)
        except RuntimeError as e:
            if not refuses_grad(e):
                raise
            refused.append(e)      # a reentrant checkpoint: .backward() only, which vmap cannot batch

    leaves, kept = state.call("the op's forward, for the backward under vmap", graph)
    if not kept:
        return None        # no output carries a gradient: nothing to batch
    single = [state.call("backward, per sample", per_sample_or_refused, b) for b in range(rules.BATCH)]
    if refused:
        raise _Unsupported(f"the backward of {model.name} cannot be taken with torch.autograd.grad (torch raises: "
                           f"{(str(refused[0]).strip().splitlines() or [''])[0][:200]}), which vmap needs: the "
                           "backward under vmap was not checked")
    stacked = [torch.stack([G[b][i] for b in range(rules.BATCH)]) for i, _ in kept]
    state.result.phase = "backward under torch.func.vmap"
    try:
        vmapped = torch.func.vmap(lambda *gs: grad(leaves, kept, gs, retain_graph=True))(*stacked)
    except Exception as e:  # torch's refusal, or the user's code under vmap: read as unsupported
        if _OLD_STYLE in str(e):
            raise _NotForTransforms() from None
        raise _Unsupported(_unsupported(f"the backward of {model.name}", "torch.func.vmap (per-sample gradients, jacrev)",
                                        e, "the backward under vmap")) from None
    text = _judge(state, names, single, vmapped, "torch.func.vmap over the upstream gradient")
    if text:
        return text
    leaves, kept = state.call("the op's forward, for the backward under vmap", graph)
    state.result.phase = "backward with is_grads_batched=True"
    try:
        got = grad(leaves, kept, stacked, is_grads_batched=True)
    except Exception as e:
        raise _Unsupported(_unsupported(f"the backward of {model.name}", "torch.autograd.grad(is_grads_batched=True)",
                                        e, "the backward with is_grads_batched")) from None
    return _judge(state, names, single, got, "is_grads_batched")


def _judge(state: CaseState, names, single, batched, how: str) -> tuple[str, str] | None:
    """The first tensor whose batch member differs from the per-sample call beyond the
    case's bound: (its name, the message)."""
    for i, n in enumerate(names):
        for b in range(rules.BATCH):
            ref, new = single[b][i], batched[i][b] if len(batched[i]) == rules.BATCH else None
            if new is None or tuple(new.shape) != tuple(ref.shape):
                shape = tuple(batched[i].shape)
                return n, (f"the gradient of {n} under vmap ({how}) has shape {shape}, the same backward called per "
                           f"sample gives {rules.BATCH} of shape {tuple(ref.shape)}")
            worst = _beyond(state, n, new, ref)
            if worst is not None:
                err, index, allowed = worst
                return n, (f"the gradient of {n} under vmap ({how}) differs from the same backward called per "
                           f"sample: batch member {b} of {rules.BATCH}{_at(index)}: {_num(new, index)} vs "
                           f"{_num(ref, index)} (error {err:.3g}, allowed {allowed:.3g}); does the backward "
                           "mix the members of the batch (a reduction over dim 0 of g, or a vmap rule inside it)?")
    return None


def _beyond(state: CaseState, n: str, new: torch.Tensor, ref: torch.Tensor):
    """The worst element of ``new`` beyond the case's bound of ``ref`` (the bound of
    ``ref``'s size, at least the rounding the case allowed, and the computation's rounding
    where it is crossed): (error, index, allowed) or None."""
    a, r = new.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)
    if torch.equal(a, r):
        return None
    dtype = state.case.dtype
    c = state.result.tensors.get(n)
    least = float(c.bound.min()) if c is not None and c.bound.numel() else 0.0
    allowed = bound(r, dtype, state.rounding.get(n)).add_(least)
    found = _worst(a, r, allowed)
    if found is None or state.model.two_way:
        return found
    wide = widened(state)
    if wide is not None and n in wide and wide[n].numel():
        allowed = allowed.add_(float(wide[n].min()))
        found = _worst(a, r, allowed)
    return found


def _worst(a: torch.Tensor, r: torch.Tensor, allowed: torch.Tensor):
    err = torch.sub(a, r).abs_()
    bad = ~(err <= allowed) & ~((a == r) | (a.isnan() & r.isnan()))
    if not bool(bad.any()):
        return None
    score = torch.where(bad, err.nan_to_num(float("inf"), float("inf"), float("inf")), -1.0).reshape(-1)
    i = int(score.argmax())
    return float(err.reshape(-1)[i]), unravel(i, tuple(err.shape)), float(allowed.reshape(-1)[i])


# -- 2. the op itself under torch.vmap --------------------------------------------------------

def _function(op):
    """The ``autograd.Function`` class where the record holds one itself (not a wrapper), else None."""
    fn = getattr(op.call, "__self__", None)
    return fn if op.direct and isinstance(fn, type) and issubclass(fn, torch.autograd.Function) else None


def _declares_vmap(fn) -> bool:
    """The Function has a ``vmap`` staticmethod of its own, or ``generate_vmap_rule = True``."""
    own = any("vmap" in vars(k) for k in fn.__mro__ if not k.__module__.startswith("torch."))
    return own or bool(getattr(fn, "generate_vmap_rule", False))


def _vmapped_op(state: CaseState, op, fn) -> tuple[str, str] | None:
    model, case = state.model, state.case
    members = [(state.p, state.d)]
    for b in range(1, rules.BATCH):
        other = dataclasses.replace(case, seed=(case.seed ^ rules.SALT_BATCHED_INPUTS) + b)
        members.append(state.call("the tensor factory", build, model.model, other))
    batch = [n for n in op.args if n in state.p or n in state.d]
    names = list(op.inputs)
    h = model.h

    def call(*tensors):
        values = dict(zip(batch, tensors))
        P = Tensors((n, values[n]) for n in state.p)
        D = Tensors((n, values[n]) for n in state.d)
        return _outputs(op.invoke(P, D, h))

    singles = [[(P[n] if n in P else D[n]) for n in batch] for P, D in members]
    with torch.no_grad():
        loop = [state.call("forward, per sample", call, *args) for args in singles]
    if not all(bool(torch.isfinite(o).all()) for outs in loop for o in outs if o.is_floating_point()):
        return None        # a drawn member outside the op's domain: nothing to compare
    where = [batch.index(n) for n in names]
    stacked = [torch.stack([args[k] for args in singles]).detach().requires_grad_(k in where)
               for k in range(len(batch))]
    state.result.phase = f"{fn.__name__} under torch.vmap"
    with torch.enable_grad():
        vmapped = _under_vmap(fn, lambda: torch.vmap(call)(*stacked))
    for k, outs in enumerate(zip(*loop)):
        ref, new = torch.stack(outs), vmapped[k] if k < len(vmapped) else None
        if new is None or tuple(new.shape) != tuple(ref.shape):
            got = "nothing" if new is None else f"shape {tuple(new.shape)}"
            return f"output {k}", (f"{fn.__name__}'s output {k} under vmap (torch.vmap) has {got}, a loop of single "
                                   f"calls gives shape {tuple(ref.shape)}: are the out_dims its vmap staticmethod "
                                   "returns right?")
        found = _worst_forward(state, call, singles, k, new, ref)
        if found is not None:
            err, index, allowed = found
            return f"output {k}", (f"{fn.__name__}'s output {k} under vmap (torch.vmap) differs from a loop of single "
                                   f"calls{_at(index)}: {_num(new, index)} vs {_num(ref, index)} (error {err:.3g}, "
                                   f"allowed {allowed:.3g}): is the value its vmap staticmethod returns right?")
    # the per-sample gradients: the backward through torch.vmap of the op (the Function's
    # backward under its vmap rule), against the backward called on each member alone
    G = [_parts(split(upstream(state.out, (case.seed ^ rules.SALT_BATCHED_INPUTS) + b), model.layout))
         for b in range(rules.BATCH)]
    kept = [(i, o) for i, o in enumerate(vmapped) if o.requires_grad]
    single = []
    for b in range(rules.BATCH):
        P, D = members[b]
        with torch.no_grad():
            single.append(state.call("backward, per sample", _manual, op, P, D, h, G[b]))
    single = [[s[n] for n in names] for s in single]
    state.result.phase = f"per-sample gradients through {fn.__name__} under torch.vmap"
    leaves = [stacked[j] for j in where]
    got = [None] * len(leaves) if not kept else _under_vmap(fn, lambda: torch.autograd.grad(   # none: a rule that
        [o for _, o in kept], leaves,                                            # detached its output
        grad_outputs=[torch.stack([G[b][i] for b in range(rules.BATCH)]) for i, _ in kept], allow_unused=True))
    got = [torch.zeros_like(x) if r is None else r for x, r in zip(leaves, got)]
    return _judge(state, names, single, got, f"per-sample gradients, the backward through torch.vmap of {fn.__name__}")


def _manual(op, P, D, h, gs) -> dict[str, torch.Tensor]:
    return op.gradients(P, D, h, gs if len(gs) > 1 else gs[0])


def _under_vmap(fn, thunk):
    try:
        return thunk()
    except Exception as e:
        text = str(e)
        if any(s in text for s in _RULE_REJECTED):
            raise _Rejected(fn, e) from None
        raise _Unsupported(_unsupported(fn.__name__, "torch.vmap", e, f"{fn.__name__} under torch.vmap")) from None


class _Rejected(Exception):
    """Torch rejects what the Function's own vmap staticmethod returned: an error of its rule."""

    def __init__(self, fn, error: BaseException):
        super().__init__(str(error))
        self.fn, self.error = fn, error


def _worst_forward(state, call, singles, k, new, ref):
    """The worst element of the vmapped output beyond the bound of the loop's, widened in a
    low precision by the loop's own rounding (its distance from the same calls in float64)."""
    dtype = state.case.dtype
    a, r = new.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)
    if torch.equal(a, r):
        return None
    found = _worst(a, r, bound(r, dtype))
    if found is None or dtype == "float64":
        return found
    with torch.no_grad():
        r64 = torch.stack([call(*[t.to(torch.float64) if t.is_floating_point() else t for t in args])[k]
                           for args in singles]).to("cpu", torch.float64)
    rounding = (r - r64).abs().nan_to_num_(0.0, 0.0, 0.0).max()
    return _worst(a, r, bound(r, dtype, rounding).add_(noise(dtype) * float(rounding)))


# -- words -------------------------------------------------------------------------------------

def _unsupported(who: str, how: str, e: BaseException, what: str) -> str:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return (f"{who} does not run under {how}: torch raises {type(e).__name__}: {first[:300]}; torch documents this "
            f"as unsupported, so {what} was not checked")


def _outputs(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _parts(g) -> tuple[torch.Tensor, ...]:
    return g if isinstance(g, tuple) else (g,)


def _at(index) -> str:
    return f" at {list(index)}" if len(index) else ""


def _num(t: torch.Tensor, index) -> str:
    return f"{float(t.detach()[tuple(index)]):.6g}"
