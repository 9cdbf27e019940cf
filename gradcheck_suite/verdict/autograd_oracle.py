"""The autograd oracle: torch autograd's gradient of ``<g, f>`` for every differentiable
tensor, taken as training takes it where ``torch.autograd.grad`` is refused, with the output's
first-order rounding bound (:class:`Traced`); and a second implementation of the same oracle
with its fused ops decomposed (:func:`decomposed_autograd`)."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Mapping

import torch
from torch.overrides import TorchFunctionMode

from ..record.spec import Model, Tensors


def autograd(model: Model, p: Tensors, d: Tensors, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Autograd's gradient of ``<g, reference(p, d)>`` (or of the forward) for every differentiable tensor."""
    return traced_autograd(model, p, d, g).grads


@dataclasses.dataclass(frozen=True)
class Traced:
    """Autograd's gradients, and ``resolution``: the first-order rounding bound of
    ``<g, f>``, the sum over every value v the forward computed of |v| * |d<g, f>/dv|
    (each value rounds by about eps * |v|, and that moves the output by the gradient), and
    ``backward``: the largest gradient the backward passed through."""

    grads: dict[str, torch.Tensor]
    resolution: float
    backward: float = 0.0    # the largest |d<g, f>/dv| over the same values


def traced_autograd(model: Model, p: Tensors, d: Tensors, g: torch.Tensor, trace: bool = True) -> Traced:
    """:func:`autograd`, with the output's first-order rounding bound (see :class:`Traced`);
    without ``trace``, autograd alone (the bound left at 0), which skips a hook on every
    value the forward computes."""
    leaves, P, D = on_leaves(model, p, d)
    terms = _Terms()
    with torch.enable_grad():
        with terms if trace else contextlib.nullcontext():
            out = differentiated(model, P, D)
        try:
            grads = vjp(out, g, leaves)
        except RuntimeError as e:
            if not refuses_grad(e):
                raise
            # torch.autograd.grad is refused (a reentrant checkpoint): the graph is partly
            # consumed, so the forward runs again on fresh leaves and .backward() takes the
            # gradients, as training does
            del out
            leaves, P, D = on_leaves(model, p, d)
            terms = _Terms()
            with terms if trace else contextlib.nullcontext():
                out = differentiated(model, P, D)
            grads = vjp(out, g, leaves, through_backward=True)
    return Traced(grads, terms.total(), terms.largest())


def refuses_grad(e: BaseException) -> bool:
    """Whether ``e`` is torch refusing ``torch.autograd.grad`` itself where ``.backward()``
    works (a ``torch.utils.checkpoint(..., use_reentrant=True)`` region): a limit of how
    the harness takes gradients, never the model's fault."""
    return isinstance(e, RuntimeError) and "incompatible with .grad()" in str(e)


def backward_into(outs: list[torch.Tensor], grads_out: list[torch.Tensor],
                  leaves: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The gradients of ``sum <grads_out, outs>`` for each leaf, taken as training takes
    them: ``.backward()`` into the leaves' ``.grad`` (the leaves are the harness's own
    detached copies, so no tensor of the user's gets a ``.grad``; a tensor requiring grad
    that the code closes over accumulates one, as in training).  Zeros where a leaf gets none."""
    for x in leaves.values():
        x.grad = None
    with torch.enable_grad():
        torch.autograd.backward(outs, grad_tensors=grads_out)
    out = {n: torch.zeros_like(x) if x.grad is None else _dense(x.grad.detach()) for n, x in leaves.items()}
    for x in leaves.values():
        x.grad = None
    return out


def on_leaves(model: Model, p: Tensors, d: Tensors) -> tuple[dict[str, torch.Tensor], Tensors, Tensors]:
    """The differentiable tensors as leaves that require grad, and the case's tensors with
    them in place.  Detached, not copied: autograd.grad writes no .grad, and a forward that
    changes a leaf in place raises (the contract check catches one that changes its inputs)."""
    leaves = {n: (p[n] if n in p else d[n]).detach().requires_grad_(True) for n in model.differentiable}
    return (leaves, Tensors((n, leaves[n]) for n in p),
            Tensors((n, leaves[n] if n in leaves else t) for n, t in d.items()))


def vjp(out: object, g: torch.Tensor, leaves: Mapping[str, torch.Tensor],
        through_backward: bool = False) -> dict[str, torch.Tensor]:
    """The gradient of ``<g, out>`` for each leaf, ``out`` computed from them in grad mode
    (zeros where it does not depend on a leaf, or on none); ``through_backward``: taken
    with ``.backward()`` (:func:`backward_into`), where ``torch.autograd.grad`` is refused."""
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return {n: torch.zeros_like(x) for n, x in leaves.items()}
    if through_backward:
        with torch.enable_grad():
            return backward_into([weighted(out, g)], [torch.ones((), dtype=out.dtype, device=out.device)], leaves)
    with torch.enable_grad():
        grads = torch.autograd.grad(weighted(out, g), list(leaves.values()), allow_unused=True)
    return {n: (torch.zeros_like(leaves[n]) if gr is None else _dense(gr.detach())) for n, gr in zip(leaves, grads)}


def _dense(gr: torch.Tensor) -> torch.Tensor:
    """A sparse gradient of a dense tensor (autograd gives one through an op with a sparse
    operand) as the case compares it: densified, the same values."""
    return gr.to_dense() if gr.layout == torch.sparse_coo else gr


def weighted(out: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``<g, out>`` as a scalar, whose gradient is the vector-Jacobian product with ``g``
    (the product's backward multiplies by ``g`` exactly).  Torch's own ``grad_outputs``
    path imports its symbolic-shapes machinery on first use, a third of a second per
    process."""
    return (out * g).sum()


#: Ops that round nothing: each output element is one of their inputs' elements (a
#: selection, a view, a sign) or a constant they write (``masked_fill``, ``where``, ``pad``).
#: Their values are counted in the resolution where they were computed, or not at all: a
#: constant is exact.  Counting them again would count a mask's fill value, often
#: ``-finfo.max``, as a rounded value times the gradient that flows past it, and the
#: resolution (and the floor of every bound built from it) would be 1e24 or more.
EXACT = frozenset({"neg", "__neg__", "abs", "clamp", "clip", "relu", "clamp_min", "clamp_max", "cat", "concat",
                   "stack", "where", "masked_fill", "masked_fill_", "pad", "__getitem__", "index_select", "gather",
                   "take_along_dim", "narrow", "select", "max", "min", "amax", "amin", "maximum", "minimum", "sort",
                   "topk", "chunk", "split", "unbind", "flatten", "unflatten", "reshape", "view", "view_as",
                   "transpose", "swapaxes", "permute", "t", "expand", "expand_as", "contiguous", "clone", "squeeze",
                   "unsqueeze", "repeat", "movedim", "roll", "flip", "tril", "triu", "diagonal"})


class _Terms(TorchFunctionMode):
    """Hooks every value the forward computes, so that the backward adds |v| * |dv| for it."""

    def __init__(self) -> None:
        super().__init__()
        self.sums: list[torch.Tensor] = []
        self.tops: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in EXACT:     # nothing rounded: its values are counted where made
            return out
        for t in tensors_in((out,)):
            if t.requires_grad and t.grad_fn is not None and (t.is_floating_point() or t.is_complex()):
                try:
                    t.register_hook(functools.partial(self._add, t.detach()))
                except RuntimeError:   # a view that cannot take a hook: its base's counts
                    pass
        return out

    def _add(self, value: torch.Tensor, grad: torch.Tensor | None) -> None:
        if grad is None or not grad.numel():   # None: an output the loss never used (chunk, max(dim))
            return
        if grad.layout != torch.strided or value.layout != torch.strided:   # a sparse value (an op's masked input)
            grad, value = grad.to_dense(), value.to_dense()
        size, value = grad.detach().abs().reshape(-1), value.abs().reshape(-1)
        if size.dtype != torch.float64:
            size, value = size.double(), value.double()
        self.sums.append(torch.dot(value, size))      # summed on the device, read once
        self.tops.append(size.max())

    def largest(self) -> float:
        """The largest finite gradient of a value (0 where none is finite)."""
        return float(torch.stack(self.tops).nan_to_num(0.0, 0.0, 0.0).max()) if self.tops else 0.0

    def total(self) -> float:
        """The sum of the terms; 0 where it is not finite (an overflow says nothing of rounding)."""
        value = float(torch.stack(self.sums).sum()) if self.sums else 0.0
        return value if math.isfinite(value) else 0.0



def differentiated(model: Model, p: Tensors, d: Tensors) -> torch.Tensor:
    """The output autograd differentiates: the model's plain-torch ``reference`` where it
    has one (its forward may be a custom op or numpy), else its forward's output."""
    if model.reference is not None:
        return model.reference(p, d)
    return model.forward(p, d)[0]


def _fused_ops() -> list:
    aten = torch.ops.aten
    names = ("native_layer_norm", "native_group_norm", "native_batch_norm", "_native_batch_norm_legit",
             "_native_batch_norm_legit_no_training", "_softmax", "_log_softmax", "gelu", "silu", "mish",
             "logsumexp", "binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss",
             "smooth_l1_loss", "huber_loss", "_scaled_dot_product_attention_math", "cross_entropy_loss",
             "nll_loss_forward", "log_sigmoid_forward", "softplus", "hardswish", "elu", "glu")
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


def decomposed_autograd(model: Model, p: Tensors, d: Tensors, g: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Autograd of the same oracle with its fused ops (layer norm, softmax, GELU, the
    losses, ...) decomposed into the elementary ops they are made of: a second
    implementation of the same function, whose distance from the first measures the
    rounding hidden inside the fused kernels (``F.layer_norm`` at a normalised size of 1
    amplifies it by 1/sqrt(eps)).  None where the oracle cannot be traced."""
    try:
        from torch._decomp import get_decompositions
        from torch.fx.experimental.proxy_tensor import make_fx

        names = list(model.differentiable)

        def loss(*xs):
            at = dict(zip(names, xs))
            P = Tensors((n, at.get(n, t)) for n, t in p.items())
            D = Tensors((n, at.get(n, t)) for n, t in d.items())
            return (differentiated(model, P, D) * g).sum()

        start = [(p[n] if n in p else d[n]).detach() for n in names]
        graph = make_fx(loss, decomposition_table=get_decompositions(_fused_ops()))(*start)
        xs = [t.clone().requires_grad_(True) for t in start]
        with torch.enable_grad():
            grads = torch.autograd.grad(graph(*xs), xs, allow_unused=True)
    except Exception:       # not traceable (data-dependent Python, numpy, ...): no second implementation
        return None
    return {n: torch.zeros_like(x) if gr is None else gr.detach() for n, x, gr in zip(names, xs, grads)}


def tensors_in(*groups):
    """The tensors among an op's arguments or results (inside lists and tuples too)."""
    for group in groups:
        for x in group:
            if isinstance(x, torch.Tensor):
                yield x
            elif isinstance(x, (list, tuple)):
                yield from tensors_in(x)
