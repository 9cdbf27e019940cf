"""Code as people ship it, wrapped unchanged: the contracts follow torch's own semantics,
every message speaks of the user's own names, and the harness's own failures never read
as the user's.  One class of wrong verdict per test group, each with models of our own."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradcheck_suite import Case, Dim, Model, check_case, numpy_model, op_model
from gradcheck_suite import ERROR, FAIL, PASS
from gradcheck_suite.run.report import case_message
from gradcheck_suite import run_model
from tests.conftest import flat


def _at(model, dims, seed=3, scale=1.0, dtype=None, hyper=None):
    return Case(model.name, dims, dtype or model.dtype, "cpu", seed, scale,
                hyper if hyper is not None else model.bench_hyper)


# -- 1. needs_input_grad is an optimisation: a gradient for a frozen tensor is a note --------

class AxpyAllGradients(torch.autograd.Function):
    """y = a·x + b; returns every gradient whatever needs_input_grad says (most public code)."""

    @staticmethod
    def forward(ctx, a, x, b):
        ctx.save_for_backward(a, x)
        return a * x + b

    @staticmethod
    def backward(ctx, g):
        a, x = ctx.saved_tensors
        return g * x, g * a, g


_AXPY = dict(dims={"N": Dim(1, 6, 8)}, reference=lambda a, x, b: a * x + b)


def test_a_gradient_for_a_tensor_that_needs_none_is_a_note_not_an_error():
    m = op_model(AxpyAllGradients, name="axpy_all", inputs={"a": ("N",), "b": ("N",)}, data={"x": ("N",)},
                 args=("a", "x", "b"), **_AXPY)
    res = check_case(m, _at(m, {"N": 4}))
    assert res.verdict == PASS, res.problems
    assert any("nobody asked for" in n and "x" in n for n in res.notes), res.notes
    assert run_model(m, examples=8).verdict == "pass"


class AxpyGradForScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, x, k):
        ctx.save_for_backward(a, x)
        ctx.k = k
        return k * a * x

    @staticmethod
    def backward(ctx, g):
        a, x = ctx.saved_tensors
        return g * ctx.k * x, g * ctx.k * a, (g * a * x).sum()     # k is a float: torch raises


def test_a_gradient_for_a_non_tensor_argument_is_an_error_in_the_users_names():
    m = op_model(AxpyGradForScale, name="axpy_k", dims={"N": Dim(1, 6, 8)}, inputs={"a": ("N",), "x": ("N",)},
                 hyper={"k": (2.0,)}, reference=lambda a, x, k: k * a * x)
    res = check_case(m, _at(m, {"N": 4}))
    assert res.verdict == ERROR
    assert "backward returned a gradient for k (argument 3, not a tensor)" in res.problems[0]


class MulGuardSwapped(torch.autograd.Function):
    """The needs_input_grad guards swapped: right when both need a gradient, wrong when one is frozen."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = g * w if ctx.needs_input_grad[1] else None
        gw = g * x if ctx.needs_input_grad[0] else None
        return gx, gw


def test_a_backward_that_breaks_when_an_input_is_frozen_is_an_error_naming_both():
    m = op_model(MulGuardSwapped, name="mul_guard_swapped", dims={"N": Dim(1, 6, 8)},
                 inputs={"x": ("N",), "w": ("N",)}, reference=lambda x, w: x * w)
    res = check_case(m, _at(m, {"N": 4}))
    assert res.verdict == ERROR
    assert "backward gives no gradient for w when x needs no gradient" in res.problems[0]


class MulSavesOnlyWhatIsNeeded(torch.autograd.Function):
    """Saves only what the gradients asked for need, then reads the other one anyway."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(w if ctx.needs_input_grad[0] else None, x if ctx.needs_input_grad[1] else None)
        return x * w

    @staticmethod
    def backward(ctx, g):
        w, x = ctx.saved_tensors
        return g * w, g * x                    # w is None when x needs no gradient


def test_a_backward_that_raises_when_an_input_is_frozen_says_which():
    m = op_model(MulSavesOnlyWhatIsNeeded, name="mul_saves_needed", dims={"N": Dim(1, 6, 8)},
                 inputs={"x": ("N",), "w": ("N",)}, reference=lambda x, w: x * w)
    res = check_case(m, _at(m, {"N": 4}))
    assert res.verdict == ERROR
    assert res.problems[0].startswith("backward raised TypeError: ")
    assert "when x needs no gradient (at " in res.problems[0] and "test_shipped_contracts.py" in res.problems[0]


class BiasKeepdim(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b):
        return x + b

    @staticmethod
    def backward(ctx, g):
        return g, g.sum(0)[:1]                 # one element where b has D


def test_a_gradient_torch_refuses_for_its_shape_is_named_in_the_users_names():
    m = op_model(BiasKeepdim, name="bias_shape", dims={"N": Dim(1, 6, 8), "D": Dim(2, 6, 8)},
                 inputs={"x": ("N", "D"), "b": ("D",)}, reference=lambda x, b: x + b)
    res = check_case(m, _at(m, {"N": 3, "D": 4}))
    assert res.verdict == ERROR
    assert res.problems[0].startswith("b: gradient shape (1,), expected (4,)"), res.problems[0]


# -- 2. wrapper callables: every message in the wrapper's names -------------------------------

class RowNorm(torch.autograd.Function):
    """y = (x - mean) / sqrt(var + eps) * w + b over the last dim; called as (x, shape, w, b, eps)."""

    @staticmethod
    def forward(ctx, x, normalized_shape, w, b, eps):
        mean = x.mean(-1, keepdim=True)
        rstd = (x.var(-1, unbiased=False, keepdim=True) + eps).rsqrt()
        xhat = (x - mean) * rstd
        ctx.save_for_backward(xhat, w, rstd)
        return xhat * w + b

    @staticmethod
    def backward(ctx, dy):
        xhat, w, rstd = ctx.saved_tensors
        n = xhat.shape[-1]
        wdy = w * dy
        c1 = (xhat * wdy).sum(-1, keepdim=True) / n
        c2 = wdy.sum(-1, keepdim=True) / n
        dx = (wdy - (xhat * c1 + c2)) * rstd
        return dx, None, (dy * xhat).reshape(-1, n).sum(0), dy.reshape(-1, n).sum(0), None


class RowNormBiasOnce(RowNorm):
    @staticmethod
    def backward(ctx, dy):
        dx, none, dw, db, eps = RowNorm.backward(ctx, dy)
        return dx, none, dw, dy.reshape(-1, dy.shape[-1])[0], eps     # the bias from the first row only


def _row_norm(fn, name):
    return op_model(lambda x, w, b, eps: fn.apply(x, (x.shape[-1],), w, b, eps), name=name,
                    dims={"M": Dim(1, 5, 8), "D": Dim(1, 6, 8)},
                    inputs={"x": ("M", "D"), "w": ("D",), "b": ("D",)}, hyper={"eps": (1e-5,)},
                    reference=lambda x, w, b, eps: F.layer_norm(x, (x.shape[-1],), w, b, eps))


def test_a_wrapper_whose_arguments_are_not_the_functions_passes_when_right():
    run = run_model(_row_norm(RowNorm, "row_norm"), examples=12)
    assert run.verdict == "pass", run.failure and case_message(run.failure)


def test_a_wrapper_with_a_wrong_gradient_fails_naming_the_wrappers_argument():
    run = run_model(_row_norm(RowNormBiasOnce, "row_norm_bias_once"), examples=12)
    assert run.verdict == "fail"
    assert run.failure.failing == ["b"]
    assert case_message(run.failure).startswith("row_norm_bias_once: fail — the manual gradient of b disagrees")


class CubeAndSlope(torch.autograd.Function):
    """Two outputs, x³ and 3x²; a wrapper keeps the first to itself."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3, 3 * x ** 2

    @staticmethod
    def backward(ctx, g_cube, g_slope):
        (x,) = ctx.saved_tensors
        return g_cube * 3 * x ** 2 + g_slope * 6 * x


class ScaleOnce(torch.autograd.Function):
    """Its saved tensors can be read once (``clear_saved_tensors_on_access``)."""

    clear_saved_tensors_on_access = True

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g * w, g * x


def test_a_wrapper_that_keeps_one_of_the_functions_outputs_passes():
    m = op_model(lambda x: CubeAndSlope.apply(x)[0], name="cube_only", dims={"N": Dim(1, 6, 8)},
                 inputs={"x": ("N",)}, reference=lambda x: x ** 3)
    run = run_model(m, examples=8)
    assert run.verdict == "pass", run.failure and case_message(run.failure)


def test_saved_tensors_that_reading_uses_up_are_left_unread():
    m = op_model(ScaleOnce, name="scale_once", dims={"N": Dim(1, 6, 8)}, inputs={"x": ("N",), "w": ("N",)},
                 reference=lambda x, w: x * w)
    run = run_model(m, examples=8)
    assert run.verdict == "pass", run.failure and case_message(run.failure)


class Straight(torch.autograd.Function):
    """Rounding with a straight-through gradient: the identity, on purpose."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


class StraightHalved(Straight):
    @staticmethod
    def backward(ctx, g):
        return g / 2


def _straight(fn, name, **fields):
    return op_model(fn, name=name, dims={"N": Dim(1, 6, 8)}, inputs={"x": ("N",)},
                    reference=lambda x: x + (torch.round(x) - x).detach(), **fields)


def test_a_surrogate_gradient_is_checked_against_its_reference_alone():
    run = run_model(_straight(Straight, "straight", surrogate=True), examples=8)
    assert run.verdict == "pass", run.failure and case_message(run.failure)
    run = run_model(_straight(StraightHalved, "straight_halved", surrogate=True), examples=8)
    assert run.verdict == "fail" and run.failure.failing == ["x"]


def test_a_surrogate_gradient_without_the_flag_is_an_error_that_says_how_to_mark_it():
    run = run_model(_straight(Straight, "straight_unmarked"), examples=8)
    assert run.verdict == "error"
    assert "set surrogate=True" in flat(case_message(run.failure))


def test_a_surrogate_without_a_reference_is_a_record_error():
    from gradcheck_suite import SpecError
    with pytest.raises(SpecError, match="surrogate"):
        Model(name="bad_surrogate", dims={"N": Dim(1, 6, 8)}, params={"w": ("N",)}, surrogate=True,
              forward=lambda p, d: (p.w, None), backward=lambda p, d, c, g: {"w": g})


class RowNormBiasGuardCopied(RowNorm):
    @staticmethod
    def backward(ctx, dy):
        dx, none, dw, db, eps = RowNorm.backward(ctx, dy)
        return dx, none, dw, db if ctx.needs_input_grad[2] else None, eps    # [2] is the weight's; [3] the bias's


def test_a_wrapper_whose_needs_guard_is_wrong_is_told_in_the_wrappers_names():
    m = _row_norm(RowNormBiasGuardCopied, "row_norm_guard")
    res = check_case(m, _at(m, {"M": 2, "D": 3}))
    assert res.verdict == ERROR
    assert res.problems[0].startswith("backward gives no gradient for b when w needs no gradient"), res.problems[0]


# -- 3. a custom op that saves None; the harness's own failures ------------------------------

@torch.library.custom_op("gradcheck_tests::muladd", mutates_args=())
def muladd(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    return a * b + c


def _muladd_setup(ctx, inputs, output):
    a, b, _ = inputs
    ctx.save_for_backward(b if ctx.needs_input_grad[0] else None, a if ctx.needs_input_grad[1] else None)


def _muladd_backward(ctx, g):
    b, a = ctx.saved_tensors
    return (None if b is None else g * b), (None if a is None else g * a), None


muladd.register_autograd(_muladd_backward, setup_context=_muladd_setup)


def _muladd_model():
    return op_model(muladd, name="muladd", dims={"N": Dim(1, 6, 8)}, inputs={"a": ("N",), "b": ("N",)},
                    hyper={"c": (0.5, 2.0)}, reference=lambda a, b, c: a * b + c)


def test_a_custom_op_that_saves_none_for_an_input_needing_no_gradient_passes():
    run = run_model(_muladd_model(), examples=8)
    assert run.verdict == "pass", run.failure and case_message(run.failure)


def test_the_harness_own_failure_says_so_with_its_traceback(monkeypatch):
    from gradcheck_suite.kinds import op

    monkeypatch.setattr(op, "same_values", None)     # the harness's own code now raises TypeError
    m = _muladd_model()
    res = check_case(m, _at(m, {"N": 3}))
    assert res.verdict == ERROR and res.internal
    assert res.problems[0].startswith("internal error in gradcheck-suite")
    assert "not your model's fault" in res.problems[0]
    message = case_message(res)
    assert "traceback (gradcheck-suite's own):" in message and "kinds/op.py" in message.replace("\\", "/")


def test_an_exception_in_the_users_backward_is_still_the_users():
    class Raises(RowNorm):
        @staticmethod
        def backward(ctx, dy):
            raise ValueError("my mistake")

    m = _row_norm(Raises, "raises")
    res = check_case(m, _at(m, {"M": 2, "D": 3}))
    assert res.verdict == ERROR and not res.internal
    assert "raised ValueError: my mistake" in res.problems[0] and "test_shipped_contracts.py" in res.problems[0]


# -- 4. the reference is the noisy side: rounding inside a fused op ---------------------------

@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_a_fused_reference_at_normalised_size_one_passes_an_exact_manual_gradient(scale):
    m = _row_norm(RowNorm, "row_norm")
    for seed in range(6):
        res = check_case(m, _at(m, {"M": 3, "D": 1}, seed=seed, scale=scale))
        assert res.verdict == PASS, (seed, res.verdict, case_message(res))


class RowNormOneElementOff(RowNorm):
    @staticmethod
    def backward(ctx, dy):
        dx, none, dw, db, eps = RowNorm.backward(ctx, dy)
        dx = dx.clone()
        dx.view(-1)[-1] *= 1 + 1e-5                   # a relative error of 1e-5 in one element
        return dx, none, dw, db, eps


def test_a_relative_error_of_1e5_in_one_element_behind_a_fused_reference_still_fails():
    m = _row_norm(RowNormOneElementOff, "row_norm_off")
    for scale in (1e-3, 1.0, 1e3):
        res = check_case(m, _at(m, {"M": 3, "D": 5}, scale=scale))
        assert res.verdict == FAIL and res.failing == ["x"], (scale, res.verdict, res.notes)


# -- 5. numpy backwards that write into dout; torch ones that write into g --------------------

def relu_forward(x):
    return np.maximum(0, x), x


def relu_backward(dout, cache):
    dx, x = dout, cache
    dx[x <= 0] = 0                                       # course style: writes into dout
    return dx


def gate_forward(x, c):
    """Two outputs and a cache: h = tanh(c + x), c_next = c + x."""
    c_next = c + x
    return np.tanh(c_next), c_next, c_next


def gate_backward(dh, dc, cache):
    dc += dh * (1 - np.tanh(cache) ** 2)                 # cs231n's LSTM style: into the upstream gradient
    return dc, dc.copy()


def test_numpy_backwards_that_write_into_dout_get_their_own_copy():
    relu = numpy_model(relu_forward, relu_backward, name="np_relu", dims={"N": Dim(1, 8, 8)},
                       inputs={"x": ("N",)}, reference=torch.relu)
    assert run_model(relu, examples=10).verdict == "pass"
    gate = numpy_model(gate_forward, gate_backward, name="np_gate", dims={"N": Dim(1, 6, 8)},
                       inputs={"x": ("N",), "c": ("N",)}, reference=lambda x, c: (torch.tanh(c + x), c + x))
    run = run_model(gate, examples=10)
    assert run.verdict == "pass", run.failure and case_message(run.failure)


def test_a_torch_backward_that_writes_into_g_is_still_an_error():
    def backward(p, d, cache, g):
        return {"w": g.mul_(2 * p.w)}

    m = Model(name="writes_g", dims={"N": Dim(1, 6, 8)}, params={"w": ("N",)},
              forward=lambda p, d: (p.w ** 2, None), backward=backward)
    res = check_case(m, _at(m, {"N": 4}))
    assert res.verdict == ERROR and "changed its input upstream gradient g in place" in res.problems[0]


# -- 6. a kink in every case: the kink elements set aside, not the case ----------------------

def _one_hot_relu(wrong: bool):
    """relu(x @ w1) @ w2 with one-hot rows and no bias: every unit of the other rows sits at 0."""
    def forward(p, d):
        h = d.x @ p.w1
        return torch.relu(h) @ p.w2, h

    def backward(p, d, h, g):
        mask = (h > 0).to(h.dtype)
        gh = (g @ p.w2.T) * (1.0 if wrong else mask)
        return {"w1": d.x.T @ gh, "w2": torch.relu(h).T @ g}

    def x(dims, gen, dtype, scale):
        rows = torch.randint(0, dims["D"], (dims["N"],), generator=gen)
        return F.one_hot(rows, dims["D"]).to(dtype)

    return Model(name="one_hot_relu" + "_no_mask" * wrong, dims={"N": Dim(1, 6, 8), "D": Dim(1, 5, 8),
                                                                  "H": Dim(1, 5, 8)},
                 params={"w1": ("D", "H"), "w2": ("H", 3)}, data={"x": ("N", "D")}, forward=forward,
                 backward=backward, factories={"x": x})


def test_a_unit_on_its_kink_in_every_case_is_set_aside_element_by_element():
    run = run_model(_one_hot_relu(False), examples=20)
    assert run.verdict == "pass", (run.problems, run.failure and case_message(run.failure))
    assert run.checked > 0


def test_a_wrong_backward_among_kinks_still_fails():
    run = run_model(_one_hot_relu(True), examples=20)
    assert run.verdict == "fail" and run.failure.failing == ["w1"]


# -- 7. nothing compared must not pass -------------------------------------------------------

def test_a_tensor_with_no_elements_in_every_case_is_an_error_naming_it():
    m = Model(name="empty_bias", dims={"N": Dim(1, 6, 8)}, params={"w": ("N",), "b": ("N", 0)},
              forward=lambda p, d: ((p.w ** 2).sum() + p.b.sum(), None),
              backward=lambda p, d, c, g: {"w": 2 * g * p.w, "b": torch.zeros_like(p.b)})
    run = run_model(m, examples=6)
    assert run.verdict == "error"
    assert "nothing was compared for b (shape (" in run.problems[0] and ", 0))" in run.problems[0]


# -- API met while wrapping real code --------------------------------------------------------

def conv_forward(x, w, conv_param):
    s, pad = conv_param["stride"], conv_param["pad"]
    xp = np.pad(x, ((0, 0), (pad, pad)))
    k = w.shape[0]
    cols = np.stack([xp[:, i:i + k] for i in range(0, xp.shape[1] - k + 1, s)], axis=1)
    conv_param["calls"] = conv_param.get("calls", 0) + 1      # course code writes into its param dict
    return cols @ w, (cols, w, conv_param, x.shape)


def conv_backward(dout, cache):
    cols, w, conv_param, shape = cache
    s, pad, k = conv_param["stride"], conv_param["pad"], w.shape[0]
    dcols = dout[..., None] * w
    dxp = np.zeros((shape[0], shape[1] + 2 * pad))
    for j in range(cols.shape[1]):
        dxp[:, j * s:j * s + k] += dcols[:, j]
    return dxp[:, pad:pad + shape[1]], np.einsum("nj,njk->k", dout, cols)


def _conv_reference(x, w, conv_param):
    xp = F.pad(x, (conv_param["pad"], conv_param["pad"]))
    return F.conv1d(xp[:, None], w[None, None], stride=conv_param["stride"])[:, 0]


def test_dict_hyperparameters_each_call_with_its_own_copy():
    m = numpy_model(conv_forward, conv_backward, name="np_conv", dims={"N": Dim(1, 4, 4), "L": Dim(3, 8, 8)},
                    inputs={"x": ("N", "L"), "w": (3,)},
                    hyper={"conv_param": ({"stride": 1, "pad": 1}, {"stride": 2, "pad": 0})},
                    reference=_conv_reference)
    run = run_model(m, examples=10)
    assert run.verdict == "pass", run.failure and case_message(run.failure)
    shown = m.hyper["conv_param"]
    assert all("calls" not in c for c in shown)


def test_a_tuple_hyperparameter_reproduces_from_its_command():
    from gradcheck_suite.check.case import parse_hyper
    m = op_model(lambda x, shape: F.layer_norm(x, shape), name="ln_shape", dims={"N": Dim(1, 4, 4)},
                 inputs={"x": ("N", 4)}, hyper={"shape": ((4,),)}, reference=lambda x, shape: F.layer_norm(x, shape))
    case = _at(m, {"N": 2})
    command = case.command()
    assert "--hyper 'shape=(4,)'" in command
    assert parse_hyper(command.split("--hyper ")[1].split(" ")[0].strip("'")) == {"shape": (4,)}
    assert check_case(m, case).verdict == PASS


@torch.library.custom_op("gradcheck_tests::shifted_square", mutates_args=())
def shifted_square(x: torch.Tensor, *, shift: float) -> torch.Tensor:
    return (x + shift) ** 2


def _shifted_setup(ctx, inputs, keyword_only_inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.shift = keyword_only_inputs["shift"]


shifted_square.register_autograd(lambda ctx, g: 2 * (ctx.saved_tensors[0] + ctx.shift) * g,
                                 setup_context=_shifted_setup)


def test_keyword_only_arguments_of_a_custom_op_go_by_name():
    m = op_model(shifted_square, name="shifted_square", dims={"N": Dim(1, 6, 8)}, inputs={"x": ("N",)},
                 hyper={"shift": (0.5, -1.0)}, reference=lambda x, *, shift: (x + shift) ** 2)
    run = run_model(m, examples=8)
    assert run.verdict == "pass", run.failure and case_message(run.failure)


def test_a_gradient_with_a_kept_dim_gets_a_hint():
    m = Model(name="bias_keepdim", dims={"N": Dim(1, 6, 8), "D": Dim(1, 6, 8)},
              params={"x": ("N", "D"), "b": ("D",)}, forward=lambda p, d: (p.x + p.b, None),
              backward=lambda p, d, c, g: {"x": g, "b": g.sum(0, keepdim=True)})
    res = check_case(m, _at(m, {"N": 3, "D": 4}))
    assert res.verdict == ERROR
    assert res.problems[0] == "b: gradient shape (1, 4), expected (4,): a sum with keepdims?"


class Accumulating:
    """A numpy-ml style layer object: its backward adds into its own gradient store."""

    def __init__(self):
        self.grads = {"w": 0.0}

    def forward(self, x, w):
        self.x = x
        return x * w

    def backward(self, dout):
        self.grads["w"] = self.grads["w"] + (dout * self.x).sum(0)
        return self.grads["w"]


def test_a_layer_object_that_accumulates_gradients_gets_the_documented_pattern():
    def forward(x, w):
        layer = Accumulating()                  # a fresh layer per forward call, as the README shows
        return layer.forward(x, w), layer

    def flushed(dout, layer):
        layer.grads["w"] = 0.0                  # ... and its gradients zeroed before each backward
        return layer.backward(dout)

    common = dict(dims={"N": Dim(1, 5, 8), "D": Dim(1, 5, 8)}, inputs={"w": ("D",)}, data={"x": ("N", "D")},
                  reference=lambda x, w: x * w, args=("x", "w"))
    run = run_model(numpy_model(forward, lambda dout, layer: layer.backward(dout), name="np_accumulates",
                                **common), examples=6)
    assert run.verdict == "error"          # the same layer's backward, called twice, accumulates
    assert "backward gives another result when called twice" in flat(run.failure.problems[0])
    assert "accumulates gradients" in flat(run.failure.problems[0])
    run = run_model(numpy_model(forward, flushed, name="np_flushed", **common), examples=6)
    assert run.verdict == "pass", run.failure and case_message(run.failure)


# -- a forward that rounds more than its reference, in float32 -------------------------------

class SinhByExps(torch.autograd.Function):
    """sinh as a difference of exps: it cancels near 0, in float32 far more than torch.sinh."""

    @staticmethod
    def forward(ctx, x, off):
        ctx.save_for_backward(x)
        return (torch.exp(x) - torch.exp(-x)) / 2 * off

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (torch.exp(x) + torch.exp(-x)) / 2, None


@pytest.mark.parametrize("off, verdict", [(1.0, "pass"), (1.0 + 1e-2, "fail")])
def test_the_forward_is_allowed_its_own_rounding_against_the_reference(off, verdict):
    m = op_model(SinhByExps, name="sinh_by_exps", dims={"N": Dim(1, 6, 8)}, inputs={"x": ("N",)},
                 hyper={"off": (off,)}, reference=lambda x, off: torch.sinh(x), dtype="float32")
    res = check_case(m, _at(m, {"N": 4}, seed=0, scale=1e-3))
    assert res.verdict == verdict, (res.verdict, case_message(res))
    if verdict == "fail":
        assert res.failing == ["forward"]
