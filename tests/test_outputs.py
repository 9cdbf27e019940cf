"""Outputs as the engine passes them (issue 26, items 4 and 9): an output the loss leaves
unused gets the gradient torch gives it (None after ``ctx.set_materialize_grads(False)``,
zeros otherwise); an integer member of an output tuple is non-differentiable, as torch marks
it; and a Function that changes its input in place (``ctx.mark_dirty``) is checked on copies
of the case's tensors.  Each with a correct Function, which passes, and a wrong one, which
fails or errors naming the tensor and the cause."""
import pytest
import torch

from gradcheck_suite import Dim, op_model, run_model

DIMS = {"N": Dim(1, 5, 3), "C": Dim(1, 5, 4)}


def _two_outputs(mode: str):
    """y1 = x * w, y2 = sin(x): two outputs, ctx.set_materialize_grads(False)."""

    class TwoOut(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(x, w)
            return x * w, torch.sin(x)

        @staticmethod
        def backward(ctx, g1, g2):
            x, w = ctx.saved_tensors
            if mode == "crash":                 # uses both gradients as if never None
                return g1 * w + g2 * torch.cos(x), (g1 * x).sum(0)
            gx = torch.zeros_like(x)
            gw = torch.zeros_like(w)
            if g1 is not None:
                gx = gx + g1 * w
                gw = gw + (g1 * x).sum(0)
            if g2 is not None:
                gx = gx + g2 * torch.cos(x)
            elif mode == "wrong":               # with g2 absent, a stale term
                gx = gx + torch.cos(x)
            return gx, gw

    return op_model(TwoOut, name=f"two_out_{mode}", dims=DIMS, inputs={"x": ("N", "C"), "w": ("C",)},
                    reference=lambda x, w: (x * w, torch.sin(x)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_function_that_handles_a_none_gradient_passes(dtype):
    run = run_model(_two_outputs("right"), dtype=dtype, examples=6)
    assert run.verdict == "pass", run.failure and (run.failure.summary or run.failure.problems)


def test_a_function_that_crashes_on_a_none_gradient_errors_naming_the_output():
    run = run_model(_two_outputs("crash"), examples=4)
    assert run.verdict == "error", run.verdict
    text = run.failure.problems[0]
    assert "with output 0 of 2 unused" in text and "set_materialize_grads(False)" in text, text
    assert "NoneType" in text and "test_outputs.py:" in text, text


def test_a_function_that_mishandles_a_none_gradient_fails_naming_the_tensor():
    run = run_model(_two_outputs("wrong"), examples=4)
    assert run.verdict == "fail", run.verdict
    assert run.failure.failing == ["x (output 1 unused)"]
    assert "the manual gradient of x is wrong with output 1 of 2 unused" in run.failure.summary
    assert "set_materialize_grads(False)" in run.failure.summary


def _max_with_indices(wrong: bool):
    class MaxIdx(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            values, indices = x.max(-1)
            ctx.save_for_backward(indices)
            ctx.shape = x.shape
            return values, indices

        @staticmethod
        def backward(ctx, g_values, g_indices):
            indices, = ctx.saved_tensors
            gx = torch.zeros(ctx.shape, dtype=g_values.dtype, device=g_values.device)
            gx.scatter_(-1, indices.unsqueeze(-1), g_values.unsqueeze(-1))
            return gx * 2 if wrong else gx

    return op_model(MaxIdx, name=f"max_idx_{'wrong' if wrong else 'right'}", dims=DIMS,
                    inputs={"x": ("N", "C")}, reference=lambda x: x.max(-1))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_max_with_indices_function_is_checked_without_a_wrapper(dtype):
    run = run_model(_max_with_indices(False), dtype=dtype, examples=6)
    assert run.verdict == "pass", run.failure and (run.failure.summary or run.failure.problems)


def test_a_wrong_max_with_indices_function_fails_naming_its_input():
    run = run_model(_max_with_indices(True), examples=4)
    assert run.verdict == "fail", run.failure and run.failure.problems
    assert run.failure.failing == ["x"]


def test_a_tuple_with_an_output_that_is_not_a_tensor_is_still_refused():
    class Bad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, 3

        @staticmethod
        def backward(ctx, g, _):
            return 2 * g

    run = run_model(op_model(Bad, name="bad", dims=DIMS, inputs={"x": ("N", "C")}, reference=lambda x: (x * 2, 3)),
                    examples=2)
    assert run.verdict == "error"
    assert "output 1 must be a tensor" in run.failure.problems[0], run.failure.problems


def _in_place(wrong: bool):
    class ScaleInPlace(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            x.mul_(w)
            ctx.mark_dirty(x)
            ctx.save_for_backward(x, w)
            return x

        @staticmethod
        def backward(ctx, g):
            y, w = ctx.saved_tensors
            x = y / w
            return g * w * (3 if wrong else 1), (g * x).sum(0)

    return op_model(ScaleInPlace, name=f"scale_in_place_{'wrong' if wrong else 'right'}", dims=DIMS,
                    inputs={"x": ("N", "C"), "w": ("C",)}, reference=lambda x, w: x * w,
                    domain={"w": (0.5, None)})


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_in_place_function_marking_its_input_dirty_is_checked_on_clones(dtype):
    run = run_model(_in_place(False), dtype=dtype, examples=6)
    assert run.verdict == "pass", run.failure and (run.failure.summary or run.failure.problems)


def test_a_wrong_in_place_function_fails_naming_its_input():
    run = run_model(_in_place(True), examples=4)
    assert run.verdict == "fail", run.failure and run.failure.problems
    assert run.failure.failing == ["x"]


def test_an_in_place_change_without_mark_dirty_is_still_an_error():
    class Sneaky(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.mul_(2)
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    run = run_model(op_model(Sneaky, name="sneaky", dims=DIMS, inputs={"x": ("N", "C")}, reference=lambda x: 2 * x),
                    examples=2)
    assert run.verdict == "error"


def test_a_kink_the_case_set_aside_is_not_judged_again_with_an_output_unused():
    """relu's gradient at exactly 0 is a convention (this backward takes 1, torch 0): the
    case passes with the kink set aside, and leaving the other output unused changes nothing."""

    class ReluAndDouble(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(x)
            return x.clamp(min=0), 2 * x

        @staticmethod
        def backward(ctx, g_relu, g_double):
            x, = ctx.saved_tensors
            gx = torch.zeros_like(x)
            if g_relu is not None:
                gx = gx + g_relu * (x >= 0)
            if g_double is not None:
                gx = gx + 2 * g_double
            return gx

    def with_zeros(values, gen, dtype, scale):
        x = torch.randn((values["N"], values["C"]), generator=gen, dtype=torch.float64) * scale
        x[0, 0] = 0.0
        return x

    model = op_model(ReluAndDouble, name="relu_and_double", dims=DIMS, inputs={"x": ("N", "C")},
                     reference=lambda x: (torch.relu(x), 2 * x), factories={"x": with_zeros})
    run = run_model(model, examples=6)
    assert run.verdict == "pass", run.failure and (run.failure.summary or run.failure.problems)
    assert run.checked >= 1


def test_a_record_whose_forward_returns_indices_gets_none_for_them():
    from gradcheck_suite import Model

    def forward(p, d):
        values, indices = p.x.max(-1)
        return (3 * values, indices), indices

    def backward(p, d, indices, g):
        g_values, g_indices = g
        assert g_indices is None
        return {"x": torch.zeros_like(p.x).scatter(-1, indices[..., None], 3 * g_values[..., None])}

    model = Model(name="record_max", dims=DIMS, params={"x": ("N", "C")}, forward=forward, backward=backward)
    run = run_model(model, examples=6)
    assert run.verdict == "pass", run.failure and (run.failure.summary or run.failure.problems)
