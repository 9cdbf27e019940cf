"""Sparse COO inputs of an op (``op_model``), judged as ``torch.autograd.gradcheck(...,
masked=True)`` judges them: the specified values are the variables.  The case holds the
input dense; the op and the reference get a sparse COO tensor rebuilt from its values at
the factory's indices; the manual gradient, autograd of the reference and finite
differences are read at the specified elements (zero elsewhere, on every side)."""
import textwrap

import pytest
import torch

from gradcheck_suite import Case, Dim, op_model, run_model
from gradcheck_suite.check.pipeline import check_case
from gradcheck_suite.check.result import FAIL, PASS
from tests.test_cli import gcs

DIMS = {"N": Dim(1, 5, 4), "F": Dim(1, 5, 4), "K": Dim(1, 4, 3)}
INPUTS = {"x": ("N", "F"), "w": ("F", "K")}
seen = []          # what the op received, for the test that it is the factory's sparse tensor


def _sparse(dims, gen, dtype, scale):
    """About half the elements specified; some specified ones exactly 0 (still variables)."""
    x = torch.randn(dims["N"], dims["F"], generator=gen, dtype=dtype) * scale
    keep = torch.rand(dims["N"], dims["F"], generator=gen) < 0.5
    x = x * keep
    x[0, 0] = 0.0
    keep[0, 0] = True
    indices = keep.nonzero().t()
    return torch.sparse_coo_tensor(indices, x[tuple(indices)], x.shape, check_invariants=False)


def spmm(mode="right", eps=1e-5):
    """y = x @ w with x sparse COO.  ``mode``: "right"; "one" (x's gradient off by ``eps`` at
    its first specified element); "dense" (x's gradient returned dense, so with values at
    the unspecified elements too, which masked semantics leave out, as gradcheck does)."""

    class SpMM(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            seen.append(x)
            ctx.save_for_backward(x, w)
            return torch.sparse.mm(x, w)

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            full = g @ w.T
            gw = torch.sparse.mm(x.t(), g)
            if mode == "dense":     # 1 added at every unspecified element
                specified = torch.sparse_coo_tensor(x.indices(), torch.ones_like(x.values()), x.shape).to_dense()
                return full + (1 - specified), gw
            gx = full.sparse_mask(x)
            if mode == "one":
                v = gx.values().clone()
                v[:1] = v[:1] * (1 + eps)
                gx = torch.sparse_coo_tensor(gx.indices(), v, gx.shape, check_invariants=False)
            return gx, gw

    return op_model(SpMM, name=f"spmm_{mode}", dims=DIMS, inputs=INPUTS, reference=lambda x, w: torch.sparse.mm(x, w),
                    factories={"x": _sparse})


def case(m, dtype="float64", scale=1.0, N=3, F=4, K=2, seed=1):
    return Case(m.name, {"N": N, "F": F, "K": K}, dtype, "cpu", seed, scale)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_right_backward_for_a_sparse_input_passes(dtype):
    m = spmm()
    run = run_model(m, dtype=dtype, examples=8)
    assert run.verdict == "pass", run.failure and (run.failure.summary, run.failure.problems)
    for scale, n, f in ((1e-3, 3, 4), (1e3, 3, 4), (1.0, 1, 1)):
        res = check_case(m, case(m, dtype, scale, n, f))
        assert res.verdict == PASS, (scale, n, f, res.summary, res.problems)


def test_the_op_gets_the_factorys_sparse_tensor_and_the_gradient_is_read_at_its_elements():
    m = spmm()
    seen.clear()
    res = check_case(m, case(m))
    assert res.verdict == PASS, (res.summary, res.problems)
    from gradcheck_suite.check.case import build
    made = _sparse({"N": 3, "F": 4, "K": 2}, torch.Generator().manual_seed(1), torch.float64, 1.0).coalesce()
    x = seen[0]
    assert x.layout == torch.sparse_coo and x.is_coalesced()
    assert torch.equal(x.indices(), made.indices()) and torch.equal(x.detach().values(), made.values())
    p, _ = build(m, case(m))
    assert p["x"].layout == torch.strided and torch.equal(p["x"], made.to_dense())


@pytest.mark.parametrize("dtype, eps", [("float64", 1e-5), ("float32", 1e-4)])
def test_a_backward_wrong_in_one_specified_element_fails_naming_it(dtype, eps):
    m = spmm("one", eps)
    res = check_case(m, case(m, dtype))
    assert res.verdict == FAIL, (res.summary, res.problems)
    assert res.failing == ["x"]
    worst = res.tensors["x"].worst[0]
    assert res.tensors["x"].mismatched == 1 and worst.index == (0, 0)     # the first specified element
    if dtype == "float64":      # finite differences on the values agree with autograd, not with the backward
        assert worst.finite_diff is not None and abs(worst.finite_diff - worst.autograd) <= 1e-8 * abs(worst.autograd)
    run = run_model(m, dtype=dtype, examples=10)
    assert run.verdict == "fail" and run.failure.failing == ["x"]


def test_values_at_unspecified_elements_are_left_out():
    """The values are the variables, and training that builds the sparse tensor from them
    gets the gradient at the specified elements only (the sparse constructor's backward
    gathers it there): a dense gradient with other values elsewhere is right.  gradcheck's
    masked=True is stricter here: it compares those values with 0, and fails it."""
    m = spmm("dense")
    assert run_model(m, examples=6).verdict == "pass"
    x = _sparse({"N": 3, "F": 4}, torch.Generator().manual_seed(1), torch.float64, 1.0).coalesce()
    w = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    values = x.values().clone().requires_grad_()
    y = m.op.call(torch.sparse_coo_tensor(x.indices(), values, x.shape, is_coalesced=True), w)
    (got,) = torch.autograd.grad(y, values, torch.ones_like(y))
    want = (torch.ones_like(y) @ w.T)[tuple(x.indices())]
    assert torch.allclose(got, want)
    # (gradcheck's own undefined-gradient test cannot read a sparse gradient: aten::eq; left out)
    assert not torch.autograd.gradcheck(m.op.call, (x.requires_grad_(), w), masked=True, check_undefined_grad=False,
                                        raise_exception=False)


def test_the_verdicts_agree_with_gradcheck_masked_on_a_visible_error():
    m = spmm("one", 0.1)        # gradcheck's atol 1e-5 and rtol 1e-3 miss a 1e-5 error: 10% here
    assert check_case(m, case(m)).verdict == FAIL
    x = _sparse({"N": 3, "F": 4}, torch.Generator().manual_seed(1), torch.float64, 1.0).coalesce().requires_grad_()
    w = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert not torch.autograd.gradcheck(m.op.call, (x, w), masked=True, check_undefined_grad=False, raise_exception=False)
    assert torch.autograd.gradcheck(spmm().op.call, (x, w), masked=True, check_undefined_grad=False)


class ScaleRows(torch.autograd.Function):
    """y = a * w with a sparse COO data tensor a (no gradient) and a dense w."""

    @staticmethod
    def forward(ctx, a, w):
        ctx.save_for_backward(a)
        return (a * w).to_dense()

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return None, (a.to_dense() * g)


def test_a_sparse_data_tensor_is_passed_sparse_and_the_dense_input_checked():
    m = op_model(ScaleRows, name="scale_rows", dims=DIMS, inputs={"w": ("N", "F")}, data={"a": ("N", "F")},
                 args=("a", "w"), reference=lambda a, w: (a * w).to_dense(), factories={"a": _sparse})
    run = run_model(m, examples=6)
    assert run.verdict == "pass", run.failure and (run.failure.summary, run.failure.problems)


def _sparse_grad(wrong):
    class Twice(torch.autograd.Function):
        """A dense input whose gradient the backward returns sparse: torch takes it."""

        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, g):
            gx = 2 * g
            if wrong:
                gx = gx.clone()
                gx.view(-1)[:1] *= 1 + 1e-5
            return gx.to_sparse()

    return op_model(Twice, name="twice_sparse_grad", dims=DIMS, inputs={"x": ("N", "F")}, reference=lambda x: 2 * x)


def test_a_sparse_gradient_of_a_dense_input_is_compared_by_its_values():
    run = run_model(_sparse_grad(False), examples=5)
    assert run.verdict == "pass", run.failure and (run.failure.summary, run.failure.problems)
    run = run_model(_sparse_grad(True), examples=5)
    assert run.verdict == "fail" and run.failure.failing == ["x"]


class SpMMJvp(torch.autograd.Function):
    """The right y = x @ w in the style torch.func takes, with a jvp."""

    @staticmethod
    def forward(x, w):
        return torch.sparse.mm(x, w)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return (g @ w.T).sparse_mask(x), torch.sparse.mm(x.t(), g)

    @staticmethod
    def jvp(ctx, tx, tw):
        x, w = ctx.saved_tensors
        return torch.sparse.mm(tx, w) + torch.sparse.mm(x, tw)


def test_the_later_stages_pass_a_right_sparse_op_with_notes_for_what_they_leave_out():
    m = op_model(SpMMJvp, name="spmm_jvp", dims=DIMS, inputs=INPUTS, reference=lambda x, w: torch.sparse.mm(x, w),
                 factories={"x": _sparse}, double_backward=True)
    for compile in (None, "aot_eager"):
        res = check_case(m, Case(m.name, {"N": 3, "F": 4, "K": 2}, "float64", "cpu", 1, 1.0, {}, compile))
        assert res.verdict == PASS, (compile, res.summary, res.problems)
        notes = " ".join(res.notes)
        assert "double backward is not checked with a sparse COO input (x)" in notes
        assert "forward mode not checked: torch cannot run SpMMJvp.jvp" in notes
        if compile:
            assert "torch.func.vjp under torch.compile (aot_eager) is not checked with a sparse COO input" in notes


MODELS = textwrap.dedent('''
    import torch
    from gradcheck_suite import Dim, op_model

    def _sparse(dims, gen, dtype, scale):
        x = torch.randn(dims["N"], dims["F"], generator=gen, dtype=dtype) * scale
        return (x * (torch.rand(dims["N"], dims["F"], generator=gen) < 0.5)).to_sparse()

    def spmm(wrong):
        class SpMM(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, w):
                ctx.save_for_backward(x, w)
                return torch.sparse.mm(x, w)

            @staticmethod
            def backward(ctx, g):
                x, w = ctx.saved_tensors
                gx = (g @ w.T).sparse_mask(x).coalesce()
                if wrong:       # the last specified element off by 1e-5
                    v = gx.values().clone()
                    v[-1:] = v[-1:] * (1 + 1e-5)
                    gx = torch.sparse_coo_tensor(gx.indices(), v, gx.shape)
                return gx, torch.sparse.mm(x.t(), g)
        return op_model(SpMM, name="spmm_" + ("wrong" if wrong else "right"), dims={"N": Dim(1, 5, 4), "F": Dim(1, 5, 4),
                        "K": Dim(1, 4, 3)}, inputs={"x": ("N", "F"), "w": ("F", "K")},
                        reference=lambda x, w: torch.sparse.mm(x, w), factories={"x": _sparse})

    records = [spmm(False), spmm(True)]
''')


def test_the_cli_passes_the_right_sparse_op_and_fails_the_wrong_one_naming_x(tmp_path):
    (tmp_path / "sparse_ops.py").write_text(MODELS)
    right = gcs("check", "spmm_right", "--models-from", tmp_path / "sparse_ops.py", "--examples", "6", cwd=tmp_path)
    assert right.returncode == 0, right.stdout + right.stderr
    wrong = gcs("check", "spmm_wrong", "--models-from", tmp_path / "sparse_ops.py", "--examples", "6", cwd=tmp_path)
    text = " ".join((wrong.stdout + wrong.stderr).split())
    assert wrong.returncode == 1, text
    assert "FAIL" in text and " x " in text and "Traceback" not in text, text
