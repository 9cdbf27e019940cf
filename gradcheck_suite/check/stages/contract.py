"""The backward's contract (:mod:`..messages`): one gradient per differentiable tensor, of
its shape, dtype and device; for a shipped op also ctx hygiene and ``needs_input_grad``,
with the op's own ctx; and every input, ``g`` included, left as it was."""
from __future__ import annotations

from .. import messages
from ..measure import changed
from ..state import CaseState


def run(state: CaseState) -> None:
    model, p, d = state.model, state.p, state.d
    text = messages.gradients_problem(model, p, d, state.grads)
    if text:
        raise state.error(text)
    if model.op is not None:
        _op_contract(state)
    text = messages.in_place("backward", changed(state.before, p, d, state.g))
    if text:
        raise state.error(text)
    state.before = None     # copies of every input: not read again


def _op_contract(state: CaseState) -> None:
    """For a shipped op: ctx hygiene and needs_input_grad, with the op's own ctx."""
    model, res = state.model, state.result
    text, notes, frozen = state.call("backward (called with its ctx)", model.op.contract_problem,
                                     model.user(state.p), model.user(state.d), model.h, model.upstream(state.g))
    if text and not frozen:
        raise state.error(text)
    # a frozen-input finding is judged after the values: gradients returned in swapped slots also
    # give "no gradient for b when a needs none", and a backward that is not deterministic
    # "another gradient"; the failure of the values, or the repeated call, names those first
    # (result.settle_deferred)
    res.deferred = text or None
    res.notes.extend(notes)
