"""Sharded Functions for tests/test_sharded.py, each right or wrong in one way.

The records are defined at the top level of this module: the ranks load them from here by
name, as they load a user's model file.  Each wrong one holds one bug that parallel code
ships: a missing all-reduce, a gradient scaled by the world size, the wrong collective or
chunk, a split along the wrong dim, uneven shards mishandled, a non-contiguous tensor handed
to a collective.
"""
import torch
import torch.distributed as dist
from torch.distributed.tensor import Partial, Replicate, Shard

from gradcheck_suite import Dim, sharded_model

DIMS = {"n": Dim(1, 6, 4), "h": Dim(1, 8, 8)}


def _rank() -> tuple[int, int]:
    return dist.get_rank(), dist.get_world_size()


# -- copy to the tensor-parallel region: identity forward, all-reduce backward --------------

class CopyAllReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.clone()                   # a fresh contiguous buffer for the collective
        dist.all_reduce(g)
        return g


class CopyIdentity(torch.autograd.Function):
    """Megatron's copy region as it ships: right where every rank computes the same loss."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        return g


class CopyReducesViewOfG(torch.autograd.Function):
    """All-reduces ``g.contiguous()`` and returns ``g``: right only while g arrives contiguous."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        dist.all_reduce(g.contiguous())
        return g


def _copy(op, name, grad):
    return sharded_model(op, name=name, dims=DIMS, inputs={"x": (("n", "h"), Replicate())}, reference=lambda x: x,
                         output=Replicate(), grad=grad)


copy_allreduce = _copy(CopyAllReduce, "copy_allreduce", Partial())          # right
copy_identity_replicated = _copy(CopyIdentity, "copy_identity_replicated", Replicate())   # right (Megatron)
copy_identity_partial = _copy(CopyIdentity, "copy_identity_partial", Partial())   # wrong: a missing all-reduce
copy_allreduce_replicated = _copy(CopyAllReduce, "copy_allreduce_replicated", Replicate())   # wrong: W times
copy_reduces_view = _copy(CopyReducesViewOfG, "copy_reduces_view", Partial())    # wrong for a transposed g


# -- reduce from the region: all-reduce forward, identity backward --------------------------

class ReduceIdentity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, g):
        return g


class ReduceAveraged(torch.autograd.Function):
    """Divides the gradient by the world size, as if the forward had averaged."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, g):
        return g / dist.get_world_size()


def _reduce(op, name):
    return sharded_model(op, name=name, dims=DIMS, inputs={"x": (("n", "h"), Partial())}, reference=lambda x: x,
                         output=Replicate(), grad=Replicate(), input_grads={"x": Replicate()})


reduce_identity = _reduce(ReduceIdentity, "reduce_identity")     # right
reduce_averaged = _reduce(ReduceAveraged, "reduce_averaged")     # wrong: 1/W


# -- gather from the sequence-parallel region: all-gather forward, reduce-scatter backward ---

class GatherReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, g):
        rank, world = _rank()
        out = torch.empty(g.chunk(world, 0)[rank].shape, dtype=g.dtype)
        dist.reduce_scatter(out, [c.contiguous() for c in g.chunk(world, 0)])
        return out


class GatherIntoStridedBuffer(torch.autograd.Function):
    """Hands reduce_scatter an output buffer made by ``empty_like`` of a chunk of ``g``: it
    takes g's strides, and the collective writes it as if contiguous (a non-contiguous
    tensor handed to a collective)."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, g):
        rank, world = _rank()
        out = torch.empty_like(g.chunk(world, 0)[rank])
        dist.reduce_scatter(out, [c.contiguous() for c in g.chunk(world, 0)])
        return out


class GatherWrongChunk(torch.autograd.Function):
    """The wrong collective: all-gathers the upstream gradients and keeps a chunk, the
    next rank's, where a reduce-scatter belongs."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, g):
        rank, world = _rank()
        total = g.contiguous().clone()
        dist.all_reduce(total)
        return total.chunk(world, 0)[(rank + 1) % world].clone()


def _gather(op, name):
    return sharded_model(op, name=name, dims=DIMS, inputs={"x": (("n", "h"), Shard(0))},
                         reference=lambda x: x, output=Replicate(), grad=Partial())


gather_reduce_scatter = _gather(GatherReduceScatter, "gather_reduce_scatter")   # right
gather_wrong_chunk = _gather(GatherWrongChunk, "gather_wrong_chunk")            # wrong: the next rank's chunk
gather_strided_buffer = _gather(GatherIntoStridedBuffer, "gather_strided_buffer")   # wrong for a transposed g


# -- scatter to the region along the last dim: split forward, gather backward -----------------

def _place(g, full_shape, dim, uneven_ok=True):
    """Each rank's chunk of the gradient in a zero tensor of the full shape, summed over ranks:
    an all-gather that also takes uneven chunks (gloo's all_gather refuses them)."""
    rank, world = _rank()
    full = torch.zeros(full_shape, dtype=g.dtype)
    sizes = [len(c) for c in torch.tensor_split(torch.empty(full_shape[dim], 0), world)]
    start = sum(sizes[:rank]) if uneven_ok else rank * (full_shape[dim] // world)
    full.narrow(dim, start, g.shape[dim]).copy_(g)
    dist.all_reduce(full)
    return full


class ScatterLast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        rank, world = _rank()
        ctx.full = tuple(x.shape)
        return torch.tensor_split(x, world, -1)[rank].clone()

    @staticmethod
    def backward(ctx, g):
        return _place(g, ctx.full, len(ctx.full) - 1)


class ScatterLastEvenOnly(torch.autograd.Function):
    """Puts each chunk back at ``rank * (h // W)``: right only where W divides h."""

    @staticmethod
    def forward(ctx, x):
        rank, world = _rank()
        ctx.full = tuple(x.shape)
        return torch.tensor_split(x, world, -1)[rank].clone()

    @staticmethod
    def backward(ctx, g):
        return _place(g, ctx.full, len(ctx.full) - 1, uneven_ok=False)


class ScatterGatherWrongDim(torch.autograd.Function):
    """Gathers the gradient along dim 0 where the forward split dim -1."""

    @staticmethod
    def forward(ctx, x):
        rank, world = _rank()
        return x.chunk(world, -1)[rank].clone()

    @staticmethod
    def backward(ctx, g):
        parts = [torch.empty_like(g) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, g.contiguous())
        return torch.cat(parts, 0)


def _scatter(op, name, uneven=False):
    return sharded_model(op, name=name, dims=DIMS, inputs={"x": (("n", "h"), Replicate())},
                         reference=lambda x: x, output=Shard(-1), grad=Shard(-1), uneven=uneven)


scatter_last = _scatter(ScatterLast, "scatter_last", uneven=True)                       # right, uneven too
scatter_even_only = _scatter(ScatterLastEvenOnly, "scatter_even_only", uneven=True)      # wrong at uneven sizes
scatter_wrong_dim = _scatter(ScatterGatherWrongDim, "scatter_wrong_dim")                # wrong: the other dim


# -- a column-parallel linear: y = x @ w.T, w split by rows --------------------------------

class ColumnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x @ w.T

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = g @ w
        dist.all_reduce(gx)
        return gx, g.T @ x


class ColumnLinearNoReduce(torch.autograd.Function):
    """Forgets to all-reduce the input's gradient (torchtitan #1805's kind of bug)."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x @ w.T

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, g.T @ x


class ColumnLinearScaledWeight(torch.autograd.Function):
    """Scales the weight's gradient by the world size (torchtitan #2106's kind of bug)."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x @ w.T

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = g @ w
        dist.all_reduce(gx)
        return gx, dist.get_world_size() * (g.T @ x)


def _column(op, name):
    return sharded_model(op, name=name, dims={"n": Dim(1, 5, 4), "k": Dim(1, 6, 8), "m": Dim(1, 8, 8)},
                         inputs={"x": (("n", "k"), Replicate()), "w": (("m", "k"), Shard(0))},
                         reference=lambda x, w: x @ w.T, output=Shard(-1), grad=Shard(-1))


column_linear = _column(ColumnLinear, "column_linear")                                       # right
column_linear_no_reduce = _column(ColumnLinearNoReduce, "column_linear_no_reduce")           # wrong: x
column_linear_scaled_weight = _column(ColumnLinearScaledWeight, "column_linear_scaled_weight")   # wrong: w


# -- a row-parallel linear: y = x @ w.T, x split by columns, w by columns ---------------------

class RowLinear(torch.autograd.Function):
    """All-reduces its output in the forward (Megatron's row-parallel layer with its reduce)."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        y = x @ w.T
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, g.T @ x


class RowLinearPartial(torch.autograd.Function):
    """Leaves the sum to the next layer: its output is partial."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x @ w.T

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, g.T @ x


class RowLinearWrongHalf(torch.autograd.Function):
    """Takes the weight gradient's columns from the full input, at the next rank's offset."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        y = x @ w.T
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        rank, world = _rank()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return g @ w, g.T @ parts[(rank + 1) % world]


def _row(op, name, output):
    return sharded_model(op, name=name, dims={"n": Dim(1, 5, 4), "k": Dim(1, 8, 8), "m": Dim(1, 6, 8)},
                         inputs={"x": (("n", "k"), Shard(-1)), "w": (("m", "k"), Shard(1))},
                         reference=lambda x, w: x @ w.T, output=output, grad=Replicate())


row_linear = _row(RowLinear, "row_linear", Replicate())                          # right
row_linear_partial = _row(RowLinearPartial, "row_linear_partial", Partial())     # right: a partial output
row_linear_wrong_half = _row(RowLinearWrongHalf, "row_linear_wrong_half", Replicate())   # wrong: w, another offset
