"""FLOPs counted from the ops a model runs, for "% matmul" where a record gives no
``flops``, and to test the records that do.

Every aten op that runs under :class:`OpCounter` (a ``TorchDispatchMode``) is counted:

* matmuls, convolutions and attention by torch's own formulas
  (``torch.utils.flop_counter``, what ``FlopCounterMode`` uses): 2·m·k·n for a matmul;
* pointwise ops (aten's ``pointwise`` tag: add, mul, relu, comparisons, ...): one FLOP
  per output element;
* reductions (aten's ``reduction`` tag: sum, mean, max, ...): one per input element;
* the fused losses and activations that carry neither tag: one per element of their
  largest tensor, per elementary step (``mse_loss`` is a subtraction, a square and a sum);
* everything else (views, copies, fills, new tensors) is free, also where aten tags a
  copy as pointwise (``clone``, ``_to_copy``).

A custom op's body is hidden from the dispatcher behind its own name, and numpy code
never reaches it, so :func:`counted` counts autograd's forward and backward of the model's
plain-torch ``reference`` where it has one (the same function, the same work), and the
record's own forward and backward otherwise.
"""
from __future__ import annotations

from collections.abc import Mapping

#: Fused ops without the pointwise or reduction tag: elementary steps per element.
FUSED = {"mse_loss": 3, "mse_loss_backward": 2, "_softmax": 4, "_softmax_backward_data": 3,
         "_log_softmax": 4, "_log_softmax_backward_data": 3, "gelu": 8, "gelu_backward": 10,
         "native_layer_norm": 8, "native_layer_norm_backward": 12, "silu": 4, "silu_backward": 6,
         "softplus": 4, "softplus_backward": 4, "nll_loss_forward": 1, "nll_loss_backward": 1,
         "threshold_backward": 1, "binary_cross_entropy": 6, "binary_cross_entropy_backward": 6}


#: Copies and fills that aten may tag pointwise: they move data, they compute nothing.
FREE = frozenset({"clone", "copy", "copy_", "_to_copy", "alias", "detach", "lift_fresh", "lift_fresh_copy", "fill",
                  "fill_", "zero_", "zeros_like", "ones_like", "empty_like", "full_like", "new_zeros", "new_ones",
                  "new_empty", "new_full", "_unsafe_view", "contiguous"})


def op_flops(func, args, kwargs, out) -> int:
    """The FLOPs of one aten op call, by the rules above."""
    import torch
    from torch.utils._pytree import tree_leaves
    from torch.utils.flop_counter import flop_registry

    packet = func._overloadpacket
    if packet.__name__ in FREE:
        return 0
    if packet in flop_registry:
        return int(flop_registry[packet](*args, **kwargs, out_val=out))
    tensors_in = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    tensors_out = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
    if torch.Tag.pointwise in func.tags:
        return max((t.numel() for t in tensors_out), default=0)
    if torch.Tag.reduction in func.tags:
        return max((t.numel() for t in tensors_in), default=0)
    steps = FUSED.get(packet.__name__)
    if steps:
        return steps * max((t.numel() for t in tensors_in + tensors_out), default=0)
    return 0


class OpCounter:
    """``with OpCounter() as c: ...``; then ``c.total`` and ``c.by_op`` (op name -> FLOPs)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                flops = op_flops(func, args, kwargs, out)
                if flops:
                    name = func._overloadpacket.__name__
                    counter.by_op[name] = counter.by_op.get(name, 0) + flops
                return out

        self.by_op: dict[str, int] = {}
        self._mode = _Mode()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __enter__(self) -> OpCounter:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def counted(model, dims: Mapping[str, int], device: str = "cpu", dtype: str = "float32",
            seed: int = 0) -> tuple[int, int]:
    """(forward FLOPs, backward FLOPs) of ``model`` at ``dims``, counted from its ops."""
    import torch

    from ..verdict.oracles import differentiated
    from .setup import autograd_inputs, setup

    model, p, d, g = setup(model, dims, device, dtype, seed)
    if model.reference is not None or not model.held_as.plain_torch:
        P, D, inputs = autograd_inputs(model, p, d)
        with torch.enable_grad():
            with OpCounter() as fwd:
                out = differentiated(model, P, D)
            with OpCounter() as bwd:
                torch.autograd.grad(out, inputs, g, allow_unused=True)
        return fwd.total, bwd.total
    with torch.no_grad():
        with OpCounter() as fwd:
            _, cache = model.forward(p, d)
        with OpCounter() as bwd:
            model.backward(p, d, cache, g)
    return fwd.total, bwd.total
