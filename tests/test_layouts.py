"""The backward as training calls it: the same values in other layouts (gradcheck_suite.check.stages.layouts).

Each wrong backward below is right on the generator's contiguous tensors and wrong, or
raising, in one layout only; its correct twin passes.  The tests call ``layouts.problem``
directly on a judged case, as the checker does once the case otherwise passes."""
import dataclasses
import itertools

import numpy as np
import pytest
import torch

from gradcheck_suite import Dim, Model, check, numpy_model, op_model
from gradcheck_suite.check.stages import layouts
from gradcheck_suite import Case
from gradcheck_suite.check.case import Bound, build, upstream
from gradcheck_suite.verdict.tolerance import bound
from tests import test_shipped_kinds as shipped_kinds

HINT = "does the backward read storage as contiguous?"


def judge(model, dims, *, seed=3, dtype=None, calls=None, out=True):
    """``layouts.problem`` on one case of ``model``, and the case's tensors unchanged after it."""
    case = Case(model.name, dims, dtype or model.dtype, "cpu", seed, 1.0, model.bench_hyper)
    bound_model = Bound(model, case)
    p, d = build(model, case)
    with torch.no_grad():
        y, cache = bound_model.forward(p, d)
        g = upstream(y, case.seed)
        grads = bound_model.backward(p, d, cache, g.clone())     # the checker's contract catches a write into g
    bounds = {n: bound(grads[n], case.dtype) for n in grads}
    before = {n: t.clone() for n, t in [*p.items(), *d.items(), ("g", g)]}
    if calls is not None:
        calls.clear()
    with torch.no_grad():
        text = layouts.problem(bound_model, p, d, g, grads, bounds, out=y if out else None)
    after = {**p, **d, "g": g}
    assert all(torch.equal(before[n], after[n]) and after[n].is_contiguous() for n in before)
    return text


def stored(t):
    """``t``'s storage read as if ``t`` were contiguous: what a raw kernel does."""
    return torch.empty(0, dtype=t.dtype).set_(t.untyped_storage(), t.storage_offset(), t.shape)


# -- the upstream gradient transposed (2-D), permuted (3-D and more) ------------------

def _matmul_forward(p, d):
    return d.x @ p.w, None


def _matmul(backward):
    return Model(name="matmul", dims={"N": Dim(1, 8, 3), "I": Dim(1, 8, 4), "O": Dim(1, 8, 5)},
                 params={"w": ("I", "O")}, data={"x": ("N", "I")}, forward=_matmul_forward, backward=backward)


def test_a_backward_reading_g_as_contiguous_storage_fails_when_g_is_transposed():
    assert judge(_matmul(lambda p, d, c, g: {"w": d.x.T @ g}), {"N": 3, "I": 4, "O": 5}) is None
    text = judge(_matmul(lambda p, d, c, g: {"w": d.x.T @ stored(g)}), {"N": 3, "I": 4, "O": 5})
    assert text.startswith("the gradient of w changes when the upstream gradient is a transposed view (max error ")
    assert text.endswith(HINT)


def test_a_row_or_a_column_has_no_transposed_layout_but_a_strided_one():
    text = judge(_matmul(lambda p, d, c, g: {"w": d.x.T @ stored(g)}), {"N": 1, "I": 4, "O": 5})
    assert "when the upstream gradient is a strided slice" in text


class ChannelScale(torch.autograd.Function):
    """y[b, t, c] = x[b, t, c] · w[c]; ``wrong`` flattens g with .view."""

    wrong = False

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, go):
        x, w = ctx.saved_tensors
        flat = go.view(-1, w.shape[0]) if ChannelScale.wrong else go.reshape(-1, w.shape[0])
        return go * w, (flat * x.reshape(-1, w.shape[0])).sum(0)


@pytest.fixture
def channel_scale():
    yield op_model(ChannelScale, name="channel_scale", dims={"B": Dim(1, 4, 2), "T": Dim(1, 4, 3), "C": Dim(1, 4, 4)},
                   inputs={"x": ("B", "T", "C"), "w": ("C",)}, reference=lambda x, w: x * w)
    ChannelScale.wrong = False


def test_a_function_calling_view_on_grad_output_raises_when_it_is_permuted(channel_scale):
    dims = {"B": 2, "T": 3, "C": 4}
    assert judge(channel_scale, dims) is None
    ChannelScale.wrong = True
    text = judge(channel_scale, dims)
    assert text.startswith("backward raised RuntimeError: view size is not compatible with input tensor's size")
    assert "when the upstream gradient is a permuted view (at " in text and "test_layouts.py:" in text


def _np_affine_forward(x, w):
    return x @ w, (x, w)


def _np_affine_backward(dout, cache):
    x, w = cache
    return dout @ w.T, x.T @ dout


def _np_affine_backward_memory_order(dout, cache):
    x, w = cache
    dout = dout.ravel(order="K").reshape(dout.shape)     # memory order: rows only where dout is C-ordered
    return dout @ w.T, x.T @ dout


def _np_affine(backward):
    return numpy_model(_np_affine_forward, backward, name="np_affine",
                       dims={"N": Dim(1, 8, 3), "I": Dim(1, 8, 4), "O": Dim(1, 8, 5)},
                       inputs={"x": ("N", "I"), "w": ("I", "O")}, reference=lambda x, w: x @ w)


def test_a_numpy_layer_that_flattens_dout_in_memory_order_fails_when_dout_is_transposed():
    dims = {"N": 3, "I": 4, "O": 5}
    assert judge(_np_affine(_np_affine_backward), dims) is None
    text = judge(_np_affine(_np_affine_backward_memory_order), dims)
    assert text.startswith("the gradient of x changes when the upstream gradient is a transposed view")


# -- the upstream gradient expanded: one value, stride 0 (the gradient of y.sum()) -------

class ScaleRows(torch.autograd.Function):
    """y = x · w (w broadcast over rows); ``wrong`` scales grad_output in place."""

    wrong = False

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, go):
        x, w = ctx.saved_tensors
        gw = (go * x).sum(0)
        return (go.mul_(w) if ScaleRows.wrong else go * w), gw


@pytest.fixture
def scale_rows():
    yield op_model(ScaleRows, name="scale_rows", dims={"N": Dim(1, 6, 3), "C": Dim(1, 6, 4)},
                   inputs={"x": ("N", "C"), "w": ("C",)}, reference=lambda x, w: x * w)
    ScaleRows.wrong = False


def test_a_function_writing_into_grad_output_raises_when_it_is_expanded(scale_rows):
    assert judge(scale_rows, {"N": 3, "C": 4}) is None
    ScaleRows.wrong = True
    text = judge(scale_rows, {"N": 3, "C": 4})
    assert text.startswith("backward raised RuntimeError: unsupported operation: more than one element of the "
                           "written-to tensor refers to a single memory location")
    assert "when the upstream gradient is an expanded view of one value (at " in text


def test_a_backward_with_a_shortcut_for_broadcast_gradients_is_wrong_when_g_is_expanded():
    def backward(p, d, c, g):
        if g.stride() == (0, 0):          # "a broadcast comes from y.mean()": a shortcut, wrong for y.sum()
            g = g / g.numel()
        return {"w": d.x.T @ g}

    text = judge(_matmul(backward), {"N": 3, "I": 4, "O": 5})
    assert text.startswith("the gradient of w changes when the upstream gradient is an expanded view of one value")
    assert text.endswith("does the backward write into g, or depend on its strides?")


# -- the upstream gradient a strided slice (1-D: no other layout) ----------------------

def _scale_forward(p, d):
    return p.w * d.x, None


def _scale(backward):
    return Model(name="scale", dims={"N": Dim(1, 8, 6)}, params={"w": ("N",)}, data={"x": ("N",)},
                 forward=_scale_forward, backward=backward)


def test_a_backward_reading_a_vector_g_as_contiguous_storage_fails_when_g_is_a_strided_slice():
    assert judge(_scale(lambda p, d, c, g: {"w": g * d.x}), {"N": 6}) is None
    text = judge(_scale(lambda p, d, c, g: {"w": torch.as_strided(g, g.shape, (1,)) * d.x}), {"N": 6})
    assert text.startswith("the gradient of w changes when the upstream gradient is a strided slice (max error ")


class Cube(torch.autograd.Function):
    """y = x³; ``wrong`` reads grad_output's storage as a raw kernel would."""

    wrong = False

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, go):
        (x,) = ctx.saved_tensors
        return (stored(go) if Cube.wrong else go) * 3 * x ** 2


@pytest.fixture
def cube():
    yield op_model(Cube, name="cube", dims={"N": Dim(1, 8, 5)}, inputs={"x": ("N",)}, reference=lambda x: x ** 3)
    Cube.wrong = False


def test_a_function_reading_grad_output_storage_fails_when_it_is_a_strided_slice(cube):
    assert judge(cube, {"N": 5}) is None
    Cube.wrong = True
    assert judge(cube, {"N": 5}).startswith("the gradient of x changes when the upstream gradient is a strided slice")
    assert judge(cube, {"N": 1}) is None                 # one element: no layout differs


def test_a_tuple_of_outputs_names_the_output_whose_gradient_is_misread():
    def forward(p, d):
        return (d.x @ p.w, (p.w * p.w).sum(0)), None

    def backward(p, d, c, g, wrong=False):
        g0, g1 = g
        g1 = torch.as_strided(g1, g1.shape, (1,)) if wrong else g1
        return {"w": d.x.T @ g0 + 2 * p.w * g1}

    def model(wrong):
        return Model(name="two_outputs", dims={"N": Dim(1, 4, 3), "I": Dim(1, 4, 2), "O": Dim(1, 4, 4)},
                     params={"w": ("I", "O")}, data={"x": ("N", "I")}, forward=forward,
                     backward=lambda p, d, c, g: backward(p, d, c, g, wrong))

    dims = {"N": 3, "I": 2, "O": 4}
    assert judge(model(False), dims) is None
    assert judge(model(True), dims).startswith(
        "the gradient of w changes when the upstream gradient of output 1 is a strided slice")


class SinCos(shipped_kinds.SinCos):
    """Two outputs and a drawn argument k; ``wrong`` reads the second gradient's storage."""

    wrong = False

    @staticmethod
    def backward(ctx, g_sin, g_cos):
        g_cos = stored(g_cos) if SinCos.wrong else g_cos
        return shipped_kinds.SinCos.backward(ctx, g_sin, g_cos)


@pytest.fixture
def sin_cos():
    yield op_model(SinCos, name="sin_cos", dims={"N": Dim(1, 4, 3), "M": Dim(1, 4, 4)}, inputs={"x": ("N", "M")},
                   hyper={"k": (2, 3)}, reference=lambda x, k: (torch.sin(k * x), torch.cos(k * x)))
    SinCos.wrong = False


def test_a_function_with_two_outputs_and_a_drawn_argument(sin_cos):
    assert judge(sin_cos, {"N": 3, "M": 4}) is None
    SinCos.wrong = True
    assert judge(sin_cos, {"N": 3, "M": 4}).startswith(
        "the gradient of x changes when the upstream gradient of output 1 is a transposed view")


def test_a_numpy_layer_with_two_outputs_passes():
    def forward(x, w):
        y = x @ w
        return y, np.tanh(y), (x, w, y)

    def backward(d_y, d_t, cache):
        x, w, y = cache
        dy = d_y + d_t * (1 - np.tanh(y) ** 2)
        return dy @ w.T, x.T @ dy

    m = numpy_model(forward, backward, name="np_two_outputs", dims={"N": Dim(1, 6, 3), "I": Dim(1, 6, 4),
                                                                    "O": Dim(1, 6, 2)},
                    inputs={"x": ("N", "I"), "w": ("I", "O")},
                    reference=lambda x, w: (x @ w, torch.tanh(x @ w)))
    assert judge(m, {"N": 3, "I": 4, "O": 2}) is None


# -- inputs and data non-contiguous ----------------------------------------------------

def _bilinear_forward(p, d):
    return ((d.x @ p.w) * d.t).sum(), None


def _bilinear(backward, forward=_bilinear_forward):
    return Model(name="bilinear", dims={"N": Dim(1, 6, 3), "I": Dim(1, 6, 4), "O": Dim(1, 6, 2)},
                 params={"w": ("I", "O")}, data={"x": ("N", "I"), "t": ("N", "O")},
                 forward=forward, backward=backward)


def test_a_backward_reading_an_input_as_contiguous_storage_fails_when_the_input_is_transposed():
    dims = {"N": 3, "I": 4, "O": 2}
    assert judge(_bilinear(lambda p, d, c, g: {"w": g * d.x.T @ d.t}), dims) is None
    text = judge(_bilinear(lambda p, d, c, g: {"w": g * stored(d.x).T @ d.t}), dims)
    assert text.startswith("the gradient of w changes when x is a transposed view (max error ")


def test_a_forward_reading_an_input_as_contiguous_storage_changes_its_output():
    dims = {"N": 3, "I": 4, "O": 2}
    text = judge(_bilinear(lambda p, d, c, g: {"w": g * d.x.T @ d.t},
                           forward=lambda p, d: (((stored(d.x) @ p.w) * d.t).sum(), None)), dims, out=False)
    assert text.startswith("the forward's output changes when x is a transposed view (max error ")
    assert text.endswith("does the forward read storage as contiguous?")


class SumOfSquares(torch.autograd.Function):
    """Σ x²; ``wrong`` flattens x with .view in its forward."""

    wrong = False

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        flat = x.view(-1) if SumOfSquares.wrong else x.reshape(-1)
        return (flat * flat).sum()

    @staticmethod
    def backward(ctx, go):
        (x,) = ctx.saved_tensors
        return 2 * go * x


@pytest.fixture
def sum_of_squares():
    yield op_model(SumOfSquares, name="sum_of_squares", dims={"N": Dim(1, 5, 3), "D": Dim(1, 5, 4)},
                   inputs={"x": ("N", "D")}, reference=lambda x: (x * x).sum())
    SumOfSquares.wrong = False


def test_a_function_calling_view_on_its_input_raises_when_the_input_is_transposed(sum_of_squares):
    assert judge(sum_of_squares, {"N": 3, "D": 4}) is None
    SumOfSquares.wrong = True
    text = judge(sum_of_squares, {"N": 3, "D": 4})
    assert text.startswith("forward raised RuntimeError: view size is not compatible")
    assert "when x is a transposed view (at " in text


def _np_weighted_forward(x, w):
    return (x @ w).sum(), (x, w)


def _np_weighted_backward(dout, cache, wrong=False):
    x, w = cache
    if wrong:
        x = np.ndarray(x.shape, buffer=x)           # the array's memory, read in C order
    return np.outer(np.ones(x.shape[0]), w) * dout, x.sum(0) * dout


def test_a_numpy_layer_reading_an_input_buffer_as_c_ordered_fails_when_the_input_is_transposed():
    def model(wrong):
        return numpy_model(_np_weighted_forward, lambda dout, cache: _np_weighted_backward(dout, cache, wrong),
                           name="np_weighted", dims={"N": Dim(1, 6, 3), "I": Dim(1, 6, 4)},
                           inputs={"x": ("N", "I"), "w": ("I",)}, reference=lambda x, w: (x @ w).sum())

    assert judge(model(False), {"N": 3, "I": 4}) is None
    text = judge(model(True), {"N": 3, "I": 4})
    assert text.startswith("the gradient of w changes when x is a transposed view")


def test_an_index_tensor_is_a_strided_slice_too():
    def forward(p, d):
        return p.w[d.idx], None

    def backward(p, d, c, g, wrong=False):
        idx = stored(d.idx) if wrong else d.idx
        return {"w": torch.zeros_like(p.w).index_add_(0, idx, g)}

    def model(wrong):
        return Model(name="gather", dims={"V": Dim(2, 8, 5), "N": Dim(1, 8, 6)}, params={"w": ("V",)},
                     data={"idx": ("N",)}, forward=forward, backward=lambda p, d, c, g: backward(p, d, c, g, wrong),
                     factories={"idx": lambda dims, gen, dtype, scale: torch.randint(0, dims["V"], (dims["N"],),
                                                                                     generator=gen)})

    assert judge(model(False), {"V": 5, "N": 6}) is None
    assert judge(model(True), {"V": 5, "N": 6}).startswith("the gradient of w changes when idx is a strided slice")


# -- channels-last, 4-D inputs -----------------------------------------------------------

def _per_channel_forward(p, d):
    return (d.x * p.w[:, None, None]).sum(), None


def _per_channel(backward):
    return Model(name="per_channel", dims={"N": Dim(1, 3, 2), "C": Dim(1, 4, 3), "H": Dim(1, 4, 2),
                                           "W": Dim(1, 4, 3)},
                 params={"w": ("C",)}, data={"x": ("N", "C", "H", "W")}, forward=_per_channel_forward,
                 backward=backward)


def test_a_backward_reading_nchw_storage_fails_when_the_input_is_channels_last():
    dims = {"N": 2, "C": 3, "H": 2, "W": 3}
    assert judge(_per_channel(lambda p, d, c, g: {"w": g * d.x.sum((0, 2, 3))}), dims) is None
    text = judge(_per_channel(lambda p, d, c, g: {"w": g * stored(d.x).sum((0, 2, 3))}), dims)
    assert text.startswith("the gradient of w changes when x is a channels-last view")


def test_a_backward_with_a_wrong_channels_last_branch_fails_there_only():
    def backward(p, d, c, g):
        x = d.x
        if x.is_contiguous(memory_format=torch.channels_last):
            x = x.permute(0, 2, 3, 1)                 # "NHWC kernel": but the sum below still says NCHW
        return {"w": g * x.sum((0, 2, 3))}

    text = judge(_per_channel(backward), {"N": 2, "C": 3, "H": 3, "W": 3})
    assert text.startswith("the gradient of w changes when x is a channels-last view")


def test_a_4d_input_is_also_permuted():
    def backward(p, d, c, g):
        x = d.x
        if x.stride()[1] < x.stride()[2]:             # mistaken for channels-last
            x = stored(x)
        return {"w": g * x.sum((0, 2, 3))}

    text = judge(_per_channel(backward), {"N": 2, "C": 3, "H": 2, "W": 3})
    # channels-last first: stride(1) = 1 there as well
    assert text.startswith("the gradient of w changes when x is a channels-last view")

    def backward_reversed_only(p, d, c, g):
        x = d.x
        if x.stride()[0] < x.stride()[3]:             # only where N's stride is the smallest
            x = stored(x)
        return {"w": g * x.sum((0, 2, 3))}

    text = judge(_per_channel(backward_reversed_only), {"N": 2, "C": 3, "H": 2, "W": 3})
    assert text.startswith("the gradient of w changes when x is a permuted view")


# -- naming: the combined call alone, and a backward that is not reproducible ----------

def test_a_problem_no_single_layout_shows_is_named_with_the_whole_combination():
    def backward(p, d, c, g):
        both = not g.is_contiguous() and not d.x.is_contiguous()
        return {"w": d.x.T @ (stored(g) if both else g)}

    text = judge(_matmul(backward), {"N": 3, "I": 4, "O": 5})
    assert text.startswith("the gradient of w changes when the upstream gradient is a transposed view, "
                           "w is a transposed view and x is a transposed view (max error ")


def test_a_backward_that_gives_another_result_on_every_call_is_not_blamed_on_a_layout():
    calls = itertools.count()
    m = _matmul(lambda p, d, c, g: {"w": d.x.T @ g * (1 + 1e-3 * next(calls))})
    assert judge(m, {"N": 3, "I": 4, "O": 5}) is None      # the checker's repeated-call check reports it


# -- correct models of every kind, in every dtype, stay quiet; the cost -----------------

def test_the_builtin_models_and_correct_kinds_pass(registry):
    for name in ("mlp_relu", "linear_layer", "two_layer_net"):
        m = registry.get(name)
        dims = {k: min(v.high, 7) for k, v in m.dims.items()}
        for dtype in ("float64", "float32"):
            assert judge(m, dims, dtype=dtype) is None, (name, dtype)


def test_a_passing_case_costs_one_forward_and_one_backward_or_three_backwards_where_g_can_be_expanded():
    calls = []

    def forward(p, d):
        calls.append("forward")
        return _matmul_forward(p, d)

    def backward(p, d, c, g):
        calls.append("backward")
        return {"w": d.x.T @ g}

    m = Model(name="counted", dims={"N": Dim(1, 8, 3), "I": Dim(1, 8, 4), "O": Dim(1, 8, 5)},
              params={"w": ("I", "O")}, data={"x": ("N", "I")}, forward=forward, backward=backward)
    assert judge(m, {"N": 3, "I": 4, "O": 5}, calls=calls) is None
    assert calls == ["forward", "backward", "backward", "backward"]      # combined; expanded g and its twin
    assert judge(m, {"N": 1, "I": 4, "O": 1}, calls=calls) is None
    assert calls == ["forward", "backward"]                              # one element of g: nothing to expand
    assert judge(m, {"N": 1, "I": 4, "O": 1}, calls=calls, out=False) is None
    assert calls == ["forward", "forward", "backward"]                   # the case's output, computed again


def test_a_wrong_backward_recorded_as_needing_contiguous_tensors_is_left_alone():
    m = _matmul(lambda p, d, c, g: {"w": d.x.T @ stored(g)})
    assert judge(dataclasses.replace(m, needs_contiguous=True), {"N": 3, "I": 4, "O": 5}) is None


# -- through check_case (the layouts stage, layouts.run, calls layouts.problem) --------

def test_check_case_honours_needs_contiguous_with_a_note():
    # WIRING (layouts.run): a record with needs_contiguous=True skips layouts.problem, and a note names the field
    m = Model(name="contiguous_only", dims={"N": Dim(1, 8, 3), "I": Dim(1, 8, 4), "O": Dim(1, 8, 5)},
              params={"w": ("I", "O")}, data={"x": ("N", "I")}, forward=_matmul_forward,
              backward=lambda p, d, c, g: {"w": d.x.T @ stored(g)}, needs_contiguous=True)
    res = check.check_case(m, Case(m.name, {"N": 3, "I": 4, "O": 5}, "float64", "cpu", 3, 1.0))
    assert res.verdict == check.PASS, res.problems
    assert any("needs_contiguous" in note for note in res.notes), res.notes


def test_check_case_reports_the_layout_as_an_error():
    # WIRING (layouts.run): layouts.problem's message becomes the case's error
    m = _matmul(lambda p, d, c, g: {"w": d.x.T @ stored(g)})
    res = check.check_case(m, Case(m.name, {"N": 3, "I": 4, "O": 5}, "float64", "cpu", 3, 1.0))
    assert res.verdict == check.ERROR
    assert any("when the upstream gradient is a transposed view" in t for t in res.problems), res.problems
