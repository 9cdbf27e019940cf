"""What a training run's steps amount to: the per-step watch (non-finite losses, autograd's own
blow-up, the manual run's parting) and, at the end, the verdict and its one-line message.

Verdicts: ``same``; ``manual diverges`` (parts at step s); ``both diverge`` (autograd's own
loss becomes non-finite or grows ``rules.TRAIN_BLOWUP`` times its start: the learning rate or
the model, not the gradient); ``error`` (a loss that does not fit the dtype from the start).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from ..verdict import rules
from .result import BOTH, ERROR, MANUAL, SAME, TrainResult
from .runs import Run


def watch(result: TrainResult, runs: Mapping[str, Run], step: int, start_loss: float | None) -> None:
    """Non-finite losses, autograd's blow-up, and the manual run's parting, at this step."""
    for key in ("manual", "autograd"):
        value = runs[key].losses[-1]
        if value is not None and not math.isfinite(value) and result.nonfinite_at[key] is None:
            result.nonfinite_at[key] = step
    if result.diverged_at is None:
        for key in ("autograd", "float64"):
            value = runs[key].losses[-1] if key in runs else None
            if value is not None and (not math.isfinite(value) or (
                    start_loss is not None
                    and abs(value) > rules.TRAIN_BLOWUP * max(abs(start_loss), rules.TRAIN_TINY))):
                result.diverged_at = step
                break
    if result.parted_at is None:
        manual, auto = runs["manual"].losses[-1], runs["autograd"].losses[-1]
        distance = result.distance[-1]
        if manual is not None and not math.isfinite(manual) and auto is not None and math.isfinite(auto):
            result.parted_at = step
        elif distance is not None and distance > result.envelope[-1]:
            result.parted_at = step


def decide(result: TrainResult) -> None:
    """The run's verdict and message, from what :func:`watch` recorded over its steps."""
    m, a = result.losses["manual"], result.losses["autograd"]

    def loss(values: list, step: int) -> str:
        v = values[step - 1] if step - 1 < len(values) else None
        return "not run" if v is None else f"{v:.6g}"

    first, ref = a[0] if a else None, result.losses["float64"][0] if result.losses["float64"] else None
    if a and (first is None or not math.isfinite(first)) and ref is not None and math.isfinite(ref):
        result.verdict = ERROR
        result.message = (f"{result.name}: the loss is {first} in {result.dtype} from the start, where float64 gives "
                          f"{ref:.6g}: it does not fit {result.dtype} here; train in a wider dtype, at a smaller "
                          "--scale or at smaller --dims")
        return
    if result.diverged_at is not None:
        t = result.diverged_at
        result.verdict = BOTH
        result.message = (f"{result.name}: the learning rate or the model, not your gradient: autograd diverges too "
                          f"at step {t} (loss {loss(a, t)}, from {loss(a, 1)} at step 1); lower --lr to compare "
                          "the gradients")
        if result.parted_at is not None and result.parted_at < t:
            result.notes.append(f"the manual run had parted from autograd at step {result.parted_at}, before "
                                "autograd diverged: train again with a lower learning rate to tell a wrong "
                                "gradient from an unstable one")
        return
    if result.parted_at is not None:
        s = result.parted_at
        result.verdict = MANUAL
        distance, last = result.distance[s - 1], max((i + 1 for i, v in enumerate(m) if v is not None), default=s)
        if distance is None:
            how = f"its loss is {loss(m, s)} where autograd's is {loss(a, s)}"
        else:
            how = (f"the runs are {distance:.2g} apart (relative), where two correct gradients drift at most "
                   f"{result.envelope[s - 1] / rules.TRAIN_MARGIN:.2g} by then; loss {loss(m, s)} against "
                   f"autograd's {loss(a, s)}")
            if last > s:
                how += f"; at step {last}, loss {loss(m, last)} against {loss(a, last)}"
        result.message = f"{result.name}: the manual gradient trains differently from autograd from step {s}: {how}"
        return
    result.verdict = SAME
    done = len(m)
    result.message = (f"{result.name}: trains like autograd for {done} steps; final loss {loss(m, done)} "
                      f"against autograd's {loss(a, done)}")
