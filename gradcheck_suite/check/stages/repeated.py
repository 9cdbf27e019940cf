"""The backward called again on the same case (``backward_runs`` calls in all); the
further calls' gradients are judged later (:mod:`.repeatable`), against the bounds the
comparison with autograd makes."""
from __future__ import annotations

import torch

from ..state import CaseState


def run(state: CaseState) -> None:
    state.again = []
    for call in range(2, state.model.backward_runs + 1):
        times = "twice" if call == 2 else f"{call} times"
        with torch.no_grad():
            state.again.append(state.call(f"backward (called {times})", state.model.backward,
                                          state.p, state.d, state.cache, state.g))
