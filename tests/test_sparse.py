"""Sparse tensors: the harness checks dense (strided) tensors; a sparse one, wherever it
reaches a check (a factory, make_tensors, an op_model input, the forward's or the
reference's output, a gradient the backward returns), is one line that names the tensor and
what is supported, never an internal error."""
import textwrap

import pytest
import torch

from gradcheck_suite import ERROR, PASS, Case, Dim, Model, check_case, op_model, run_model
from tests.test_cli import gcs

DIMS = {"N": Dim(1, 4, 4), "F": Dim(1, 4, 4)}
INPUT_LINE = "is a sparse COO tensor: the harness checks dense (strided) tensors only; densify it there (.to_dense())"


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


def _one_line_error(res, start):
    assert res.verdict == ERROR, (res.verdict, res.problems)
    assert not res.internal, res.problems
    assert res.problems[0].startswith(start), res.problems[0]
    assert "\n" not in res.problems[0]
    assert "SparseCPU" not in res.problems[0]


@pytest.mark.parametrize("fields, start", [
    (dict(factories={"x": _sparse}), "x (from factories['x']) " + INPUT_LINE),
    (dict(make_tensors=lambda dims, gen, dtype, scale: {"x": _sparse(dims, gen, dtype, scale)}),
     "x (from make_tensors) " + INPUT_LINE),
    (dict(forward=lambda p, d: (p["x"].to_sparse(), None), reference=lambda p, d: p["x"].to_sparse()),
     "forward's output is a sparse COO tensor: the harness checks dense (strided) tensors only; return it dense"),
    (dict(forward=lambda p, d: ((2 * p["x"], p["x"].to_sparse()), None),
          backward=lambda p, d, c, g: {"x": 2 * g[0] + g[1]}),
     "forward's output 1 is a sparse COO tensor"),
    (dict(reference=lambda p, d: (2 * p["x"]).to_sparse()), "the reference's output is a sparse COO tensor"),
    (dict(backward=lambda p, d, c, g: {"x": (2 * g).to_sparse()}),
     "x: the gradient is a sparse COO tensor: the harness checks dense (strided) tensors only; return it dense"),
], ids=["factory", "make_tensors", "output", "tuple_output", "reference", "gradient"])
def test_a_sparse_tensor_in_a_record_is_one_line_naming_it(fields, start):
    _one_line_error(check_case(_record("sparse_here", **fields), _case(_record("sparse_here", **fields))), start)


def test_sparse_data_gets_the_same_line():
    m = Model(name="sparse_data", dims=DIMS, params={"w": ("F",)}, data={"a": ("N", "F")},
              forward=lambda p, d: (d["a"].to_dense() * p["w"], None),
              backward=lambda p, d, c, g: {"w": (g * d["a"].to_dense()).sum(0)}, factories={"a": _sparse})
    _one_line_error(check_case(m, _case(m)), "a (from factories['a']) " + INPUT_LINE)


def test_the_same_records_dense_pass():
    """The control: the same values, dense, and the same backward pass."""
    for m in (_record("dense_factory", factories={"x": _values}),
              op_model(Double, name="dense_fn", dims=DIMS, inputs={"x": ("N", "F")}, reference=lambda x: 2 * x,
                       factories={"x": _values})):
        assert check_case(m, _case(m)).verdict == PASS
        assert run_model(m, examples=3).verdict == "pass"


def test_op_model_inputs_and_gradients_through_run_model():
    sparse_in = op_model(Double, name="sparse_fn_input", dims=DIMS, inputs={"x": ("N", "F")},
                         reference=lambda x: 2 * x, factories={"x": _sparse})
    run = run_model(sparse_in, examples=3)
    assert run.verdict == "error" and not run.problems
    _one_line_error(run.failure, "x (from factories['x']) " + INPUT_LINE)
    sparse_grad = op_model(DoubleSparseGrad, name="sparse_fn_grad", dims=DIMS, inputs={"x": ("N", "F")},
                           reference=lambda x: 2 * x)
    run = run_model(sparse_grad, examples=3)
    _one_line_error(run.failure, "x: the gradient is a sparse COO tensor")


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
    """A record problem found at the first case: the model's error, exit 1 (as a record
    that fails to load, or a factory of the wrong shape)."""
    (tmp_path / "sparse_models.py").write_text(MODELS)
    r = gcs("check", "sparse_cli", "--models-from", tmp_path / "sparse_models.py", cwd=tmp_path)
    text = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 1, text
    assert "x (from factories['x']) " + INPUT_LINE in text
    assert "Traceback" not in text and "internal error" not in text and "SparseCPU" not in text
