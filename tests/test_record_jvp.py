"""A plain record's own forward-mode rule, ``jvp(p, d, tangents[, h])`` (check/stages/forward_mode.py):
checked like a Function's jvp, against autograd's forward-mode tangent of the reference (or of
the record's torch forward), and against the backward (<u, Jv> = <J^T u, v>) where autograd has
no tangent.  y = x * x * w, dy = 2 x w dx + x^2 dw, with x data that takes a gradient."""
import pytest
import torch

from gradcheck_suite import FAIL, PASS, Dim, Model, SpecError, check_case, run_model


def _forward(p, d):
    y = d.x * d.x * p.w
    return y, None


def _backward(p, d, cache, g):
    return {"w": g * d.x * d.x, "x": 2 * g * d.x * p.w}


def _right(p, d, t):
    return 2 * d.x * p.w * t["x"] + d.x * d.x * t["w"]


def _w_off_in_one_element(p, d, t):
    tw = d.x * d.x * t["w"]
    tw = torch.cat([tw[:1] * (1 + 1e-5), tw[1:]])      # w's term, 1e-5 relative, in element 0 only
    return 2 * d.x * p.w * t["x"] + tw


def _x_missing_factor(p, d, t):
    return d.x * p.w * t["x"] + d.x * d.x * t["w"]      # forgot the 2 of d(x^2)


class _Opaque(torch.autograd.Function):
    """x * x * w with a once-differentiable backward and no jvp: autograd has no tangent of it."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * x * w

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return 2 * g * x * w, g * x * x


def _model(jvp, name="square_scale", reference=None, forward=_forward, **fields):
    return Model(name=name, dims={"N": Dim(1, 8, 4)}, params={"w": ("N",)}, data={"x": ("N",)}, grad_data=("x",),
                 forward=forward, backward=_backward, jvp=jvp, reference=reference, **fields)


@pytest.mark.parametrize("reference", [None, lambda p, d: d.x * d.x * p.w])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_right_jvp_passes(case_of, reference, dtype):
    m = _model(_right, reference=reference)
    for seed in range(3):
        res = check_case(m, case_of(m, dtype=dtype, seed=seed, N=6))
        assert res.verdict == PASS, (res.summary, res.problems)
        assert not any("forward mode" in n for n in res.notes)


def test_a_right_jvp_passes_on_generated_cases():
    for dtype in ("float64", "float32"):
        run = run_model(_model(_right), dtype=dtype, examples=10)
        assert run.verdict == "pass", run.failure and (run.failure.summary, run.failure.problems)


@pytest.mark.parametrize("reference", [None, lambda p, d: d.x * d.x * p.w])
def test_a_jvp_wrong_by_1e_5_in_one_element_fails_naming_the_tensor(case_of, reference):
    m = _model(_w_off_in_one_element, reference=reference)
    res = check_case(m, case_of(m, seed=1, N=5))
    assert res.verdict == FAIL and res.failing == ["w"], (res.summary, res.problems)
    oracle = "the forward" if reference is None else "the reference"
    assert res.summary.startswith("the forward-mode tangent (the record's jvp) of output 0 in the direction of w "
                                  f"differs from autograd's forward-mode tangent of {oracle}")
    assert "at (0,)" in res.summary


def test_a_wrong_term_of_data_that_takes_a_gradient_fails_naming_it(case_of):
    m = _model(_x_missing_factor)
    res = check_case(m, case_of(m, seed=2, N=4))
    assert res.verdict == FAIL and res.failing == ["x"], (res.summary, res.problems)


def test_without_a_tangent_from_autograd_the_backward_judges_the_jvp(case_of):
    def opaque(p, d):
        return _Opaque.apply(d.x, p.w), None

    right = _model(_right, name="opaque_right", forward=opaque)
    res = check_case(right, case_of(right, seed=2, N=4))
    assert res.verdict == PASS, (res.summary, res.problems)
    assert any("checked against the backward only" in n for n in res.notes)
    for jvp, name in ((_x_missing_factor, "x"), (_w_off_in_one_element, "w")):
        wrong = _model(jvp, name="opaque_wrong", forward=opaque)
        res = check_case(wrong, case_of(wrong, seed=2, N=4))
        assert res.verdict == FAIL and res.failing == [name], (res.summary, res.problems)
        assert "<u, Jv> = <J^T u, v>" in res.summary


def test_a_jvp_of_the_wrong_shape_is_an_error(case_of):
    m = _model(lambda p, d, t: _right(p, d, t).sum())
    res = check_case(m, case_of(m, seed=0, N=3))
    assert res.verdict == "error" and "jvp returned an output tangent of shape ()" in res.problems[0]


def test_a_jvp_that_is_not_callable_is_a_spec_error():
    with pytest.raises(SpecError, match="field 'jvp': must be callable"):
        _model(3)
