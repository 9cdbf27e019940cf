"""Cases the parallel bank (benchmarks/parallel_bank.py) showed, with models of our own.

A collective that reduces a contiguous copy of a tensor and returns the tensor itself
(``dist.all_reduce(t.contiguous()); return t``) is right while ``t`` arrives contiguous and
wrong when it arrives as a view: the reduced copy is dropped and each rank keeps its own part.
Where ``t`` is the op's input (or the gradient that autograd lays out as the input is laid
out), the harness shows it when the input arrives as a transposed view, and names the cause.
The same op that reduces the contiguous tensor it returns passes at every world size.

The records are at the top level of this module: the ranks load them from here by name.
"""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor import Partial, Replicate, Shard

from gradcheck_suite import Dim, run_model, sharded_model
from gradcheck_suite.check import FAIL, PASS
from gradcheck_suite.kinds import ranks as pool_module
from gradcheck_suite.run.report import case_message

from .conftest import flat


class SumRanksDropsCopy(torch.autograd.Function):
    """All-reduce forward (the ranks' parts summed), identity backward; the forward reduces
    a contiguous copy of x and returns x itself."""

    @staticmethod
    def forward(ctx, x):
        dist.all_reduce(x.contiguous())
        return x

    @staticmethod
    def backward(ctx, g):
        return g


class SumRanks(torch.autograd.Function):
    """The same, reducing the tensor it returns."""

    @staticmethod
    def forward(ctx, x):
        y = x.contiguous().clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g):
        return g


class CopyDropsCopy(torch.autograd.Function):
    """Identity forward, all-reduce backward of a contiguous copy of g, returning g."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        dist.all_reduce(g.contiguous())
        return g


class Copy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous().clone()
        dist.all_reduce(g)
        return g


class OffByOneOnOtherRanks(torch.autograd.Function):
    """Identity on a column shard; the backward of every rank but 0 subtracts 1 at its first
    element (a mask forgotten on the ranks that do not hold a target)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        if dist.get_rank() > 0:
            g[0, 0] -= 1.0
        return g


off_by_one_on_other_ranks = sharded_model(
    OffByOneOnOtherRanks, name="off_by_one_on_other_ranks", dims={"n": Dim(1, 4, 4), "h": Dim(2, 8, 8)},
    inputs={"x": (("n", "h"), Shard(1))}, reference=lambda x: x.clone(), output=Shard(1), grad=Shard(1))


def _sum_ranks(op, name):
    return sharded_model(op, name=name, dims={"n": Dim(1, 4, 4), "h": Dim(1, 6, 6)},
                         inputs={"x": (("n", "h"), Partial())}, reference=lambda x: x, output=Replicate(),
                         grad=Replicate(), input_grads={"x": Replicate()})


def _column(copy, name):
    # x @ w_r.T on each rank after the copy: the gradient that reaches the copy's backward is
    # laid out as x is (autograd's matmul backward keeps the input's layout)
    return sharded_model(lambda x, w: copy.apply(x) @ w.T, name=name,
                         dims={"n": Dim(1, 4, 4), "i": Dim(2, 6, 6), "o": Dim(1, 6, 6)},
                         inputs={"x": (("n", "i"), Replicate()), "w": (("o", "i"), Shard(0))},
                         reference=lambda x, w: x @ w.T, output=Shard(1), grad=Shard(1))


sum_ranks_drops_copy = _sum_ranks(SumRanksDropsCopy, "sum_ranks_drops_copy")
sum_ranks = _sum_ranks(SumRanks, "sum_ranks")
column_drops_copy = _column(CopyDropsCopy, "column_drops_copy")
column = _column(Copy, "column")


@pytest.fixture(scope="module", autouse=True)
def ranks():
    yield pool_module
    pool_module.close_all()
    assert pool_module.pids() == []


def _check(model, world_size: int, examples: int = 6):
    run = run_model(model, examples=examples, hyper={"world_size": world_size})
    return run, flat(case_message(run.failure)) if run.failure is not None else ""


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("model", [sum_ranks, column], ids=lambda m: m.name)
def test_a_collective_on_the_tensor_it_returns_passes(model, world_size):
    run, text = _check(model, world_size)
    assert run.verdict == PASS, text or run.problems


@pytest.mark.parametrize("world_size", [2, 3])
def test_a_reduced_copy_of_an_input_view_is_flagged_with_its_cause(world_size):
    run, text = _check(sum_ranks_drops_copy, world_size)
    assert run.verdict in ("error", FAIL), text
    assert "when x is a transposed view" in text, text
    assert "t.contiguous() reduced while t itself is returned (t: x" in text, text


def test_the_same_op_passes_on_one_rank():
    run, text = _check(sum_ranks_drops_copy, 1)
    assert run.verdict == PASS, text


@pytest.mark.parametrize("world_size", [2, 3])
def test_a_reduced_copy_of_a_gradient_laid_out_as_the_input_is_flagged(world_size):
    run, text = _check(column_drops_copy, world_size)
    assert run.verdict in ("error", FAIL), text
    assert run.failure.failing == ["x"] or "the gradient of x" in text, text
    assert "a transposed view" in text and "t.contiguous() reduced while t itself is returned" in text \
        or "g.contiguous() reduced while g itself is returned" in text, text


def test_a_wrong_element_on_one_rank_is_named_in_the_unsharded_tensors_coordinates():
    run, text = _check(off_by_one_on_other_ranks, 2)
    assert run.verdict == FAIL and run.failure.failing == ["x"], text
    h0 = (run.failure.case.dims["h"] + 1) // 2          # rank 0's columns
    assert "the gradient of x (rank 1 of 2, shard [:, " in text, text
    assert f"1 of {run.failure.case.dims['n'] * (run.failure.case.dims['h'] - h0)} elements, the worst at [0, {h0}]" \
        in text, text
