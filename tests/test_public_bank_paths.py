"""The paths bank (``benchmarks/public_bank.py --paths``): its brute-force label check catches a
wrong jvp, a wrong vmap rule, a None branch that is wrong, an in-place Function without
mark_dirty, a wrong register_fake and a missing conjugate, and passes their correct twins; the
runner gives gradcheck the path's flags, runs opcheck on custom ops only, and counts a row
under every path it names.  The entries are our own small Functions (the bank's entries are
other people's code, kept out of the repository)."""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
import torch

from gradcheck_suite import Dim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.public_bank._entry import op_entry  # noqa: E402
from benchmarks.public_bank.verify import check_label  # noqa: E402


def _runner():
    spec = importlib.util.spec_from_file_location("public_bank_runner", os.path.join(ROOT, "benchmarks", "public_bank.py"))
    module = sys.modules.get("public_bank_runner")
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["public_bank_runner"] = module          # its dataclasses look their module up
        spec.loader.exec_module(module)
    return module


EW = dict(dims={"M": Dim(1, 3, 3), "N": Dim(1, 4, 4)}, inputs={"x": ("M", "N")})


# --- forward mode -------------------------------------------------------------------------------

class Square(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g

    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return 2 * x * t


class SquareJvpSign(Square):
    @staticmethod
    def jvp(ctx, t):
        (x,) = ctx.saved_tensors
        return -2 * x * t


def test_a_jvp_with_a_wrong_sign_is_caught_in_forward_mode_and_its_correct_twin_holds():
    right = op_entry(Square, name="square", expected="correct", reason="", source="ours", paths=("jvp",),
                     reference=lambda x: x * x, **EW)
    wrong = op_entry(SquareJvpSign, name="square_jvp_sign", expected="wrong", reason="", source="ours",
                     paths=("jvp",), reference=lambda x: x * x, **EW)
    assert check_label(right).holds and not check_label(right).mismatches
    found = check_label(wrong)
    assert found.holds and all("[jvp]" in m for m in found.mismatches)        # the backward is right
    flags = _runner().gradcheck_flags(right)
    assert flags == {"check_forward_ad": True}


# --- vmap rules ---------------------------------------------------------------------------------

class Double(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return torch.tensor(x.detach().cpu().numpy() * 2)       # numpy: vmap needs the rule below

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return 2 * g

    @staticmethod
    def vmap(info, in_dims, x):
        return x * 2, in_dims[0]


class DoubleOutDims(Double):
    @staticmethod
    def vmap(info, in_dims, x):
        return x * 2, -1          # wrong out_dims for a batch in front


def test_a_vmap_rule_with_the_wrong_out_dims_is_caught_against_a_loop_of_single_calls():
    right = op_entry(Double, name="double", expected="correct", reason="", source="ours", paths=("vmap",),
                     reference=lambda x: 2 * x, **EW)
    wrong = op_entry(DoubleOutDims, name="double_out_dims", expected="wrong", reason="", source="ours",
                     paths=("vmap",), reference=lambda x: 2 * x, **EW)
    assert not check_label(right).mismatches
    found = check_label(wrong)
    assert found.holds and all("[vmap]" in m for m in found.mismatches)
    assert _runner().gradcheck_flags(right) == {"check_batched_grad": True}


# --- set_materialize_grads(False) ---------------------------------------------------------------

class Pair(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.set_materialize_grads(False)
        return x * 2, x * 3

    @staticmethod
    def backward(ctx, g1, g2):
        out = 0
        if g1 is not None:
            out = out + 2 * g1
        if g2 is not None:
            out = out + 3 * g2
        return out


class PairNoneBranch(Pair):
    @staticmethod
    def backward(ctx, g1, g2):
        first = 0 if g1 is None else 2 * g1
        if g2 is None:
            return first + 3           # wrong value when output 1 is unused
        return first + 3 * g2


def test_a_none_branch_that_returns_the_wrong_thing_is_caught_with_that_output_unused():
    reference = lambda x: (x * 2, x * 3)  # noqa: E731
    right = op_entry(Pair, name="pair", expected="correct", reason="", source="ours",
                     paths=("materialize_grads",), reference=reference, **EW)
    wrong = op_entry(PairNoneBranch, name="pair_none", expected="wrong", reason="", source="ours",
                     paths=("materialize_grads",), reference=reference, **EW)
    assert not check_label(right).mismatches
    found = check_label(wrong)
    assert found.holds and all("[output 1 unused]" in m for m in found.mismatches)


# --- mark_dirty ---------------------------------------------------------------------------------

class AddOne(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x.numpy().__iadd__(1)      # numpy writes into x: autograd learns of it only by the mark
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx, g):
        return g


class AddOneUnmarked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        np.add(x.numpy(), 1, out=x.numpy())
        return x

    @staticmethod
    def backward(ctx, g):
        return g


def test_an_in_place_function_without_its_mark_is_caught_where_another_op_saved_the_input():
    right = op_entry(AddOne, name="add_one", expected="correct", reason="", source="ours", paths=("mark_dirty",),
                     reference=lambda x: x + 1, **EW)
    wrong = op_entry(AddOneUnmarked, name="add_one_unmarked", expected="wrong", reason="", source="ours",
                     paths=("mark_dirty",), reference=lambda x: x + 1, **EW)
    assert not check_label(right).mismatches       # torch refusing the saved input is its safety, not wrong
    found = check_label(wrong)
    assert found.holds and all("[dirty saved]" in m and "w (saved the input)" in m for m in found.mismatches)


# --- register_fake ------------------------------------------------------------------------------

@torch.library.custom_op("test_bank_paths::scale", mutates_args=())
def scale(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x * y


@scale.register_fake
def _(x, y):
    return torch.empty(torch.broadcast_shapes(x.shape, y.shape), dtype=x.dtype)


@torch.library.custom_op("test_bank_paths::scale_fake_shape", mutates_args=())
def scale_fake_shape(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x * y


@scale_fake_shape.register_fake
def _(x, y):
    return torch.empty_like(x)                      # ignores the broadcast


def _scale_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _scale_backward(ctx, g):
    x, y = ctx.saved_tensors
    return (g * y).sum_to_size(x.shape), (g * x).sum_to_size(y.shape)


scale.register_autograd(_scale_backward, setup_context=_scale_setup)
scale_fake_shape.register_autograd(_scale_backward, setup_context=_scale_setup)
BROADCAST = dict(dims={"M": Dim(1, 3, 3), "N": Dim(1, 4, 4)}, inputs={"x": ("N",), "y": ("M", "N")},
                 reference=lambda x, y: x * y)


def test_a_wrong_register_fake_is_wrong_by_opcheck_and_the_opcheck_column_runs_on_custom_ops_only():
    right = op_entry(scale, name="scale", expected="correct", reason="", source="ours",
                     paths=("custom_op_fake",), **BROADCAST)
    wrong = op_entry(scale_fake_shape, name="scale_fake_shape", expected="wrong", reason="", source="ours",
                     paths=("custom_op_fake",), **BROADCAST)
    assert not check_label(right).mismatches
    found = check_label(wrong)
    assert found.holds and all("[opcheck]" in m and "test_faketensor" in m for m in found.mismatches)
    runner = _runner()
    assert runner.run_opcheck(right)[0] == "pass"
    verdict, detail, _ = runner.run_opcheck(wrong)
    assert verdict == "fail" and "test_faketensor" in detail
    function = op_entry(Square, name="square", expected="correct", reason="", source="ours", paths=("jvp",),
                        reference=lambda x: x * x, **EW)
    assert runner.run_opcheck(function)[0] == "n/a"


# --- complex ------------------------------------------------------------------------------------

class CMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x * y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return g * y.conj(), g * x.conj()


class CMulNoConj(CMul):
    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return g * y, g * x.conj()


def _complex(dims, gen, dtype, scale):
    return torch.randn((dims["M"], dims["N"]), generator=gen, dtype=torch.complex128)


def test_a_missing_conjugate_is_caught_against_complex_autograd_and_its_twin_holds():
    spec = dict(dims={"M": Dim(1, 3, 3), "N": Dim(1, 4, 4)}, inputs={"x": ("M", "N"), "y": ("M", "N")},
                factories={"x": _complex, "y": _complex}, reference=lambda x, y: x * y)
    right = op_entry(CMul, name="cmul", expected="correct", reason="", source="ours", paths=("complex",), **spec)
    wrong = op_entry(CMulNoConj, name="cmul_no_conj", expected="wrong", reason="", source="ours",
                     paths=("complex",), **spec)
    assert not check_label(right).mismatches
    found = check_label(wrong)
    assert found.holds and any("x differs" in m for m in found.mismatches)


# --- the runner ---------------------------------------------------------------------------------

def test_the_totals_count_a_row_under_every_path_it_names_and_once_under_all():
    runner = _runner()
    rows = [runner.Row("a", "function", "correct", "", "", harness="pass", gradcheck="fail", paths=("jvp", "vmap")),
            runner.Row("b", "function", "wrong", "", "", harness="fail", gradcheck="pass", paths=("vmap",))]
    text = runner.paths_totals(rows)
    assert "| jvp | correct | 1 | 1/1 | 0/1 | n/a |" in text
    assert "| vmap | both | 2 | 2/2 | 0/2 | n/a |" in text
    assert "| all | both | 2 | 2/2 | 0/2 | n/a |" in text


def test_an_unknown_path_is_refused_where_the_entry_is_made():
    with pytest.raises(ValueError, match="unknown path jvpp"):
        op_entry(Square, name="square", expected="correct", reason="", source="ours", paths=("jvpp",),
                 reference=lambda x: x * x, **EW)
