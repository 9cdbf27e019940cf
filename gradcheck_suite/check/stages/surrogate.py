"""A surrogate gradient (``surrogate=True``): the reference defines the gradient, so
finite differences do not apply; the reference's autograd alone judges, every element,
with the computation floor."""
from __future__ import annotations

from ..floor import with_floor
from ..result import FAIL, by_comparison
from ..state import CaseState


def run(state: CaseState) -> None:
    res = state.result
    with_floor(state)
    res.notes.append("surrogate gradient: checked against the reference's autograd alone, every element "
                     "(finite differences of the forward would give its true derivative)")
    decision = by_comparison(res)
    res.failing = decision.failing
    if decision.verdict == FAIL:
        res.verdict = FAIL
