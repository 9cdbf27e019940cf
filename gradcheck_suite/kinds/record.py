"""A plain record: the user writes :class:`~gradcheck_suite.Model` with a forward and a
hand-written backward in torch; autograd through the forward is the oracle."""
from __future__ import annotations

from .base import Kind

TEMPLATE = '''"""{name}: y = tanh(x @ w), loss = Σ y · t."""
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

KIND = Kind(name="model", template=TEMPLATE, plain_torch=True)
