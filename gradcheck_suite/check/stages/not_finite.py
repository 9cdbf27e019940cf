"""Elements where autograd itself is NaN or Inf (an overflow in float16, say): nothing can
judge them, so a case with any is set aside (``state.overflow``: finite differences then
judge only what they must, and the case is skipped where nothing else decides), and a note
says where."""
from __future__ import annotations

from ..state import CaseState


def run(state: CaseState) -> None:
    res, grads, ag = state.result, state.grads, state.ag
    for n in state.model.differentiable:
        if state.finite[n] is True:
            continue
        bad = ~state.finite[n]
        if bool(bad.any()):
            state.overflow = True
            where = [tuple(i) for i in bad.nonzero().tolist()[:3]]
            i = where[0]
            res.notes.append(
                f"{n}: autograd's gradient is not finite at {int(bad.sum())} of {bad.numel()} element(s), "
                f"e.g. at {', '.join(map(str, where))} (manual {float(grads[n][i])}, autograd {float(ag[n][i])}) "
                f"in {res.case.dtype}; the case is set aside")
