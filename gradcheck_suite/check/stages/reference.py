"""The forward against the record's reference: its value must match the reference's,
within the dtype's tolerance (each side's own rounding allowed outside float64); and the
reference, like the forward, must leave its inputs as they were.  A forward that differs
fails the case here."""
from __future__ import annotations

import math

import torch

from ...record.errors import Unsupported
from ...verdict import rules
from ...verdict.tolerance import TensorComparison, compare
from .. import messages
from ..case import describe, float64, layout_problem, split
from ..measure import changed
from ..result import FAIL
from ..state import CaseState, Stop


def run(state: CaseState) -> None:
    model, case, res, p, d, out = state.model, state.case, state.result, state.p, state.d, state.out
    with torch.no_grad():
        ref = state.call("reference", model.reference, p, d)
    text = messages.in_place("the reference", changed(state.before, p, d))
    if text:
        raise state.error(text)
    text = layout_problem(ref, "the reference's output", "return it dense (.to_dense()) to have it checked")
    if text:
        raise Unsupported(text)
    if not isinstance(ref, torch.Tensor) or ref.shape != out.shape:
        raise state.error(f"the reference returns {describe(ref)}, the forward {describe(out)}: they must match")
    p64, d64 = float64(p), float64(d)

    def in_float64(side) -> torch.Tensor | None:
        """One side's output in float64, or None where it fails there."""
        try:
            with torch.no_grad():
                return side()
        except Exception:
            return None

    def gap(value: torch.Tensor, value64: torch.Tensor | None) -> torch.Tensor | None:
        """One side's rounding: its distance from itself in float64."""
        if value64 is None:
            return None
        return (value.to(torch.float64) - value64.to(value.device, torch.float64)).abs()

    layout = model.layout or [tuple(out.shape)]
    labels = ["forward"] if model.layout is None else [f"forward[{k}]" for k in range(len(layout))]

    def compared(rounding: torch.Tensor | None) -> dict[str, TensorComparison]:
        parts = zip(labels, *(_parts(t, model.layout) for t in (out, ref, rounding)))
        return {label: compare(label, o, r, case.dtype, rnd) for label, o, r, rnd in parts
                if o is not None}     # a member that is not floating point is not compared

    if case.real_dtype != "float64":      # kept for finite differences (the forward's own precision)
        state.ref64 = in_float64(lambda: model.reference(p64, d64))
    rounding = None if case.real_dtype == "float64" else gap(ref, state.ref64)
    comps = compared(rounding)
    if case.real_dtype != "float64" and any(not c.ok for c in comps.values()):
        # the forward's own rounding too, only where the reference's alone is crossed (a
        # forward computing sinh as a difference of exps cancels far more than torch.sinh)
        own = gap(out, in_float64(lambda: model.forward(p64, d64)[0]))
        if own is not None:
            comps = compared(own if rounding is None else torch.maximum(rounding, own))
    bad = [c for c in comps.values() if not c.ok]
    if bad:
        res.tensors, res.failing, res.verdict = comps, [bad[0].name], FAIL
        res.summary = f"{bad[0].name} differs from the reference at {list(bad[0].worst[0].index)}"
        raise Stop()
    if case.real_dtype == "float64":
        state.forward_gap = forward_gap(out, ref)


def forward_gap(out: torch.Tensor, ref: torch.Tensor) -> float:
    """The float64 forward's largest distance from the float64 reference, where it is beyond
    float64's rounding (``rules.FORWARD_COARSE`` of the reference's largest element): a forward
    that computes inside in a lower precision; 0 otherwise.  Finite differences take it as
    the forward's noise floor (``stages.finite_differences``, which measures it itself in a
    case of another dtype, from the float64 forward it runs anyway)."""
    if not (out.is_floating_point() and ref.is_floating_point()) or out.is_complex() or ref.is_complex() \
            or out.numel() == 0:
        return 0.0
    with torch.no_grad():
        o, r = out.detach().to("cpu", torch.float64), ref.detach().to("cpu", torch.float64)
        top = float(r.abs().max())
        gap = float((o - r).abs().max())
    if not (math.isfinite(top) and math.isfinite(gap)) or gap <= rules.FORWARD_COARSE * top:
        return 0.0
    return gap


def _parts(t: torch.Tensor | None, layout) -> list:
    if t is None:
        return [None] * (len(layout) if layout else 1)
    return list(split(t, layout)) if layout else [t]
