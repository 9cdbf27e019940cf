"""A sharded Function (tensor-, sequence- or context-parallel), as it ships: its forward and
backward run on N ranks of a ``torch.distributed`` process group, and the assembled
gradient is checked against the unsharded computation.  Made a record by
:func:`~gradcheck_suite.sharded_model` (``kinds/sharding.py``); the ranks run in a pool of
processes (``kinds/ranks.py``).  See docs/sharded.md."""
from __future__ import annotations

from .base import Kind

#: the hyperparameter that holds a sharded case's world size: drawn from the record's
#: ``world_sizes``, given as ``--world-size N`` on the command line
WORLD_SIZE = "world_size"

TEMPLATE = '''"""{name}: a tensor-parallel copy, identity forward and all-reduce backward, on N ranks."""
import torch
import torch.distributed as dist
from torch.distributed.tensor import Partial, Replicate

from gradcheck_suite import Dim, sharded_model


class {cls}(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous()                        # a collective needs contiguous memory
        dist.all_reduce(g)                        # each rank holds its part of the gradient: sum them
        return g


model = sharded_model(
    {cls},
    name="{name}",
    dims={{"n": Dim(1, 6, 4), "h": Dim(1, 8, 8)}},
    inputs={{"x": (("n", "h"), Replicate())}},     # every rank holds the whole x
    reference=lambda x: x,                        # the unsharded computation: autograd runs on it
    output=Replicate(),                           # every rank's output is the whole output
    grad=Partial(),                               # each rank has its own loss: its part of the gradient
)
'''

KIND = Kind(name="sharded", template=TEMPLATE, factory="sharding.sharded_model", higher_orders=False)
