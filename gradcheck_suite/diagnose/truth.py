"""Tracing the forward's steps: autograd's gradient of every tensor the forward computed, named
by the forward's own locals (or, for numpy forwards and Functions, by the reference's tensor
with the same values), and the test a backward's value passes against one of them."""
from __future__ import annotations

import torch

from ..check.case import Bound, Case
from ..record.spec import Tensors
from ..verdict import oracles, rules
from ..verdict.tolerance import bound as tolerance
from .trace import Tracer, float64_copy


class Truth(dict):
    """Name -> float64 gradient of that forward intermediate; ``lines``: where it was assigned
    (file, line); ``named``: every tensor the forward's own code named, with where (masks too)."""

    lines: dict[str, tuple[str, int]]
    named: dict[str, tuple[torch.Tensor, tuple[str, int]]]
    forward_values: dict[str, torch.Tensor]      # what the forward computed, named or not (float64)


class _Outputs(torch.overrides.TorchFunctionMode):
    """Every tensor an op of the reference computes, named or not."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.requires_grad:
            self.seen.append(out)
        return out


def _through_backward(loss: torch.Tensor, wanted: list[torch.Tensor]) -> list:
    """The gradients of ``loss`` for ``wanted`` (the forward's own tensors, the graph kept)
    taken with ``.backward()``, as training takes them, where ``torch.autograd.grad`` is
    refused (a reentrant checkpoint).  Every leaf among them is the harness's own copy."""
    for t in wanted:
        t.grad = None
        if not t.is_leaf:
            t.retain_grad()
    loss.backward(retain_graph=True)
    grads = [None if t.grad is None else t.grad.detach() for t in wanted]
    for t in wanted:
        t.grad = None
    return grads


def forward_gradients(model: Bound, p: Tensors, d: Tensors, g) -> Truth:
    """Every named tensor the (differentiated) forward computed, and autograd's gradient of
    ``<g, output>`` with respect to it; numpy forwards' and Functions' locals get the gradient
    of the tensor of the reference with the same values."""
    leaves, P, D = oracles.on_leaves(model, p, d)
    tracer = Tracer(keep_graph=True)
    ops = _Outputs()
    truth = Truth()
    truth.lines, truth.named = {}, {}
    with torch.enable_grad():
        with ops:
            out = tracer.run(oracles.differentiated, model, P, D)
        seen = {}
        for rec in tracer.records:
            t = rec.value
            if isinstance(t, torch.Tensor) and t.requires_grad and rec.name not in seen:
                seen[rec.name] = (t, (rec.file, rec.line))
        if not (isinstance(out, torch.Tensor) and out.requires_grad):
            return truth
        unnamed = [t for t in ops.seen if all(t is not v for v, _ in seen.values())]
        names = list(seen)
        wanted = [seen[n][0] for n in names] + unnamed
        try:
            grads = torch.autograd.grad((out * g).sum(), wanted, allow_unused=True, retain_graph=True)
        except RuntimeError as e:
            if not oracles.refuses_grad(e):
                raise
            grads = _through_backward((out * g).sum(), wanted)
    values = {}
    for n, gr in zip(names, grads):
        if gr is not None:
            truth[n] = gr.detach().to("cpu", torch.float64)
            truth.lines[n] = seen[n][1]
            values[n] = seen[n][0].detach().to("cpu", torch.float64)
    for i, (t, gr) in enumerate(zip(unnamed, grads[len(names):])):
        if gr is not None:
            truth[f"<op {i}>"] = gr.detach().to("cpu", torch.float64)
            values[f"<op {i}>"] = t.detach().to("cpu", torch.float64)
    truth["output"] = g.detach().to("cpu", torch.float64)
    truth.forward_values = values
    if model.reference is None:
        truth.named = {r.name: (float64_copy(r.value), (r.file, r.line)) for r in tracer.records}
    else:
        _names_from_forward(model, p, d, truth, values)
    return truth


def _names_from_forward(model: Bound, p: Tensors, d: Tensors, truth: Truth, values: dict) -> None:
    """The forward's own locals (numpy, or a Function's) named after the reference's tensor
    with the same values; every local it names kept in ``truth.named``."""
    tracer = Tracer(every_tensor=True)
    with torch.no_grad():
        tracer.run(model.forward, p, d)
    for rec in tracer.records:
        truth.named.setdefault(rec.name, (rec.value, (rec.file, rec.line)))
        if rec.name in truth or not rec.value.is_floating_point():
            continue
        for ref_name, v in values.items():
            if tuple(v.shape) == tuple(rec.value.shape) and torch.allclose(
                    rec.value, v, rtol=rules.FORWARD_SAME_RTOL, atol=rules.FORWARD_SAME_ATOL):
                truth[rec.name] = truth[ref_name]
                truth.lines[rec.name] = (rec.file, rec.line)
                break


def matches(value: torch.Tensor, want: torch.Tensor, case: Case, scalar_g: float | None) -> bool:
    """The same values within the dtype's tolerance, or up to the scalar upstream gradient
    (code that multiplies by g at the end)."""
    if tuple(value.shape) != tuple(want.shape):
        return False
    allowed = tolerance(want, case.dtype)
    if bool(((value - want).abs() <= allowed).all()):
        return True
    if scalar_g not in (None, 0.0):
        scaled = want / scalar_g
        return bool(((value - scaled).abs() <= tolerance(scaled, case.dtype)).all())
    return False
