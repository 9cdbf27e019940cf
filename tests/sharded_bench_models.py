"""Sharded Functions for tests/test_bench_sharded.py, all correct, at world size 2.

The ranks load the records from here by name, so they are defined at the top level.  Two
compute locally (the reference on a rank's shards is that rank's computation, so autograd
has a side to time); one gathers in its forward, where autograd has none.
"""
import torch
import torch.distributed as dist
from torch.distributed.tensor import Partial, Replicate, Shard

from gradcheck_suite import Dim, sharded_model

DIMS = {"n": Dim(2, 6, 4), "h": Dim(1, 6, 6)}


class DoubleCopy(torch.autograd.Function):
    """2·x on every rank; each rank has its own loss, so the backward sums the ranks' parts."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        g = 2 * g                       # a fresh buffer: the collective writes into it
        dist.all_reduce(g)
        return g


double_copy = sharded_model(DoubleCopy, name="bench_double_copy", dims=DIMS, inputs={"x": (("n", "h"), Replicate())},
                            reference=lambda x: 2 * x, output=Replicate(), grad=Partial(), world_sizes=(2,))


class RowScale(torch.autograd.Function):
    """x (rows split over the ranks) times a replicated row w: w's gradient sums over the rows of every rank."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gw = (g * x).sum(0)
        dist.all_reduce(gw)
        return g * w, gw


row_scale = sharded_model(RowScale, name="bench_row_scale", dims=DIMS,
                          inputs={"x": (("n", "h"), Shard(0)), "w": (("h",), Replicate())},
                          reference=lambda x, w: x * w, output=Shard(0), grad=Shard(0), world_sizes=(2,))


class GatherRows(torch.autograd.Function):
    """Every rank's rows gathered on every rank (the forward is a collective); the backward
    keeps this rank's rows of the replicated gradient."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, g):
        r = dist.get_rank()
        return g[r * ctx.rows:(r + 1) * ctx.rows].clone()


gather_rows = sharded_model(GatherRows, name="bench_gather_rows", dims=DIMS, inputs={"x": (("n", "h"), Shard(0))},
                            reference=lambda x: x, output=Replicate(), grad=Replicate(), world_sizes=(2,))
