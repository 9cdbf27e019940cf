"""Tensor-parallel Functions as Megatron-style code ships them, checked on N ranks.

    gradcheck-suite check --models-from examples/tensor_parallel.py

``copy_to_parallel``: identity forward, all-reduce backward (each rank has its own loss, so the
upstream gradient reaches the ranks in parts).  ``column_parallel_linear``: ``y = x @ w.T`` with
the rows of ``w`` split over the ranks, each rank computing its columns of ``y``; the input's
gradient is summed over the ranks.
"""
import torch
import torch.distributed as dist
from torch.distributed.tensor import Partial, Replicate, Shard

from gradcheck_suite import Dim, sharded_model


class CopyToParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous()              # collectives take contiguous memory (a copy where g is a view)
        dist.all_reduce(g)              # the default group: the check's ranks
        return g


copy_to_parallel = sharded_model(
    CopyToParallel,
    name="copy_to_parallel",
    dims={"n": Dim(1, 6, 4), "h": Dim(1, 8, 8)},
    inputs={"x": (("n", "h"), Replicate())},       # every rank holds the whole x
    reference=lambda x: x,                          # the unsharded computation
    output=Replicate(),                             # every rank's output is the whole output
    grad=Partial(),                                 # each rank holds a part of the upstream gradient
    doc="copy to the tensor-parallel region: identity forward, all-reduce backward",
)


class ColumnParallelLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x @ w.T                  # this rank's columns of y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = g @ w                      # this rank's part of x's gradient ...
        dist.all_reduce(gx)             # ... summed over the ranks
        return gx, g.T @ x              # w's gradient: this rank's rows


column_parallel_linear = sharded_model(
    ColumnParallelLinear,
    name="column_parallel_linear",
    dims={"n": Dim(1, 5, 64), "k": Dim(1, 6, 256), "m": Dim(1, 8, 512)},
    inputs={"x": (("n", "k"), Replicate()), "w": (("m", "k"), Shard(0))},
    reference=lambda x, w: x @ w.T,
    output=Shard(-1),                   # the ranks' outputs side by side make y
    grad=Shard(-1),                     # and y's gradient reaches each rank as its columns
    doc="a column-parallel linear layer: w split by rows, y by columns",
)
