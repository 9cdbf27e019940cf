"""Forward mode (gradcheck_suite.check.stages.forward_mode): a Function's ``jvp`` against the
reference's forward-mode tangent and against the backward (<u, Jv> = <J^T u, v>).

Each wrong ``jvp`` below sits beside a right backward, so every other stage passes it; its
correct twin passes.  y = x * x * w, so dy = 2 x w dx + x^2 dw: one input's term at a time
is broken."""
import pytest
import torch

from gradcheck_suite import FAIL, PASS, Dim, check_case, op_model, run_model
from gradcheck_suite.check.stages import forward_mode


def _function(jvp=None, name="SquareScale"):
    """An autograd.Function for x * x * w with a right backward, and ``jvp`` (or none)."""
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        if jvp is not None:
            ctx.save_for_forward(x, w)
        return x * x * w

    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return 2 * g * x * w, g * x * x

    body = {"forward": staticmethod(forward), "backward": staticmethod(backward)}
    if jvp is not None:
        body["jvp"] = staticmethod(jvp)
    return type(name, (torch.autograd.Function,), body)


def _right(ctx, tx, tw):
    x, w = ctx.saved_tensors
    return 2 * x * w * tx + x * x * tw


def _x_missing_factor(ctx, tx, tw):
    x, w = ctx.saved_tensors
    return x * w * tx + x * x * tw               # forgot the 2 of d(x^2)


def _w_sign(ctx, tx, tw):
    x, w = ctx.saved_tensors
    return 2 * x * w * tx - x * x * tw           # w's term with its sign flipped


def _raises(ctx, tx, tw):
    raise NotImplementedError("forward mode is not supported yet")


DIMS = {"N": Dim(low=1, high=16, bench=256)}


def _model(fn, *, wrap=False, reference=lambda x, w: x * x * w, **fields):
    op = (lambda x, w: fn.apply(x, w)) if wrap else fn
    return op_model(op, name="square_scale", dims=DIMS, inputs={"x": ("N",), "w": ("N",)},
                    reference=reference, **fields)


def test_only_a_function_that_overrides_jvp_is_looked_at():
    assert forward_mode.overrides_jvp(_function(_right))
    assert not forward_mode.overrides_jvp(_function())
    assert not forward_mode.overrides_jvp(torch.autograd.Function)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_right_jvp_passes(case_of, dtype, seed):
    m = _model(_function(_right))
    res = check_case(m, case_of(m, dtype=dtype, seed=seed, N=7))
    assert res.verdict == PASS, res.problems + res.notes + [res.summary]
    assert not any("forward mode" in n for n in res.notes)


@pytest.mark.parametrize("scale", [1e-3, 1e3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_right_jvp_passes_at_extreme_magnitudes(case_of, scale, dtype):
    m = _model(_function(_right))
    for seed in range(3):
        res = check_case(m, case_of(m, dtype=dtype, seed=seed, scale=scale, N=9))
        assert res.verdict == PASS, (seed, res.problems, res.notes, res.summary)


def test_a_right_jvp_passes_on_generated_cases_in_float32():
    run = run_model(_model(_function(_right)), dtype="float32", examples=10)
    assert run.verdict == "pass", run.failure and (run.failure.summary, run.failure.problems)


@pytest.mark.parametrize("jvp, name", [(_x_missing_factor, "x"), (_w_sign, "w")])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_wrong_term_of_the_jvp_fails_naming_its_input(case_of, jvp, name, dtype):
    m = _model(_function(jvp))
    res = check_case(m, case_of(m, dtype=dtype, seed=3, N=6))
    assert res.verdict == FAIL
    assert res.failing == [name]
    assert "forward-mode tangent (SquareScale.jvp)" in res.summary
    assert f"in the direction of {name} differs from autograd's" in res.summary


def test_a_wrong_jvp_is_found_through_a_wrapper(case_of):
    m = _model(_function(_w_sign), wrap=True)
    res = check_case(m, case_of(m, seed=1, N=5))
    assert res.verdict == FAIL and res.failing == ["w"], res.summary


def test_a_wrong_jvp_fails_the_reverse_mode_identity_where_the_reference_has_no_tangent(case_of):
    class Opaque(torch.autograd.Function):
        """The reference itself, as a Function without jvp and with a once-differentiable
        backward: neither forward mode nor the double-vjp trick runs through it."""
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return x * x * w

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return 2 * g * x * w, g * x * x

    right = check_case(m := _model(_function(_right), reference=Opaque.apply), case_of(m, seed=2, N=6))
    assert right.verdict == PASS, (right.summary, right.problems)
    assert any("checked against the backward only" in n for n in right.notes)
    wrong = check_case(m := _model(_function(_x_missing_factor), reference=Opaque.apply), case_of(m, seed=2, N=6))
    assert wrong.verdict == FAIL and wrong.failing == ["x"]
    assert "<u, Jv> = <J^T u, v>" in wrong.summary


def test_a_function_without_jvp_is_unaffected(case_of):
    m = _model(_function())
    res = check_case(m, case_of(m, seed=0, N=7))
    assert res.verdict == PASS
    assert not any("forward mode" in n for n in res.notes)


def test_a_jvp_torch_cannot_run_is_a_note_not_a_failure(case_of):
    m = _model(_function(_raises))
    res = check_case(m, case_of(m, seed=0, N=7))
    assert res.verdict == PASS, (res.summary, res.problems)
    assert any("forward mode not checked" in n and "NotImplementedError" in n for n in res.notes)


def test_a_wrong_jvp_of_one_output_of_several_fails_naming_the_output(case_of):
    class Pair(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            ctx.save_for_forward(x)
            return x.sin(), x * 3

        @staticmethod
        def backward(ctx, ga, gb):
            (x,) = ctx.saved_tensors
            return ga * x.cos() + 3 * gb

        @staticmethod
        def jvp(ctx, tx):
            (x,) = ctx.saved_tensors
            return tx * x.cos(), tx * (3 if Pair.right else -3)

    def model(right):
        def op(x):
            Pair.right = right
            return Pair.apply(x)
        return op_model(op, name="pair", dims=DIMS, inputs={"x": ("N",)},
                        reference=lambda x: (x.sin(), x * 3))

    good = check_case(m := model(True), case_of(m, seed=0, N=4))
    assert good.verdict == PASS, (good.summary, good.problems)
    bad = check_case(m := model(False), case_of(m, seed=0, N=4))
    assert bad.verdict == FAIL and bad.failing == ["x"]
    assert "of output 1 in the direction of x" in bad.summary


def test_a_reference_without_forward_mode_is_differentiated_twice_instead(case_of):
    """The reference a Function without jvp whose backward autograd can differentiate: its
    tangent comes from the double-vjp trick, and judges the jvp as forward mode would."""
    reference = _function(name="ReferenceWithoutJvp").apply
    right = check_case(m := _model(_function(_right), reference=reference), case_of(m, seed=4, N=6))
    assert right.verdict == PASS, (right.summary, right.problems)
    assert not any("forward mode" in n for n in right.notes)
    wrong = check_case(m := _model(_function(_w_sign), reference=reference), case_of(m, seed=4, N=6))
    assert wrong.verdict == FAIL and wrong.failing == ["w"]
    assert "differs from autograd's forward-mode tangent" in wrong.summary


def _rounds_away(ctx, tx, tw):
    """Right in exact arithmetic; in float32 the shift by 1e4 rounds away ~1e-3 of each term."""
    x, w = ctx.saved_tensors
    return ((2 * x * w * tx + 1e4) - 1e4) + x * x * tw


def test_a_jvp_right_in_float64_that_rounds_more_in_float32_is_not_failed(case_of):
    m = _model(_function(_rounds_away))
    for seed in range(3):
        res = check_case(m, case_of(m, dtype="float32", seed=seed, N=8))
        assert res.verdict == PASS, (seed, res.summary)


def test_a_wrong_jvp_in_float32_still_fails_when_float64_shows_it_too(case_of):
    m = _model(_function(_x_missing_factor))
    res = check_case(m, case_of(m, dtype="float32", seed=5, N=8))
    assert res.verdict == FAIL and res.failing == ["x"]
    assert "x (forward mode)" in res.tensors


def _summed(ctx, tx, tw):
    x, w = ctx.saved_tensors
    return (2 * x * w * tx + x * x * tw).sum()     # one value for a tangent of shape (N,)


def test_a_jvp_torch_rejects_is_an_error_not_a_note(case_of):
    m = _model(_function(_summed))
    res = check_case(m, case_of(m, seed=0, N=5))
    assert res.verdict == "error", (res.summary, res.notes)
    assert "forward mode (SquareScale.jvp) raised RuntimeError" in res.problems[0]
    assert "different size" in res.problems[0]
