"""A ``torch.library`` custom op with ``register_autograd``, as it ships: made a record by
:func:`~gradcheck_suite.op_model` (``kinds/op.py``); ``opcheck=True`` also tests its
registration with ``torch.library.opcheck`` on each case."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Kind

TEMPLATE = '''"""{name}: a torch.library custom op, y = x · sigmoid(w), with register_autograd."""
import torch

from gradcheck_suite import Dim, op_model


@torch.library.custom_op("{name}_ops::{name}", mutates_args=())
def {name}(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(w)


def _setup_context(ctx, inputs, output):
    x, w = inputs
    ctx.save_for_backward(x, torch.sigmoid(w))


def _backward(ctx, g):
    x, s = ctx.saved_tensors
    gx = g * s if ctx.needs_input_grad[0] else None
    gw = g * x * s * (1 - s) if ctx.needs_input_grad[1] else None
    return gx, gw


{name}.register_autograd(_backward, setup_context=_setup_context)

model = op_model(
    {name},
    name="{name}",
    dims={{"N": Dim(low=1, high=16, bench=256), "F": Dim(low=1, high=16, bench=256)}},
    inputs={{"x": ("N", "F"), "w": ("F",)}},
    reference=lambda x, w: x * torch.sigmoid(w),
)
'''

#: the types of a torch.library op, by name (torch need not be imported to ask)
LIBRARY_OP_TYPES = ("CustomOpDef", "OpOverload", "OpOverloadPacket")


def holds(op: Any) -> bool:
    """A ``torch.library`` op: a ``custom_op`` definition or an ``OpOverload``(``Packet``)."""
    return type(op).__name__ in LIBRARY_OP_TYPES


def registration_problem(call: Callable[..., Any], positional: tuple, keywords: dict) -> str | None:
    """``torch.library.opcheck``'s verdict on the op's registration, in one line, or None."""
    import torch

    try:
        torch.library.opcheck(call, positional, keywords)
    except Exception as e:  # opcheck's verdict on the user's registration
        return f"torch.library.opcheck failed: {str(e).strip().splitlines()[0]}"
    return None


KIND = Kind(name="custom op", template=TEMPLATE, factory="op.op_model", aliases=("custom-op",), holds=holds,
            called_directly=True, registration_check=registration_problem)
