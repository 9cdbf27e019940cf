"""Deliberately wrong backwards: each must fail (or error) and name the right parameter."""
import torch

from gradcheck_suite import Case, Dim, Model, check_case
from gradcheck_suite import DISAGREE, ERROR, FAIL
from gradcheck_suite import run_model
from tests.conftest import with_backward


def _mlp_backward(p, d, cache, g, *, mask=True, factor=2.0, upstream=True):
    a, r = cache
    gy = factor * (g if upstream else 1.0) * r
    gh = gy @ p.w2.T
    if mask:
        gh = gh * (a > 0)
    return {"w1": d.x.T @ gh, "w2": a.T @ gy}


# -- wrong everywhere ---------------------------------------------------------------

def test_missing_relu_mask_fails_on_w1_at_the_seed_size(registry, case_of):
    m = registry.get("mlp_relu")
    bad = with_backward(m, lambda p, d, c, g: _mlp_backward(p, d, c, g, mask=False))
    res = check_case(bad, case_of(m, **m.bench_dims, seed=1))
    assert res.verdict == FAIL
    assert res.failing == ["w1"]
    worst = res.tensors["w1"].worst[0]
    # finite differences side with autograd, far from the manual value
    assert abs(worst.finite_diff - worst.autograd) < 1e-3 * abs(worst.autograd)   # across a few ReLU kinks
    assert abs(worst.manual - worst.autograd) > abs(worst.autograd)     # the mask flips or doubles it
    assert res.tensors["w2"].ok


def test_dropped_constant_factor_fails_on_every_parameter(registry):
    m = registry.get("mlp_relu")
    run = run_model(with_backward(m, lambda p, d, c, g: _mlp_backward(p, d, c, g, factor=1.0)), examples=10)
    assert run.verdict == "fail"
    assert sorted(run.failure.failing) == ["w1", "w2"]


def test_ignoring_the_upstream_gradient_fails(registry):
    m = registry.get("mlp_relu")
    run = run_model(with_backward(m, lambda p, d, c, g: _mlp_backward(p, d, c, g, upstream=False)), examples=10)
    assert run.verdict == "fail"
    assert sorted(run.failure.failing) == ["w1", "w2"]


def test_sign_error_names_the_bias(registry):
    m = registry.get("affine_scalar")

    def backward(p, d, r, g):
        out = m.backward(p, d, r, g)
        return {"a": out["a"], "b": -out["b"]}

    run = run_model(with_backward(m, backward), examples=10)
    assert run.verdict == "fail"
    assert run.failure.failing == ["b"]
    assert "reproduce: gradcheck-suite check affine_scalar" in _message(run)


def test_transposed_product_is_caught_on_w2(registry):
    m = registry.get("deep_linear")

    def backward(p, d, cache, g):
        out = m.backward(p, d, cache, g)
        out["w2"] = out["w2"].T.contiguous() if out["w2"].shape[0] == out["w2"].shape[1] else out["w2"].T
        return out

    run = run_model(with_backward(m, backward), examples=30)
    assert run.verdict in ("fail", "error")
    assert "w2" in (run.failure.failing or run.failure.problems[0])


# -- wrong only at some shapes -------------------------------------------------------

def test_cal_grad_squeeze_breaks_at_batch_one_and_shrinks_there(registry):
    m = registry.get("linear_layer")

    def backward(p, d, cache, g):  # the seed's squeeze: drops size-1 dimensions
        dx, dw, db = (g @ p.w.T).squeeze(), d.x.T @ g, g.sum(dim=0)
        return {"w": dw, "b": db, "x": dx}

    run = run_model(with_backward(m, backward), examples=30)
    assert run.verdict == "error"
    assert run.failure.case.dims == {"N": 1, "I": 1, "O": 1}
    assert run.failure.problems[0].startswith("x: gradient shape")


def test_remainder_dropped_past_a_block_of_eight_shrinks_to_nine(registry):
    m = registry.get("linear_layer")

    def backward(p, d, cache, g):  # blocks of 8 rows; forgets the rest once there is a block
        n = d.x.shape[0]
        keep = n - n % 8 if n >= 8 else n
        return {"w": d.x[:keep].T @ g[:keep], "b": g.sum(dim=0), "x": g @ p.w.T}

    run = run_model(with_backward(m, backward), examples=60)
    assert run.verdict == "fail"
    assert run.failure.failing == ["w"]
    assert run.failure.case.dims == {"N": 9, "I": 1, "O": 1}


def test_squeeze_in_a_chained_backward_breaks_at_width_one(registry):
    m = registry.get("deep_linear")
    from gradcheck_suite.models.linear_layer import layer_backward

    def backward(p, d, cache, g):
        h1, h2, r, s = cache
        gout = (2 * s * g * r)[:, None]
        g2, gw3, gb3 = layer_backward(h2, p.w3, gout)
        g1, gw2, gb2 = layer_backward(h1, p.w2, g2)
        _, gw1, gb1 = layer_backward(d.x, p.w1, g1.squeeze(1) if g1.shape[1] == 1 else g1)
        return {"w1": gw1, "b1": gb1, "w2": gw2, "b2": gb2, "w3": gw3, "b3": gb3}

    run = run_model(with_backward(m, backward), examples=40)
    assert run.verdict in ("fail", "error")
    assert run.failure.case.dims["H1"] == 1


# -- wrong only at some values -------------------------------------------------------

def _softplus_model():
    from gradcheck_suite import Dim, Model

    def forward(p, d):
        z = d.x @ p.w
        return torch.nn.functional.softplus(z).sum(), z

    def backward(p, d, z, g):  # exp(z) / (1 + exp(z)) overflows to inf/inf = nan
        return {"w": d.x.T @ (g * torch.exp(z) / (1 + torch.exp(z)))}

    return Model(name="softplus_naive", dims={"N": Dim(1, 8, 4), "F": Dim(1, 8, 4)},
                 params={"w": ("F", 1)}, data={"x": ("N", "F")}, forward=forward, backward=backward)


def test_overflow_at_large_magnitudes_is_an_error():
    run = run_model(_softplus_model(), examples=40)
    assert run.verdict == "error"
    assert "NaN or Inf" in run.failure.problems[0] and run.failure.problems[0].startswith("w:")
    assert run.failure.case.scale > 1


# -- slightly wrong ------------------------------------------------------------------

def test_relative_error_of_1e5_in_one_float64_element_fails(registry, case_of):
    m = registry.get("mlp_relu")

    def backward(p, d, cache, g):
        out = m.backward(p, d, cache, g)
        w1 = out["w1"].clone()
        flat = w1.view(-1)
        big = flat.abs() >= 1e-3 * flat.abs().max()
        # the smallest element that qualifies is the hardest to catch
        i = int(torch.where(big, flat.abs(), torch.inf).argmin())
        flat[i] *= 1 + 1e-5
        out["w1"] = w1
        return out

    for scale in (1e-3, 1.0, 1e3):
        res = check_case(with_backward(m, backward), case_of(m, N=16, D_in=24, H=20, D_out=5, seed=3, scale=scale))
        assert res.verdict == FAIL, res.problems
        assert res.failing == ["w1"]


def test_one_element_of_a_32x32_weight_off_by_10_percent_is_located(registry, case_of):
    m = registry.get("mlp_relu")

    def backward(p, d, cache, g):
        out = m.backward(p, d, cache, g)
        w2 = out["w2"].clone()
        w2[17, 5] *= 1.1
        out["w2"] = w2
        return out

    res = check_case(with_backward(m, backward), case_of(m, N=8, D_in=32, H=32, D_out=32, seed=5))
    assert res.verdict == FAIL and res.failing == ["w2"]
    assert res.tensors["w2"].mismatched == 1
    assert res.tensors["w2"].worst[0].index == (17, 5)


# -- wrong contract ------------------------------------------------------------------

def _errs(model, backward, case_of, **dims):
    res = check_case(with_backward(model, backward), case_of(model, seed=2, **dims))
    assert res.verdict == ERROR
    return res.problems[0]


def test_missing_and_extra_gradients(registry, case_of):
    m = registry.get("mlp_relu")
    assert "missing w2" in _errs(m, lambda p, d, c, g: {"w1": m.backward(p, d, c, g)["w1"]}, case_of, N=3, D_in=4, H=5, D_out=2)
    text = _errs(m, lambda p, d, c, g: {**m.backward(p, d, c, g), "x": d.x}, case_of, N=3, D_in=4, H=5, D_out=2)
    assert "unexpected x" in text


def test_wrong_shape_and_dtype(registry, case_of):
    m = registry.get("linear_layer")

    def wrong_shape(p, d, c, g):
        out = m.backward(p, d, c, g)
        return {**out, "b": out["b"][None, :]}

    def wrong_dtype(p, d, c, g):
        out = m.backward(p, d, c, g)
        return {**out, "w": out["w"].float()}

    assert _errs(m, wrong_shape, case_of, N=3, I=4, O=5) == "b: gradient shape (1, 5), expected (5,): a sum with keepdims?"
    assert _errs(m, wrong_dtype, case_of, N=3, I=4, O=5) == "w: gradient dtype float32, expected float64"


def test_changing_an_input_in_place(registry, case_of):
    m = registry.get("linear_layer")

    def scales_g_in_place(p, d, c, g):
        g.mul_(2)
        return m.backward(p, d, c, g)

    def zeroes_x(p, d, c, g):
        out = m.backward(p, d, c, g)
        d.x.zero_()
        return out

    assert "changed its input upstream gradient g in place" in _errs(m, scales_g_in_place, case_of, N=3, I=4, O=5)
    assert "changed its input d.x in place" in _errs(m, zeroes_x, case_of, N=3, I=4, O=5)


def test_a_reference_that_changes_its_input_in_place_is_an_error_naming_it():
    def reference(p, d):            # clamps the data it was given: later steps would see it changed
        return (d.x.clamp_(min=0) @ p.w).sum()

    m = Model(name="clamped", dims={"N": Dim(1, 4, 4), "I": Dim(1, 3, 3)}, params={"w": ("I",)},
              data={"x": ("N", "I")}, forward=lambda p, d: ((d.x.clamp(min=0) @ p.w).sum(), None),
              backward=lambda p, d, c, g: {"w": g * d.x.clamp(min=0).sum(0)}, reference=reference)
    res = check_case(m, Case(m.name, {"N": 3, "I": 2}, "float64", "cpu", 0, 1.0))
    assert res.verdict == ERROR and "the reference changed its input d.x in place" in res.problems[0], res.problems


def test_state_kept_between_calls(registry, case_of):
    m = registry.get("linear_layer")
    calls = []

    def accumulates(p, d, c, g):
        calls.append(1)
        out = m.backward(p, d, c, g)
        return {**out, "b": out["b"] * len(calls)}

    assert "another result when called twice" in _errs(m, accumulates, case_of, N=3, I=4, O=5)


def test_an_exception_in_the_backward_is_reported_not_raised(registry, case_of):
    m = registry.get("linear_layer")

    def broken(p, d, c, g):
        return {"w": d.x.T @ g.T}

    text = _errs(m, broken, case_of, N=3, I=4, O=5)
    assert text.startswith("backward raised RuntimeError") and "test_catches_bugs.py" in text


def test_a_forward_with_a_wrong_custom_function_makes_the_oracles_disagree(case_of):
    from gradcheck_suite import Dim, Model

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x * g  # wrong: autograd now disagrees with the forward's own slope

    m = Model(name="custom_square", dims={"N": Dim(1, 6, 4)}, params={"w": ("N",)},
              forward=lambda p, d: (Square.apply(p.w).sum(), None),
              backward=lambda p, d, c, g: {"w": 3 * p.w * g})
    res = check_case(m, case_of(m, N=4))
    assert res.verdict == DISAGREE
    assert "autograd and finite differences disagree on w" in res.problems[0]


def _message(run):
    from gradcheck_suite.run.report import run_details
    return run_details(run)
