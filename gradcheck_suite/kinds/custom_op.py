"""A ``torch.library`` custom op with ``register_autograd``, as it ships: made a record by
:func:`~gradcheck_suite.op_model` (``kinds/op.py``); ``torch.library.opcheck`` also tests its
registration on each case: always with ``opcheck=True``, never with ``opcheck=False``, and by
default in the nightly profile only (``PROFILES`` in ``run/strategies.py``)."""
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


def registration_problem(call: Callable[..., Any], positional: tuple, keywords: dict,
                         required: bool = True) -> tuple[str | None, str | None]:
    """``torch.library.opcheck``'s verdict on the op's registration: ``(problem, note)``, each
    one line or None.  A problem names each of its tests that failed, with torch's own first
    line of the reason.  An op with no fake implementation at all (no ``register_fake``) fails
    test_faketensor and test_aot_dispatch_dynamic; it runs eagerly as it should, so where the
    record did not ask for opcheck itself (``required`` False: the nightly profile's default)
    that is a note, not an error."""
    import warnings

    import torch

    with warnings.catch_warnings():      # anomaly mode's "Error detected in ..." of a failing test
        warnings.simplefilter("ignore")
        try:
            results = torch.library.opcheck(call, positional, keywords, raise_exception=False)
        except Exception as e:  # opcheck's verdict on the user's registration, raised before its tests ran
            return f"torch.library.opcheck failed: {type(e).__name__}: {_first_line(e)}", None
    failed = [(name, result) for name, result in results.items() if result != "SUCCESS"]
    passed = [name for name, result in results.items() if result == "SUCCESS"]
    if not failed:
        return None, None
    if not required and all(_no_fake(result) for _, result in failed):
        return None, (f"torch.library.opcheck: the op has no fake implementation, so "
                      f"{' and '.join(name for name, _ in failed)} could not run (torch.compile, torch.export "
                      f"and fx tracing need one: register_fake); {', '.join(passed) or 'no test'} passed")
    reasons = "; ".join(f"{name} ({_reason(result)})" for name, result in failed)
    return (f"torch.library.opcheck failed: {reasons}" + (f"; {', '.join(passed)} passed" if passed else "")), None


def _no_fake(result: Any) -> bool:
    """A test that failed only because the op has no fake implementation."""
    return (type(result).__name__ == "UnsupportedOperatorException"
            or (isinstance(result, BaseException) and "no fake impl registered" in str(result)))


def _reason(result: Any) -> str:
    if isinstance(result, BaseException):
        return f"{type(result).__name__}: {_first_line(result)}"
    return str(result)


def _first_line(e: BaseException) -> str:
    """The first line of torch's reason (its tail points at a stack trace the line does not show)."""
    lines = str(getattr(e, "reason", None) or e).strip().splitlines()
    return (lines[0] if lines else "").removesuffix(" (scroll up for stack trace)")


KIND = Kind(name="custom op", template=TEMPLATE, factory="op.op_model", aliases=("custom-op",), holds=holds,
            called_directly=True, registration_check=registration_problem)
