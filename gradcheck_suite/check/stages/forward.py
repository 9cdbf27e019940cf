"""The case's tensors and the forward: it must return ``(output, cache)`` with a
floating-point output, leave its inputs as they were, and be finite here (else the case is
skipped: a domain matter)."""
from __future__ import annotations

import torch

from ...record.errors import RunNote
from ...verdict import oracles
from ...verdict.tolerance import all_finite
from .. import messages
from ..measure import changed, snapshot
from ..result import SKIPPED
from ..state import CaseState, Stop


def run(state: CaseState) -> None:
    res, case = state.result, state.case
    state.p, state.d = state.call("the tensor factory", state.model.build, case)   # complex: real views
    sparse = getattr(state.model.h, "sparse", None)
    if sparse and state.model.double_backward:
        res.notes.append(RunNote(f"double backward is not checked with a sparse COO input ({', '.join(sparse)}): "
                                 "the harness does not differentiate twice through the rebuilt sparse tensor",
                                 key="sparse double backward"))
    state.before = snapshot(state.p, state.d)
    returned = _forward(state)
    text = messages.output_problem(returned)
    if text:
        raise state.error(text)
    state.out, state.cache = returned
    text = messages.in_place("forward", changed(state.before, state.p, state.d), op=state.model.op is not None)
    if text:
        raise state.error(text)
    if not all_finite(state.out):
        res.verdict = SKIPPED
        res.notes.append(f"the forward's output is not finite at scale {case.scale!r}; nothing to compare")
        raise Stop()


def _forward(state: CaseState):
    """The forward's call, and its leaves and output as autograd's graph where autograd
    differentiates the forward itself (no reference, not a two-way check): one call in grad
    mode then serves both the manual gradient and autograd, its output and the cache the
    backward gets detached.  The call runs plainly, under no_grad, where the forward raises
    in grad mode (it changes a leaf in place, say: the contract check then says so); and
    for the backward's cache where that is more than tensors and plain values in tuples,
    lists and dicts (the graph still serves autograd)."""
    model, p, d = state.model, state.p, state.d
    if model.reference is None and not model.two_way:
        state.leaves, P, D = oracles.on_leaves(model, p, d)
        state.result.phase = "forward"
        try:
            with torch.enable_grad():
                returned = model.forward(P, D)
        except Exception:
            returned = None
        if isinstance(returned, tuple) and len(returned) == 2 and isinstance(returned[0], torch.Tensor):
            state.graph = returned[0]
            try:
                return returned[0].detach(), _detached(returned[1])
            except _NotPlain:
                pass
    with torch.no_grad():
        return state.call("forward", model.forward, p, d)


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
