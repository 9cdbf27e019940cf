"""The backward, called once on the case with a random upstream gradient ``g``; where
autograd differentiates the forward itself, autograd runs first through the forward's own
graph, before the backward can touch the cache."""
from __future__ import annotations

import torch

from ...verdict import oracles
from ..case import upstream
from ..state import CaseState


def run(state: CaseState) -> None:
    res, model = state.result, state.model
    state.g = upstream(state.out, state.case.seed)
    state.before["upstream gradient g"] = state.g.clone()
    if state.graph is not None:
        res.phase = state.autograd_phase
        try:
            state.early = oracles.vjp(state.graph, state.g, state.leaves)
        except Exception:
            pass          # autograd runs again in its place (stages.autograd), and reports what it raises
        state.graph = state.leaves = None
    with torch.no_grad():
        state.grads = state.call("backward", model.backward, state.p, state.d, state.cache, state.g)
