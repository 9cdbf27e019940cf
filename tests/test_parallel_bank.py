"""The parallel bank's brute-force label check (benchmarks/parallel_bank/verify.py) on Functions of our own:
real gloo ranks, each rank's shard of the same float64 values, the assembled gradient against float64 autograd
of the unsharded reference.  A correct Function holds at every world size; each wrong one is caught at the world
sizes where its bug shows, and not at W=1 where a collective is the identity."""
import os
import sys

import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor import Partial, Replicate, Shard

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from parallel_bank._entry import Dim, ParallelEntry, sharded_model  # noqa: E402
from parallel_bank import verify  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


class CopyRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(g)
        return g


class CopyRegionNoReduce(CopyRegion):
    @staticmethod
    def backward(ctx, g):
        return g


class CopyRegionReducesACopy(CopyRegion):
    @staticmethod
    def backward(ctx, g):
        dist.all_reduce(g.contiguous())        # right only while g arrives contiguous
        return g


class CopyRegionScaled(CopyRegion):
    @staticmethod
    def backward(ctx, g):
        return CopyRegion.backward(ctx, g) * dist.get_world_size()     # a gradient W times too large


class SplitRows(torch.autograd.Function):
    """Keep this rank's rows; the backward gathers them back."""

    @staticmethod
    def forward(ctx, x):
        return x.chunk(dist.get_world_size(), 0)[dist.get_rank()].clone()

    @staticmethod
    def backward(ctx, g):
        parts = [torch.empty_like(g, memory_format=torch.contiguous_format) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, g.contiguous())
        return torch.cat(parts, 0)


class SplitRowsOffByOne(SplitRows):
    @staticmethod
    def forward(ctx, x):
        return x.chunk(dist.get_world_size(), 0)[dist.get_rank() - 1].clone()   # the neighbour's rows


D = {"n": Dim(1, 6, 4), "h": Dim(1, 5, 3)}


def _copy(op, name):
    return sharded_model(op, name=name, dims=D, inputs={"x": (("n", "h"), Replicate())}, reference=lambda x: x,
                         output=Replicate(), grad=Partial())


def _bank() -> list[ParallelEntry]:
    split = dict(dims=D, inputs={"x": (("n", "h"), Replicate())}, reference=lambda x: x, output=Shard(0),
                 grad=Shard(0))
    return [
        ParallelEntry("copy", "ours", "correct", "all-reduce of a contiguous copy, returned", _copy(CopyRegion, "copy")),
        ParallelEntry("copy_no_reduce", "ours", "wrong", "no all-reduce", _copy(CopyRegionNoReduce, "nr"),
                      bug_world_sizes=(2,)),
        ParallelEntry("copy_reduces_a_copy", "ours", "wrong", "returns g, not the reduced copy",
                      _copy(CopyRegionReducesACopy, "rc"), bug_world_sizes=(2,)),
        ParallelEntry("copy_scaled", "ours", "wrong", "W times too large", _copy(CopyRegionScaled, "sc"),
                      bug_world_sizes=(2,)),
        ParallelEntry("split", "ours", "correct", "split rows, gather back", sharded_model(SplitRows, name="s", **split)),
        ParallelEntry("split_off_by_one", "ours", "wrong", "the neighbour's rows",
                      sharded_model(SplitRowsOffByOne, name="s1", **split), bug_world_sizes=(2,)),
    ]


@pytest.fixture(scope="module")
def verdicts():
    bank = _bank()
    return bank, verify.check_bank(bank, worlds=(1, 2), log=lambda line: None, source=(__name__, "_bank"))


def test_each_label_holds_at_world_sizes_1_and_2(verdicts):
    bank, found = verdicts
    for entry in bank:
        holds, wrong_at = verify.label_holds(entry, found[entry.code])
        assert holds, (entry.code, wrong_at, found[entry.code])


def test_a_wrong_gradient_is_named_with_its_case(verdicts):
    _, found = verdicts
    assert found["copy_no_reduce"][1] == []
    first = found["copy_no_reduce"][2][0]
    assert "W=2" in first and "gradient of x" in first


def test_a_scaled_gradient_says_by_how_much(verdicts):
    _, found = verdicts
    assert "2x the reference" in found["copy_scaled"][2][0]


def test_the_reduced_copy_bug_shows_only_with_a_transposed_upstream_gradient(verdicts):
    _, found = verdicts
    problems = found["copy_reduces_a_copy"][2]
    assert problems and all("g transposed" in p for p in problems)


def test_shards_follow_the_placements():
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    parts = verify._distribute(t, Partial(), 3, gen, False)
    assert torch.allclose(sum(parts), t)
    assert [p.shape[1] for p in verify._distribute(t, Shard(1), 3, gen, True)] == [1, 1, 1]
    assert [p.shape[0] for p in verify._distribute(torch.zeros(5, 2), Shard(0), 3, gen, True)] == [2, 2, 1]
    for dims in verify.dims_draws(_copy(CopyRegion, "copy"), 3):
        assert all(v % 3 == 0 for v in dims.values())


def test_a_label_that_disagrees_with_the_brute_force_does_not_hold():
    entry = ParallelEntry("x", "ours", "wrong", "", _copy(CopyRegionNoReduce, "nr"), bug_world_sizes=(2, 3))
    assert verify.label_holds(entry, {1: [], 2: ["wrong"], 3: []}) == (False, (2,))
    assert verify.label_holds(entry, {1: [], 2: ["wrong"], 3: ["wrong"]}) == (True, (2, 3))
    correct = ParallelEntry("y", "ours", "correct", "", _copy(CopyRegion, "c"))
    assert verify.label_holds(correct, {1: [], 2: ["wrong"]}) == (False, (2,))


class RaisesOnRankOne(torch.autograd.Function):
    """Rank 1 raises before the all-reduce that rank 0 waits in."""

    @staticmethod
    def forward(ctx, x):
        if dist.get_rank() == 1:
            raise ValueError("rank 1 refuses")
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g):
        return g


def _bank_with_a_raising_rank() -> list[ParallelEntry]:
    raising = sharded_model(RaisesOnRankOne, name="r", dims=D, inputs={"x": (("n", "h"), Partial())},
                            reference=lambda x: x, output=Replicate(), grad=Replicate(), input_grads={"x": Replicate()},
                            world_sizes=(2,))
    return [ParallelEntry("raises_on_rank_one", "ours", "wrong", "rank 1 raises", raising, bug_world_sizes=(2,)),
            ParallelEntry("copy_after", "ours", "correct", "", _copy(CopyRegion, "copy"))]


def test_a_rank_that_raises_alone_ends_its_entry_and_the_next_entry_is_judged_on_fresh_ranks():
    bank = _bank_with_a_raising_rank()
    found = verify.check_bank(bank, worlds=(2,), log=lambda line: None, source=(__name__, "_bank_with_a_raising_rank"),
                              timeout_s=5.0)
    assert found["raises_on_rank_one"][2] and "raised" in found["raises_on_rank_one"][2][0]
    assert found["copy_after"][2] == []
