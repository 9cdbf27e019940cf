"""Sparse tensors: the harness checks dense (strided) tensors, and sparse COO inputs of an
op_model record (tests/test_sparse_masked.py); any other sparse tensor, wherever it reaches
a check (a plain record's factory or make_tensors, the forward's or the reference's output,
a gradient a plain record's backward returns), sets the case aside (SKIPPED: torch accepts
it, so it is not the user's error) with one line that names the tensor and what is
supported, never an internal error."""
import textwrap

import pytest
import torch

from gradcheck_suite import PASS, SKIPPED, Case, Dim, Model, check_case, op_model, run_model
from tests.test_cli import gcs

DIMS = {"N": Dim(1, 4, 4), "F": Dim(1, 4, 4)}
SET_ASIDE = ("is a sparse COO tensor, which the harness does not check here (the case is set aside): it checks dense "
             "(strided) tensors, and sparse COO inputs of op_model records; ")
INPUT_LINE = SET_ASIDE + "densify it there (.to_dense()), or hold the op with op_model"


def _values(dims, gen, dtype, scale):
    x = torch.randn(dims["N"], dims["F"], generator=gen, dtype=dtype) * scale
    return x * (torch.rand(dims["N"], dims["F"], generator=gen) < 0.5)


def _sparse(dims, gen, dtype, scale):
    return _values(dims, gen, dtype, scale).to_sparse()


def _double(p, d):
    return 2 * p["x"], None


def _double_back(p, d, cache, g):
    return {"x": 2 * g}


def _record(name, **fields):
    fields = {"forward": _double, "backward": _double_back, **fields}
    return Model(name=name, dims=DIMS, params={"x": ("N", "F")}, **fields)


class Double(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return 2 * g


class DoubleSparseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return (2 * g).to_sparse()


def _case(m, n=3, f=2):
    return Case(m.name, {"N": n, "F": f}, m.dtype, "cpu", 1, 1.0)


def _one_line_skip(res, start):
    assert res.verdict == SKIPPED, (res.verdict, res.problems)
    assert not res.internal and not res.problems, res.problems
    assert res.notes[0].startswith(start), res.notes[0]
    assert "\n" not in res.notes[0]
    assert "SparseCPU" not in res.notes[0]


@pytest.mark.parametrize("fields, start", [
    (dict(factories={"x": _sparse}), "x (from factories['x']) " + INPUT_LINE),
    (dict(make_tensors=lambda dims, gen, dtype, scale: {"x": _sparse(dims, gen, dtype, scale)}),
     "x (from make_tensors) " + INPUT_LINE),
    (dict(forward=lambda p, d: (p["x"].to_sparse(), None), reference=lambda p, d: p["x"].to_sparse()),
     "forward's output " + SET_ASIDE + "return it dense (.to_dense()) to have it checked"),
    (dict(forward=lambda p, d: ((2 * p["x"], p["x"].to_sparse()), None),
          backward=lambda p, d, c, g: {"x": 2 * g[0] + g[1]}),
     "forward's output 1 is a sparse COO tensor"),
    (dict(reference=lambda p, d: (2 * p["x"]).to_sparse()), "the reference's output is a sparse COO tensor"),
    (dict(backward=lambda p, d, c, g: {"x": (2 * g).to_sparse()}),
     "x: the gradient " + SET_ASIDE + "return it dense (.to_dense()) to have it checked"),
], ids=["factory", "make_tensors", "output", "tuple_output", "reference", "gradient"])
def test_a_sparse_tensor_in_a_record_sets_the_case_aside_in_one_line_naming_it(fields, start):
    _one_line_skip(check_case(_record("sparse_here", **fields), _case(_record("sparse_here", **fields))), start)


def test_sparse_data_of_a_plain_record_gets_the_same_line():
    m = Model(name="sparse_data", dims=DIMS, params={"w": ("F",)}, data={"a": ("N", "F")},
              forward=lambda p, d: (d["a"].to_dense() * p["w"], None),
              backward=lambda p, d, c, g: {"w": (g * d["a"].to_dense()).sum(0)}, factories={"a": _sparse})
    _one_line_skip(check_case(m, _case(m)), "a (from factories['a']) " + INPUT_LINE)


def test_the_same_records_dense_pass():
    """The control: the same values, dense, and the same backward pass."""
    for m in (_record("dense_factory", factories={"x": _values}),
              op_model(Double, name="dense_fn", dims=DIMS, inputs={"x": ("N", "F")}, reference=lambda x: 2 * x,
                       factories={"x": _values})):
        assert check_case(m, _case(m)).verdict == PASS
        assert run_model(m, examples=3).verdict == "pass"


def test_op_model_inputs_and_gradients_through_run_model():
    """An op's sparse COO input is checked (masked); its sparse output is set aside, every
    case, which the run names with what is supported; a sparse gradient of a dense input is
    compared by its values (torch takes one)."""
    sparse_out = op_model(Double, name="sparse_fn_output", dims=DIMS, inputs={"x": ("N", "F")},
                          reference=lambda x: 2 * x, factories={"x": _sparse})      # 2 * sparse x is sparse
    run = run_model(sparse_out, examples=3)
    assert run.verdict == "error" and run.failure is None, (run.verdict, run.failure)
    assert "with a tensor of a layout the harness does not check (sparse)" in run.problems[0], run.problems
    assert "hold the op with op_model" in run.problems[0]
    res = check_case(sparse_out, _case(sparse_out))
    _one_line_skip(res, "forward's output " + SET_ASIDE)
    dense_out = op_model(DoubleDense, name="sparse_fn_input", dims=DIMS, inputs={"x": ("N", "F")},
                         reference=lambda x: 2 * x.to_dense(), factories={"x": _sparse})
    run = run_model(dense_out, examples=3)
    assert run.verdict == "pass", run.failure and (run.failure.summary, run.failure.problems)
    sparse_grad = op_model(DoubleSparseGrad, name="sparse_fn_grad", dims=DIMS, inputs={"x": ("N", "F")},
                           reference=lambda x: 2 * x)
    run = run_model(sparse_grad, examples=3)
    assert run.verdict == "pass", run.failure and (run.failure.summary, run.failure.problems)


class DoubleDense(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x.to_dense()

    @staticmethod
    def backward(ctx, g):
        return 2 * g


MODELS = textwrap.dedent('''
    import torch
    from gradcheck_suite import Dim, Model

    def _sparse(dims, gen, dtype, scale):
        return torch.randn(dims["N"], generator=gen, dtype=dtype).to_sparse()

    sparse_cli = Model(name="sparse_cli", dims={"N": Dim(1, 4, 4)}, params={"x": ("N",)},
                       forward=lambda p, d: (2 * p["x"], None), backward=lambda p, d, c, g: {"x": 2 * g},
                       factories={"x": _sparse})
''')


def test_the_cli_says_it_in_one_line_without_a_traceback(tmp_path):
    """Every case set aside: no case could be judged, exit 1 (as for a forward that is
    never finite), with what is supported."""
    (tmp_path / "sparse_models.py").write_text(MODELS)
    r = gcs("check", "sparse_cli", "--models-from", tmp_path / "sparse_models.py", cwd=tmp_path)
    text = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 1, text
    assert "with a tensor of a layout the harness does not check (sparse): densify it (.to_dense()), or, " \
           "for a sparse COO input, hold the op with op_model" in text
    assert "Traceback" not in text and "internal error" not in text and "SparseCPU" not in text
