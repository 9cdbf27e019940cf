"""An ``autograd.Function`` as it ships (or any callable with a hand-written autograd
formula inside, such as a lambda around ``Fn.apply``): made a record by
:func:`~gradcheck_suite.op_model` (``kinds/op.py``)."""
from __future__ import annotations

from typing import Any

from .base import Kind

TEMPLATE = '''"""{name}: an autograd.Function for y = x · sigmoid(x), checked as it ships."""
import torch

from gradcheck_suite import Dim, op_model


class {cls}(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)                      # from x, in torch ops: so the backward has a backward
        return g * s * (1 + x * (1 - s))


model = op_model(
    {cls},
    name="{name}",
    dims={{"N": Dim(low=1, high=64, bench=4096)}},
    inputs={{"x": ("N",)}},
    reference=lambda x: x * torch.sigmoid(x),     # plain torch: the autograd oracle
    double_backward=True,
)
'''


def holds(op: Any) -> bool:
    """An ``autograd.Function`` subclass, or any other callable (a wrapper)."""
    import torch

    return (isinstance(op, type) and issubclass(op, torch.autograd.Function)) or callable(op)


KIND = Kind(name="function", template=TEMPLATE, factory="op.op_model", holds=holds, fallback=True)
