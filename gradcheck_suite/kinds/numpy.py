"""Course-style numpy layers, ``layer_forward(*arrays) -> (out, cache)`` and
``layer_backward(dout, cache) -> gradients``: made a record by
:func:`~gradcheck_suite.numpy_model` (``kinds/layers.py``).  With a torch ``reference`` the
verdict is three-way; without one, finite differences alone."""
from __future__ import annotations

from .base import Kind

TEMPLATE = '''"""{name}: a numpy affine layer in the course style, out = x @ w + b."""
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

KIND = Kind(name="numpy", template=TEMPLATE, factory="layers.numpy_model", numpy_arrays=True, higher_orders=False,
            repeat_hint="; a layer object that accumulates gradients? zero them in the record's backward, "
                        "before each call")
