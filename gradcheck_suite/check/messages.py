"""The texts of a broken contract: what the forward and the backward must return, and what
they must leave as it was.  Each function returns the error's text, or None where the
contract holds; the stages raise it as the case's error."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from ..record.errors import Unsupported, shape_hint
from ..record.spec import Model, Tensors
from .case import as_tensor_hint, describe, layout_problem


def output_problem(returned) -> str | None:
    """The forward must return ``(output, cache)``, its output a floating-point tensor."""
    if not (isinstance(returned, tuple) and len(returned) == 2):
        return f"forward must return (output, cache), got {type(returned).__name__}"
    out = returned[0]
    text = layout_problem(out, "forward's output", "return it dense (.to_dense()) to have it checked")
    if text:
        raise Unsupported(text)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        return f"forward's output must be a floating-point tensor, got {describe(out)}" + as_tensor_hint(out, "the output")
    return None


def in_place(who: str, changed: list[str], op: bool = False) -> str | None:
    """``who`` (the forward, the backward, the reference) changed the inputs ``changed``;
    ``op``: the forward of a shipped op, which torch lets change an input it marks dirty."""
    if not changed:
        return None
    if op:
        names = ", ".join(n.split(".", 1)[-1] for n in changed)
        return (f"the op's forward changed its input {names} in place without ctx.mark_dirty({names}): autograd "
                "does not know, so a tensor saved from it or another use of it sees the changed values; mark it "
                "dirty, or change a .clone()")
    return (f"{who} changed its input {', '.join(changed)} in place: compute into a new tensor "
            "(w = p.w - ..., not p.w -= ...), or change a .clone()")


def gradients_problem(model: Model, p: Tensors, d: Tensors, grads) -> str | None:
    """The backward must return a dict with exactly one gradient for each differentiable
    tensor, each a tensor of that tensor's shape, dtype and device."""
    if not isinstance(grads, Mapping):
        return f"backward must return a dict of gradients, got {describe(grads)}"
    want = model.differentiable
    missing = [n for n in want if n not in grads]
    extra = [str(n) for n in grads if n not in want]
    if missing or extra:
        parts = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unexpected {', '.join(extra)}"] * bool(extra)
        return f"backward's gradients: {'; '.join(parts)} (expected exactly {', '.join(want)})"
    for n in want:
        x, gr = (p[n] if n in p else d[n]), grads[n]
        if not isinstance(gr, torch.Tensor):
            return f"{n}: gradient is {describe(gr)}, expected a tensor" + as_tensor_hint(gr, "it")
        text = layout_problem(gr, f"{n}: the gradient", "return it dense (.to_dense()) to have it checked; torch "
                              "takes a sparse gradient for a dense tensor, and an op_model record's is compared")
        if text:
            raise Unsupported(text)
        if gr.shape != x.shape:
            return (f"{n}: gradient shape {tuple(gr.shape)}, expected {tuple(x.shape)}"
                    + shape_hint(tuple(gr.shape), tuple(x.shape)))
        if gr.dtype != x.dtype:
            return (f"{n}: gradient dtype {str(gr.dtype).removeprefix('torch.')}, "
                    f"expected {str(x.dtype).removeprefix('torch.')}")
        if gr.device != x.device:
            return f"{n}: gradient on {gr.device}, expected {x.device}"
    return None


def manual_not_finite(name: str, bad: torch.Tensor) -> str:
    """The manual gradient of ``name`` is NaN or Inf at the elements ``bad``, where autograd is finite."""
    idx = [tuple(i) for i in bad.nonzero().tolist()[:3]]
    return (f"{name}: the manual gradient is NaN or Inf at {int(bad.sum())} element(s) where "
            f"autograd is finite, e.g. at {', '.join(map(str, idx))}")
