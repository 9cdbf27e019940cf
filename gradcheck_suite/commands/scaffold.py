"""``gradcheck-suite init KIND NAME``: a starting model file of each kind that passes
the check as written, for the user to replace with their own code."""
from __future__ import annotations

import os
import re

KINDS = ("model", "function", "custom-op", "numpy")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

_MODEL = '''"""{name}: y = tanh(x @ w), loss = Σ y · t."""
import torch

from gradcheck_suite import Dim, Model


def forward(p, d):
    y = torch.tanh(d.x @ p.w)
    return (y * d.t).sum(), y                     # output, cache


def backward(p, d, y, g):                         # g: upstream gradient of the output
    gz = g * d.t * (1 - y * y)                    # d tanh(z) / dz = 1 - tanh(z)^2
    return {{"w": d.x.T @ gz, "x": gz @ p.w.T}}


model = Model(
    name="{name}",
    dims={{"N": Dim(low=1, high=16, bench=64), "I": Dim(low=1, high=16, bench=256),
          "O": Dim(low=1, high=16, bench=128)}},
    params={{"w": ("I", "O")}},
    data={{"x": ("N", "I"), "t": ("N", "O")}},
    grad_data=("x",),
    forward=forward,
    backward=backward,
)
'''

_FUNCTION = '''"""{name}: an autograd.Function for y = x · sigmoid(x), checked as it ships."""
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

_CUSTOM_OP = '''"""{name}: a torch.library custom op, y = x · sigmoid(w), with register_autograd."""
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

_NUMPY = '''"""{name}: a numpy affine layer in the course style, out = x @ w + b."""
import numpy as np
import torch

from gradcheck_suite import Dim, numpy_model


def affine_forward(x, w, b):
    out = x @ w + b
    return out, (x, w)


def affine_backward(dout, cache):
    x, w = cache
    return dout @ w.T, x.T @ dout, np.sum(dout, axis=0)


model = numpy_model(
    affine_forward,
    affine_backward,
    name="{name}",
    dims={{"N": Dim(low=1, high=16, bench=64), "D": Dim(low=1, high=16, bench=128),
          "M": Dim(low=1, high=16, bench=32)}},
    inputs={{"x": ("N", "D"), "w": ("D", "M"), "b": ("M",)}},
    reference=lambda x, w, b: x @ w + b,          # leave it out for a finite-difference-only check
)
'''

_TEMPLATES = {"model": _MODEL, "function": _FUNCTION, "custom-op": _CUSTOM_OP, "numpy": _NUMPY}


def render(kind: str, name: str) -> str:
    if kind not in _TEMPLATES:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    if not _NAME.match(name):
        raise ValueError(f"name {name!r} must be lower-case letters, digits and '_', starting with a letter")
    cls = "".join(part.capitalize() for part in name.split("_"))
    return _TEMPLATES[kind].format(name=name, cls=cls)


def write(kind: str, name: str, path: str | None = None) -> str:
    """Write the starting file (``NAME.py``, in ``path`` where that is a folder, or at
    ``path``); never over an existing file."""
    text = render(kind, name)
    path = path or f"{name}.py"
    if os.path.isdir(path) or path.endswith(os.sep):     # --out FOLDER: the file goes inside it
        os.makedirs(path, exist_ok=True)
        path = os.path.join(path, f"{name}.py")
    if os.path.exists(path):
        raise ValueError(f"{path} already exists; choose another NAME or --out")
    with open(path, "x") as f:
        f.write(text)
    return path
