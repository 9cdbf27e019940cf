"""The driver: the case run again, the mistake of each failing tensor judged at the case and
at the record's benchmark size, and the first wrong line of the backward."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import torch

from ..check.case import Bound, Case, upstream
from ..record.spec import Model
from ..verdict import oracles
from ..verdict.tolerance import bound as tolerance
from .locate import locate
from .mistake import classify
from .result import Diagnosis, Mistake


def diagnose(model: Model, case: Case, failing: list[str], bounds: Mapping[str, torch.Tensor],
             deadline: float | None = None) -> Diagnosis | None:
    """The mistake of each failing tensor and the first wrong line, for the case that
    failed; None where the case cannot be rebuilt (its failure was not a gradient's).

    ``deadline`` (``time.perf_counter()``): the mistake at the case and the line come first;
    the mistake at the benchmark size is left out once it has passed (said in ``cut``), and
    no further axis permutation is tried."""
    names = [n for n in failing if n in model.differentiable]
    if not names:
        return None
    bound_model, p, d, cache, g, manual, auto = _run(model, case)
    here = {n: classify(n, bound_model, case, p, d, cache, g, manual, auto, bounds, deadline) for n in names}
    try:
        location, note = locate(bound_model, case, p, d, g, manual, auto, names)
    except Exception as e:   # tracing someone else's code: say so, never guess
        location, note = None, f"could not trace the backward ({type(e).__name__}: {e})"
    del p, d, cache, g, manual, auto      # the larger case's tensors take their place
    larger_mistakes, judged_at = {}, {}
    cut = None
    larger = _larger(model, case)
    if larger and deadline is not None and time.perf_counter() > deadline:
        cut = ("the mistake was judged at this case only, not at the benchmark size too: the diagnosis's time "
               "budget was spent")
        larger = []
    # the mistake at the benchmark size too: at the shrunk case's size 1, any wrong value is a
    # "factor" of the right one; a relation must hold for a whole tensor of some size
    for at in larger:
        try:
            b, p, d, cache, g, manual, auto = _run(model, at)
        except Exception:
            continue
        for n in names:
            if n not in larger_mistakes and not _agrees(manual[n], auto[n], at):
                larger_mistakes[n] = classify(n, b, at, p, d, cache, g, manual, auto, {}, deadline)
                judged_at[n] = at
    found = []
    for n in names:
        mistake, big = here[n], larger_mistakes.get(n)
        if big is not None and (mistake.mistake != big.mistake or mistake.same_as != big.same_as):
            if big.mistake == "scale":
                big = Mistake(n, "other", None, "no simple relation to autograd's gradient at every size (other)")
            else:        # its figures (counts, rows, elements) are that size's, not this case's: say so
                dims = dict(judged_at[n].dims)
                big = dataclasses.replace(big, dims=dims, text=f"at {_sizes(dims)}, larger than this case: {big.text}")
            mistake = big
        found.append(mistake)
    return Diagnosis(found, location, note, cut)


def _sizes(dims: Mapping[str, int]) -> str:
    """``N=64, D=512``: the size a figure belongs to."""
    return ", ".join(f"{k}={v}" for k, v in dims.items())


def _larger(model: Model, case: Case) -> list[Case]:
    """The failing case at the record's benchmark sizes, where those fit and differ."""
    dims = {k: max(v, model.dims[k].bench) for k, v in case.dims.items()}
    if dims == dict(case.dims) or model.allows({**dims, **case.hyper}) is not None:
        return []
    return [dataclasses.replace(case, dims=dims)]


def _run(model: Model, case: Case):
    """The case built again: the bound model, its tensors, the cache, g, and both gradients."""
    b = Bound(model, case)
    p, d = b.build(case)
    with torch.no_grad():
        out, cache = b.forward(p, d)
    g = upstream(out, case.seed)
    with torch.no_grad():
        manual = b.backward(p, d, cache, g)
    return b, p, d, cache, g, manual, oracles.autograd(b, p, d, g)


def _agrees(m: torch.Tensor, a: torch.Tensor, case: Case) -> bool:
    """The manual gradient within tolerance of autograd's everywhere (it does not fail here)."""
    m64, a64 = m.detach().to("cpu", torch.float64), a.detach().to("cpu", torch.float64)
    return m64.shape == a64.shape and bool(((m64 - a64).abs() <= tolerance(a64, case.dtype)).all())
