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
3. Where that agrees: the same with the batch elsewhere, as training puts it and a rule must
   read from its ``in_dims``: at the last dim of each input (``torch.vmap(..., in_dims=...)``),
   and, with two or more tensor arguments, the first batched alone and the first unbatched
   alone (``None``: the first member's value shared, as per-sample gradients leave the
   weights); ``rules.BATCH_IN_DIMS`` members in each.  Torch's own rule
   (``generate_vmap_rule``) reads in_dims by construction: one layout, the first input at its
   last dim and the others unbatched.  An unbatched input's gradient is the members' summed,
   against the per-member sum.  A difference names the in_dims; the rule's own exception
   there is an error (it ran at dim 0), a ``NotImplementedError`` it raises itself a note.

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
        under = f"under {e.how}" if e.how else "under torch.vmap"
        raise state.error(f"{e.fn.__name__}'s vmap staticmethod: torch rejects what it returns {under} "
                          f"({type(e.error).__name__}: {first})") from None
    except _RuleRaised as e:
        first = (str(e.error).strip().splitlines() or [""])[0][:300]
        raise state.error(f"{e.fn.__name__}'s vmap staticmethod raises {type(e.error).__name__} ({first}) under "
                          f"{e.how}; with every input batched at dim 0 it runs and agrees with a loop of single "
                          "calls: does it read in_dims (an input's batch dim, or None where that input is not "
                          "batched)?") from None
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


def _judge(state: CaseState, names, single, batched, how: str, ask: str | None = None) -> tuple[str, str] | None:
    """The first tensor whose batch member differs from the per-sample call beyond the
    case's bound: (its name, the message).  ``ask``: the closing question, where it is not
    whether the backward mixes the members."""
    for i, n in enumerate(names):
        for b in range(len(single)):
            ref, new = single[b][i], batched[i][b] if len(batched[i]) == len(single) else None
            if new is None or tuple(new.shape) != tuple(ref.shape):
                shape = tuple(batched[i].shape)
                return n, (f"the gradient of {n} under vmap ({how}) has shape {shape}, the same backward called per "
                           f"sample gives {len(single)} of shape {tuple(ref.shape)}")
            worst = _beyond(state, n, new, ref)
            if worst is not None:
                err, index, allowed = worst
                return n, (f"the gradient of {n} under vmap ({how}) differs from the same backward called per "
                           f"sample: batch member {b} of {len(single)}{_at(index)}: {_num(new, index)} vs "
                           f"{_num(ref, index)} (error {err:.3g}, allowed {allowed:.3g}); " + (ask or "does the "
                           "backward mix the members of the batch (a reduction over dim 0 of g, or a vmap rule "
                           "inside it)?"))
    return None


def _beyond(state: CaseState, n: str, new: torch.Tensor, ref: torch.Tensor):
    """The worst element of ``new`` beyond the case's bound of ``ref`` (the bound of
    ``ref``'s size, at least the rounding the case allowed, and the computation's rounding
    where it is crossed): (error, index, allowed) or None."""
    a, r = new.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)
    if torch.equal(a, r):
        return None
    found = _worst(a, r, _allowed(state, n, r))
    if found is None or state.model.two_way:
        return found
    wide = widened(state)
    if wide is not None and n in wide and wide[n].numel():
        found = _worst(a, r, _allowed(state, n, r, wide))
    return found


def _allowed(state: CaseState, n: str, r: torch.Tensor, wide=None) -> torch.Tensor:
    """The case's bound of ``r`` (float64) for tensor ``n``; with ``wide``, the computation's
    rounding added."""
    c = state.result.tensors.get(n)
    least = float(c.bound.min()) if c is not None and c.bound.numel() else 0.0
    allowed = bound(r, state.case.dtype, state.rounding.get(n)).add_(least)
    if wide is not None and n in wide and wide[n].numel():
        allowed = allowed.add_(float(wide[n].min()))
    return allowed


def _judge_shared(state: CaseState, n: str, single, got: torch.Tensor, how: str, ask: str | None):
    """An input left unbatched: the gradient through vmap is the members' gradients summed
    (torch sums a batched gradient down to the unbatched input), against the sum of the
    backward called per member.  The bound is each member's bound summed, and the sum's own
    rounding: (its name, the message) or None."""
    rs = [r.detach().to("cpu", torch.float64) for r in single]
    ref = torch.stack(rs).sum(0)
    if tuple(got.shape) != tuple(ref.shape):
        return n, (f"the gradient of {n} through vmap ({how}) has shape {tuple(got.shape)}, the input's shape is "
                   f"{tuple(ref.shape)}; " + (ask or ""))
    a = got.detach().to("cpu", torch.float64)
    if torch.equal(a, ref):
        return None

    def allowed(wide=None):
        total = bound(ref, state.case.dtype)
        for r in rs:
            total = total.add_(_allowed(state, n, r, wide))
        return total

    found = _worst(a, ref, allowed())
    if found is not None and not state.model.two_way:
        wide = widened(state)
        if wide is not None and n in wide and wide[n].numel():
            found = _worst(a, ref, allowed(wide))
    if found is None:
        return None
    err, index, limit = found
    return n, (f"the gradient of {n} through vmap ({how}; its gradient is the members' summed) differs from the "
               f"sum of the same backward called per sample{_at(index)}: {_num(a, index)} vs {_num(ref, index)} "
               f"(error {err:.3g}, allowed {limit:.3g}); " + (ask or "does the backward read the unbatched input?"))


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
    h = model.h

    def call(*tensors):
        values = dict(zip(batch, tensors))
        P = Tensors((n, values[n]) for n in state.p)
        D = Tensors((n, values[n]) for n in state.d)
        return _outputs(op.invoke(P, D, h))

    singles = [[(P[n] if n in P else D[n]) for n in batch] for P, D in members]
    G = [_parts(split(upstream(state.out, (case.seed ^ rules.SALT_BATCHED_INPUTS) + b), model.layout))
         for b in range(rules.BATCH)]
    first = _Layout(None, batch)
    text, done = _vmapped_at(state, op, fn, call, batch, singles, G, first)
    if text is not None or done is None:
        return text
    # the same rule with the batch elsewhere (torch passes the rule each input's batch dim,
    # wherever torch.vmap's in_dims put it; per-sample gradients leave the weights unbatched): a
    # rule that reads only dim 0 of each input, or takes every input as batched, passes above
    declined = None      # the first layout torch or the rule declines (a note): the others still run
    for layout in _other_layouts(batch, singles[0], _own_rule(fn)):
        rows = [[singles[0][k] if layout.in_dims[k] is None else row[k] for k in range(len(batch))]
                for row in singles[:rules.BATCH_IN_DIMS]]
        if layout.shares:      # member 0 as it was; the others hold its value of the unbatched inputs
            known, same = {0: (done[0][0], dict(zip(op.inputs, done[1][0])))}, None
        else:
            known, same = None, (done[0][:len(rows)], done[1][:len(rows)])
        try:
            text, _ = _vmapped_at(state, op, fn, call, batch, rows, G, layout, same, known)
        except _Unsupported as e:
            declined = declined or e
            continue
        if text is not None:
            return text
    if declined is not None:
        raise declined
    return None


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where the batch sits in each tensor argument of the op under ``torch.vmap``: ``in_dims``
    (None for the first layout: dim 0 of every one, torch.vmap's default), with their names."""

    in_dims: tuple[int | None, ...] | None
    names: list

    @property
    def shares(self) -> bool:
        return self.in_dims is not None and None in self.in_dims

    def dim(self, k: int) -> int | None:
        return 0 if self.in_dims is None else self.in_dims[k]

    def words(self) -> str:
        """``torch.vmap with in_dims=(2, None) over (x, w): x batched at its dim 2, w unbatched
        (one value shared by the members)``."""
        dims = ", ".join("None" if d is None else str(d) for d in self.in_dims)
        dims = f"({dims},)" if len(self.in_dims) == 1 else f"({dims})"
        over = ", ".join(self.names)
        over = f"({over},)" if len(self.names) == 1 else f"({over})"
        each = [f"{n} unbatched (one value shared by the members)" if d is None else f"{n} batched at its dim {d}"
                for n, d in zip(self.names, self.in_dims)]
        return f"torch.vmap with in_dims={dims} over {over}: {', '.join(each)}"


def _other_layouts(batch, tensors, own: bool = True) -> list[_Layout]:
    """The layouts after dim 0 of every input.  For a rule of the Function's own: the batch at
    the last dim of each input (where any has a dim), then, with two or more tensor arguments,
    the first one batched alone and the first one unbatched alone (dim 0 for the batched ones),
    so that each input is left unbatched once.  For torch's own rule (``generate_vmap_rule``),
    which reads in_dims by construction, one: the first input at its last dim, the others
    unbatched (a forward that writes into an unbatched input shows there)."""
    last = tuple(t.dim() for t in tensors)
    if not own:
        one = (last[0],) + (None,) * (len(batch) - 1)
        return [_Layout(one, batch)] if any(d for d in one if d is not None) or None in one else []
    out = []
    if any(last):
        out.append(_Layout(last, batch))
    if len(batch) >= 2:
        out.append(_Layout((0,) + (None,) * (len(batch) - 1), batch))
        out.append(_Layout((None,) + (0,) * (len(batch) - 1), batch))
    return out


def _vmapped_at(state: CaseState, op, fn, call, batch, rows, G, layout: _Layout, done=None, known=None):
    """torch.vmap of the op over ``rows`` (one list of tensor arguments per member, the
    unbatched ones the same tensor in each) with the batch where ``layout`` puts it, against a
    loop of single calls: its outputs, then the gradients through it.  (failure text or None,
    the loop's results for a later layout over the same members; None where nothing was compared).
    ``done``: those results, where ``rows`` are the same members; ``known``: {member: (outputs,
    gradients)} of the members whose row is the same, the others then called once each for both."""
    model, h = state.model, state.model.h
    names = list(op.inputs)
    where = [batch.index(n) for n in names]
    if done is None or known is not None:
        loop, single = [None] * len(rows), [None] * len(rows)
        for b, (outs, grads) in (known or {}).items():
            loop[b], single[b] = outs, grads
        for b, row in enumerate(rows):
            if loop[b] is None and known is not None:     # one call for both: the forward's graph
                both = _forward_and_backward(op, _side(state.p, batch, row), _side(state.d, batch, row), h, G[b])
                if both is not None:
                    loop[b], single[b] = both
            if loop[b] is None:
                with torch.no_grad():
                    loop[b] = state.call("forward, per sample", call, *row)
        if not all(bool(torch.isfinite(o).all()) for outs in loop for o in outs if o.is_floating_point()):
            return None, None      # a drawn member outside the op's domain: nothing to compare
    else:
        loop, single = done
    stacked = [(rows[0][k] if layout.dim(k) is None else torch.stack([args[k] for args in rows], dim=layout.dim(k)))
               .detach().requires_grad_(k in where) for k in range(len(batch))]
    how = "" if layout.in_dims is None else layout.words()
    state.result.phase = f"{fn.__name__} under torch.vmap" + (f" with in_dims={layout.in_dims}" if how else "")
    with torch.enable_grad():
        vmapped = _under_vmap(fn, lambda: (torch.vmap(call) if not how else
                                           torch.vmap(call, in_dims=layout.in_dims))(*stacked), layout)
    said = "(torch.vmap)" if not how else f"({how})"
    ask = None if not how else (
        "does its vmap staticmethod read in_dims? (with every input batched at dim 0 it agrees)" if _own_rule(fn)
        else "its vmap rule is torch's own (generate_vmap_rule=True), so does its forward read where the batch sits?")
    for k, outs in enumerate(zip(*loop)):
        ref, new = torch.stack(outs), vmapped[k] if k < len(vmapped) else None
        if new is None or tuple(new.shape) != tuple(ref.shape):
            got = "nothing" if new is None else f"shape {tuple(new.shape)}"
            return (f"output {k}", (f"{fn.__name__}'s output {k} under vmap {said} has {got}, a loop of single "
                                    f"calls gives shape {tuple(ref.shape)}: "
                                    + (ask or "are the out_dims its vmap staticmethod returns right?"))), None
        found = _worst_forward(state, call, rows, k, new, ref)
        if found is not None:
            err, index, allowed = found
            return (f"output {k}", (f"{fn.__name__}'s output {k} under vmap {said} differs from a loop of single "
                                    f"calls{_at(index)}: {_num(new, index)} vs {_num(ref, index)} (error {err:.3g}, "
                                    f"allowed {allowed:.3g}): "
                                    + (ask or "is the value its vmap staticmethod returns right?"))), None
    # the per-sample gradients: the backward through torch.vmap of the op (the Function's
    # backward under its vmap rule), against the backward called on each member alone
    if done is None or known is not None:
        for b, row in enumerate(rows):
            if single[b] is None:
                with torch.no_grad():
                    single[b] = state.call("backward, per sample", _manual, op, _side(state.p, batch, row),
                                           _side(state.d, batch, row), h, G[b])
        single = [[s[n] for n in names] for s in single]
    kept = [(i, o) for i, o in enumerate(vmapped) if o.requires_grad]
    state.result.phase = f"per-sample gradients through {fn.__name__} under torch.vmap"
    leaves = [stacked[j] for j in where]
    got = [None] * len(leaves) if not kept else _under_vmap(fn, lambda: torch.autograd.grad(   # none: a rule that
        [o for _, o in kept], leaves,                                            # detached its output
        grad_outputs=[torch.stack([G[b][i] for b in range(len(rows))]) for i, _ in kept], allow_unused=True),
        layout)
    got = [torch.zeros_like(x) if r is None else r for x, r in zip(leaves, got)]
    what = f"per-sample gradients, the backward through torch.vmap of {fn.__name__}"
    if not how:
        return _judge(state, names, single, got, what), (loop, single)
    what = f"{what}, {how}"
    moved = [r if layout.dim(j) is None else r.movedim(layout.dim(j), 0) for j, r in zip(where, got)]
    apart = [i for i, j in enumerate(where) if layout.dim(j) is not None]
    text = _judge(state, [names[i] for i in apart], [[s[i] for i in apart] for s in single],
                  [moved[i] for i in apart], what, ask)
    if text is not None:
        return text, None
    for i, j in enumerate(where):
        if layout.dim(j) is None:
            text = _judge_shared(state, names[i], [s[i] for s in single], moved[i], what, ask)
            if text is not None:
                return text, None
    return None, (loop, single)


def _own_rule(fn) -> bool:
    """The Function's vmap rule is its own staticmethod (not torch's ``generate_vmap_rule``)."""
    return not getattr(fn, "generate_vmap_rule", False)


def _side(names, batch, row) -> Tensors:
    """The member's tensors of one side of the case (its ``p`` or ``d``) from its argument row."""
    return Tensors((n, row[batch.index(n)]) for n in names)


def _forward_and_backward(op, P, D, h, gs):
    """The op's outputs (detached) and the manual gradients (autograd through it, as ``_manual``
    takes them), from one call; None where that path raises (the separate calls then decide)."""
    names = list(op.inputs)
    try:
        with torch.enable_grad():
            leaves = {n: P[n].detach().requires_grad_(True) for n in names}
            outs = _outputs(op.invoke(Tensors((n, leaves.get(n, P[n])) for n in P), D, h))
            pairs = [(o, g) for o, g in zip(outs, gs) if o.requires_grad]
            if len(outs) != len(gs):
                return None
            got = (torch.autograd.grad([o for o, _ in pairs], [leaves[n] for n in names],
                                       grad_outputs=[g for _, g in pairs], allow_unused=True)
                   if pairs else [None] * len(names))
    except Exception:
        return None
    grads = {n: torch.zeros_like(leaves[n]) if r is None else r.detach() for n, r in zip(names, got)}
    return tuple(o.detach() for o in outs), grads


def _manual(op, P, D, h, gs) -> dict[str, torch.Tensor]:
    return op.gradients(P, D, h, gs if len(gs) > 1 else gs[0])


def _under_vmap(fn, thunk, layout: _Layout):
    try:
        return thunk()
    except Exception as e:
        text = str(e)
        how = "" if layout.in_dims is None else layout.words()
        if any(s in text for s in _RULE_REJECTED):
            raise _Rejected(fn, e, how) from None
        if how and _own_rule(fn) and not isinstance(e, NotImplementedError) and _raised_in_rule(fn, e):
            raise _RuleRaised(fn, e, how) from None     # where dim 0 of every input ran: the rule's own error
        if how and isinstance(e, NotImplementedError) and _raised_in_rule(fn, e):
            first = (text.strip().splitlines() or [""])[0][:300]
            raise _Unsupported(f"{fn.__name__}'s vmap staticmethod raises NotImplementedError ({first}) under {how}: "
                               "the rule declines that layout itself, so it was not checked") from None
        who = f"torch.vmap with in_dims={layout.in_dims}" if how else "torch.vmap"
        raise _Unsupported(_unsupported(fn.__name__, who, e, f"{fn.__name__} under {who}")) from None


def _raised_in_rule(fn, e: BaseException) -> bool:
    """The exception came from inside the Function's own ``vmap`` staticmethod (torch's ops
    called there on the plain tensors it receives, or the rule's own code)."""
    code = getattr(getattr(fn, "vmap", None), "__code__", None)
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


class _Rejected(Exception):
    """Torch rejects what the Function's own vmap staticmethod returned: an error of its rule."""

    def __init__(self, fn, error: BaseException, how: str = ""):
        super().__init__(str(error))
        self.fn, self.error, self.how = fn, error, how


class _RuleRaised(Exception):
    """The Function's own vmap staticmethod raises under a layout other than dim 0 of every
    input (where it ran): it does not handle the in_dims torch passes it, an error of its rule."""

    def __init__(self, fn, error: BaseException, how: str):
        super().__init__(str(error))
        self.fn, self.error, self.how = fn, error, how


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
