"""Sharded Functions checked on N ranks against the unsharded computation (issue 27).

The models are in ``tests/sharded_models.py`` (the ranks load them from there by name); one
pool of ranks per world size serves the whole module (``ranks`` below) and is closed at its
end, leaving no process.  World sizes 1, 2 and 3: 3 is the odd size where a chunk's
arithmetic first breaks.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.distributed.tensor import Partial, Replicate, Shard

from gradcheck_suite import Dim, SpecError, run_model, sharded_model
from gradcheck_suite.check import FAIL, PASS
from gradcheck_suite.check.case import Case
from gradcheck_suite.kinds import ranks as pool_module
from gradcheck_suite.kinds.sharding import index_of, shard_of
from gradcheck_suite.run.report import case_message

from . import sharded_models as sm
from .conftest import flat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def ranks():
    """One pool per world size for the module; none left running after it."""
    yield pool_module
    pids = pool_module.pids()
    pool_module.close_all()
    assert pool_module.pids() == []
    for pid in pids:
        assert not _alive(pid), f"rank process {pid} outlived close_all()"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _check(model, world_size: int, examples: int = 6):
    run = run_model(model, examples=examples, hyper={"world_size": world_size})
    text = flat(case_message(run.failure)) if run.failure is not None else ""
    return run, text


# -- right ones pass --------------------------------------------------------------------

@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("name", ["copy_allreduce", "copy_identity_replicated", "reduce_identity",
                                  "gather_reduce_scatter", "scatter_last", "column_linear", "row_linear",
                                  "row_linear_partial"])
def test_a_right_sharded_function_passes(name, world_size):
    run, text = _check(getattr(sm, name), world_size)
    assert run.verdict == PASS, text or run.problems
    assert run.world_sizes == {world_size}


def test_uneven_shards_pass_where_the_function_handles_them():
    run, text = _check(sm.scatter_last, 3, examples=10)
    assert run.verdict == PASS, text
    assert any(h % 3 for h in run.sizes["h"]), "no uneven size was drawn"


def test_the_world_size_is_drawn_from_the_records_world_sizes():
    run = run_model(sm.copy_allreduce, examples=8)
    assert run.verdict == PASS
    assert run.world_sizes <= {1, 2, 3, 4} and len(run.world_sizes) > 1


# -- wrong ones fail, naming the tensor, the rank and the mistake -------------------------

@pytest.mark.parametrize("world_size", [2, 3])
def test_an_identity_backward_under_partial_gradients_is_a_missing_all_reduce(world_size):
    run, text = _check(sm.copy_identity_partial, world_size)
    assert run.verdict == FAIL and run.failure.failing == ["x"]
    assert f"the gradient of x (rank 0 of {world_size}" in text
    assert "missing all-reduce" in text


@pytest.mark.parametrize("world_size", [1, 2])
def test_the_same_identity_backward_is_right_under_replicated_gradients(world_size):
    run, text = _check(sm.copy_identity_replicated, world_size)
    assert run.verdict == PASS, text


@pytest.mark.parametrize("world_size", [2, 3])
def test_an_all_reduce_of_a_replicated_gradient_is_the_world_size_times_too_large(world_size):
    run, text = _check(sm.copy_allreduce_replicated, world_size)
    assert run.verdict == FAIL and run.failure.failing == ["x"]
    assert f"is {world_size}× autograd's" in text and "summed over ranks" in text


def test_a_gradient_divided_by_the_world_size_is_named():
    run, text = _check(sm.reduce_averaged, 2)
    assert run.verdict == FAIL and run.failure.failing == ["x"]
    assert "is 1/2 of autograd's: divided by the world size" in text


def test_a_bug_that_needs_ranks_passes_on_one_rank():
    run, text = _check(sm.reduce_averaged, 1)
    assert run.verdict == PASS, text


def test_the_wrong_collective_leaving_the_next_ranks_chunk_is_named():
    run, text = _check(sm.gather_wrong_chunk, 3)
    assert run.verdict == FAIL and run.failure.failing == ["x"]
    assert "(rank 0 of 3, shard [0:" in text and "holds the part of rank 1" in text


def test_a_missing_all_reduce_in_a_column_parallel_linear_names_x():
    run, text = _check(sm.column_linear_no_reduce, 2)
    assert run.verdict == FAIL and run.failure.failing == ["x"]
    assert "missing all-reduce" in text


def test_a_weight_gradient_scaled_by_the_world_size_names_w_and_its_shard():
    run, text = _check(sm.column_linear_scaled_weight, 2)
    assert run.verdict == FAIL and run.failure.failing == ["w"]
    assert "the gradient of w (rank 0 of 2, shard [0:" in text and "is 2× autograd's" in text


def test_a_weight_gradient_from_another_ranks_columns_names_w_its_shard_and_that_rank():
    run, text = _check(sm.row_linear_wrong_half, 2)
    assert run.verdict == FAIL and run.failure.failing == ["w"], text
    assert "the gradient of w (rank 0 of 2, shard [:, 0:" in text and "holds the part of rank 1" in text


def test_uneven_shards_mishandled_fail_at_an_uneven_size_only():
    run, text = _check(sm.scatter_even_only, 3, examples=10)
    assert run.verdict == FAIL and run.failure.failing == ["x"], text
    assert run.failure.case.dims["h"] % 3, text
    even, text = _check(sm.scatter_even_only, 2, examples=4)
    assert all(h % 2 == 0 for h in even.sizes["h"]) or even.verdict == FAIL


def test_a_gather_along_the_wrong_dim_is_refused_by_torch_on_the_rank():
    run, text = _check(sm.scatter_wrong_dim, 2)
    assert run.verdict == "error"
    assert "rank 0 of 2" in text and "x: gradient shape" in text


@pytest.mark.parametrize("name, sharded", [("copy_reduces_view", False), ("gather_strided_buffer", True)])
def test_a_collective_on_a_non_contiguous_tensor_fails_in_a_training_layout(name, sharded):
    run, text = _check(getattr(sm, name), 2)
    assert run.verdict == "error", text
    assert "changes when the upstream gradient is a transposed view" in text
    # a sharded gradient's message names the rank whose shard holds the element
    assert ("the gradient of x (rank " in text and ", shard [" in text) if sharded else "the gradient of x changes" in text


# -- the record, the case and the command ---------------------------------------------------

def test_the_reproduce_command_carries_the_world_size():
    case = Case("m", {"n": 2}, "float64", "cpu", 1, 1.0, {"world_size": 3, "k": 2})
    assert "--world-size 3" in case.command() and "--hyper k=2" in case.command()
    assert "world size 3" in case.describe()


def test_shards_and_indices_follow_tensor_split():
    x = torch.arange(10.0).reshape(5, 2)
    parts = shard_of(x, Shard(0), 2)
    assert [tuple(p.shape) for p in parts] == [(3, 2), (2, 2)]
    assert index_of((5, 2), Shard(0), 2, 1) == (slice(3, 5), slice(0, 2))
    shares = shard_of(x, Partial(), 3)
    assert torch.allclose(sum(shares), x) and not torch.equal(shares[0], shares[1])
    assert torch.equal(torch.stack(shard_of(x, Partial(), 3)), torch.stack(shares))   # the same values split alike
    t = x.t().contiguous().t()
    assert shard_of(t, Shard(0), 2)[0].stride() == t.stride()   # a rank's shard keeps the layout


@pytest.mark.parametrize("field, kwargs, words", [
    ("inputs.x", dict(inputs={"x": (("n",), "shard")}), "placement"),
    ("inputs.x", dict(inputs={"x": (("n",), Shard(1))}), "Shard(1) names no dim of a tensor of 1 dims"),
    ("output", dict(output=None), "give a placement"),
    ("world_sizes", dict(world_sizes=(0, 2)), "whole numbers >= 1"),
    ("hyper.world_size", dict(hyper={"world_size": (2,)}), "the harness's own"),
    ("input_grads.y", dict(input_grads={"y": Replicate()}), "names no input"),
    ("group", dict(group=object()), "default group"),
])
def test_a_bad_sharded_record_says_which_field(field, kwargs, words):
    spec = dict(name="bad", dims={"n": Dim(1, 4, 4)}, inputs={"x": (("n",), Replicate())}, reference=lambda x: x,
                output=Replicate(), grad=Partial())
    with pytest.raises(SpecError) as e:
        sharded_model(sm.CopyAllReduce, **{**spec, **kwargs})
    assert e.value.field == field and words in str(e.value)


def test_the_pool_names_the_first_real_error_and_starts_again():
    pool = pool_module.pool(2)
    with pytest.raises(pool_module.RankError) as e:
        pool.run("tests.test_sharded:raise_on_rank_one", [None, None])
    assert str(e.value).startswith("rank 1 of 2 raised ValueError: rank one's own error")
    assert pool_module.pool(2).run("tests.test_sharded:world", [None, None]) == [(0, 2), (1, 2)]


def raise_on_rank_one(payload, rank, world_size):
    """A task: rank 1 raises before the collective, rank 0 waits in it (and would echo)."""
    import torch.distributed as dist
    if rank == 1:
        raise ValueError("rank one's own error")
    dist.all_reduce(torch.ones(2))


def world(payload, rank, world_size):
    import torch.distributed as dist
    return dist.get_rank(), dist.get_world_size()


def test_the_command_checks_a_sharded_record_with_a_world_size_column():
    out = subprocess.run([sys.executable, "-m", "gradcheck_suite", "check", "copy_allreduce", "copy_identity_partial",
                          "--models-from", os.path.join(ROOT, "tests", "sharded_models.py"), "--world-size", "2",
                          "--examples", "3", "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    head = out.stdout.splitlines()[1].split()
    assert head[:4] == ["model", "dtype", "dev", "ranks"]
    assert "--world-size 2" in flat(out.stdout) and "missing all-reduce" in flat(out.stdout)


PLUGIN_TEST = """
def test_backward(gradcheck_target):
    gradcheck_target.check()
"""


def test_the_pytest_fixture_checks_sharded_records_loaded_from_a_model_file(pytester):
    pytester.makepyfile(test_user_models=PLUGIN_TEST)
    (pytester.path / "parallel_ops.py").write_text(open(os.path.join(ROOT, "tests", "sharded_models.py")).read())
    result = pytester.runpytest_subprocess(
        "--gradcheck-models-from", "parallel_ops.py", "--gradcheck-models", "copy_allreduce,copy_identity_partial",
        "--gradcheck-device", "cpu", "--gradcheck-examples", "4")
    result.assert_outcomes(passed=1, failed=1)
    out = flat(result.stdout.str())
    assert "copy_identity_partial: fail — the gradient of x (rank 0 of" in out and "missing all-reduce" in out
    assert "--models-from parallel_ops.py" in out and "--world-size" in out


def test_a_rank_that_dies_is_named_with_its_crash_and_the_pool_starts_again():
    pool = pool_module.pool(2)
    with pytest.raises(pool_module.RankError) as e:
        pool.run("tests.test_sharded:crash_on_rank_one", [None, None])
    assert str(e.value).startswith("rank 1 of 2 died (Fatal Python error: Segmentation fault at test_sharded.py:"), \
        str(e.value)
    assert pool_module.pool(2).run("tests.test_sharded:world", [None, None]) == [(0, 2), (1, 2)]


def crash_on_rank_one(payload, rank, world_size):
    """A task: rank 1 dies of a segfault (as an extension's bug would) while rank 0 waits."""
    import ctypes
    import torch.distributed as dist
    if rank == 1:
        ctypes.string_at(0)
    dist.all_reduce(torch.ones(2))
