"""Correct backwards that a naive verdict rule fails, and the wrong ones beside them that
must still fail.  Each class is a model of the harness's own: kinks that rounding hides,
forwards that round away their own change, references that are themselves inexact,
all-zero references, backwards that are reproducible only within rounding, overflow in
both gradients, and runs that crash."""
import dataclasses
import itertools
import math

import pytest
import torch

from gradcheck_suite import Case, Dim, Model, check_case
from gradcheck_suite.verdict import oracles, rules
from gradcheck_suite import DISAGREE, ERROR, FAIL, NONDIFF, PASS, SKIPPED
from gradcheck_suite import run_model
from tests.models.verdict_trust import (
    HINGE, KINK_UNDER_LOAD, LOG_SUM, REORDERED, SATURATED_BCE, SATURATED_LSTM, SOFTMAX_DOT, _bce_backward,
    _hinge_backward, _lstm_backward, _randn, _saturated, _set_order_backward)


def at_kink(res) -> bool:
    """A kink found and set aside: the whole case (nothing else to judge), or its kink
    elements while the rest was judged and agrees."""
    return res.verdict == NONDIFF or (res.verdict == PASS and any("kink or tie set aside" in n for n in res.notes))


# -- 1. a kink that rounding hides at the smallest step -------------------------------

@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize("dims", [dict(N=1, I=1, H=1), dict(N=2, I=1, H=2), dict(N=4, I=3, H=3)])
def test_a_kink_hidden_by_rounding_at_the_smallest_step_is_not_a_failure(dims, scale):
    verdicts, kinks = set(), False
    for seed in range(6):
        res = check_case(HINGE, Case(HINGE.name, dims, "float64", "cpu", seed, scale))
        assert res.verdict in (NONDIFF, PASS), (seed, res.verdict, res.problems, res.tensors["w"].worst)
        verdicts.add(res.verdict)
        kinks = kinks or at_kink(res)
    assert NONDIFF in verdicts or kinks   # some seeds put unit 0 on its kink


def test_a_wide_step_across_a_kink_that_a_narrow_step_saw_does_not_decide():
    # found by the nightly sweep: the 1e-2 step straddles the kink that 1e-4 sees, and its
    # central difference happened to land within autograd's tolerance
    case = Case(HINGE.name, {"N": 2, "I": 2, "H": 1}, "float64", "cpu", 17344, 17.78279410038923)
    res = check_case(HINGE, case)
    assert at_kink(res), (res.verdict, res.tensors["w"].worst)


@pytest.mark.parametrize("dims, seed", [({"N": 1, "I": 2, "H": 3}, 238), ({"N": 1, "I": 1, "H": 3}, 9352)])
def test_a_kink_at_tiny_magnitudes_is_seen_at_a_step_that_resolves_it(dims, seed):
    # found by the nightly sweep: rounding taken from magnitudes (the inputs' 1e-3, then the
    # residual's 1e-3) rather than from what they move the output by (1e-6) hid the kink
    case = Case(HINGE.name, dims, "float64", "cpu", seed, 0.001)
    res = check_case(HINGE, case)
    assert at_kink(res), (res.verdict, res.tensors["w"].worst)


def test_a_kink_whose_sides_curve_apart_is_not_settled_by_a_wide_step():
    # found by the nightly sweep: with two samples on opposite sides of the kink, the 1e-4
    # step sees smooth curvature and sides with autograd; 1e-6 and 1e-8 see the kink
    case = Case(HINGE.name, {"N": 2, "I": 2, "H": 1}, "float64", "cpu", 15962, 421.6965034285823)
    res = check_case(HINGE, case)
    assert at_kink(res), (res.verdict, res.tensors["w"].worst)


def test_a_kink_whose_two_sides_slope_alike_is_still_a_kink():
    # found by the nightly sweep: at scale 1e3 the curvature hides a one-sided gap of 1.5% at
    # every step, and the central difference lands between autograd's all-active convention
    # and the mask's all-off one
    case = Case(HINGE.name, {"N": 4, "I": 1, "H": 1}, "float64", "cpu", 852, 1000.0)
    res = check_case(HINGE, case)
    assert at_kink(res), (res.verdict, res.tensors["w"].worst)


def test_a_dropped_factor_beside_the_kink_still_fails():
    bad = dataclasses.replace(HINGE, backward=lambda p, d, c, g: _hinge_backward(p, d, c, g, factor=0.5))
    res = check_case(bad, Case(bad.name, dict(N=4, I=3, H=3), "float64", "cpu", 1, 1e-3))
    assert res.verdict == FAIL and res.failing == ["w"]


@pytest.mark.parametrize("dims, seed, scale", [({"N": 2, "I": 1, "H": 1}, 179, 1e-3),
                                               ({"N": 1, "I": 1, "H": 3}, 6378, 1e3)])
def test_a_unit_on_its_kink_that_no_step_resolves_is_not_a_failure(dims, seed, scale):
    # found by the nightly sweep: at 1e-3 the unit's slope (1e-14) is lost in the rounding of
    # the loss at every step; at 1e3 its curvature outweighs the jump at every step
    res = check_case(HINGE, Case(HINGE.name, dims, "float64", "cpu", seed, scale))
    assert at_kink(res), (res.verdict, res.tensors["w"].worst)


def _loaded(w, a=1.0, k=0.0, q=0.0, c=0.0, backward=None):
    """``kink_under_load`` at fixed values: the jump ``a`` at w = 0, a curvature ``k**2`` on
    its right side and ``q**2`` on both, under an offset ``c`` that the jump cannot move."""
    values = dict(w=w, a=a, k=k, q=q, c=c)
    model = dataclasses.replace(KINK_UNDER_LOAD, make_tensors=lambda dims, gen, dtype, scale: {
        n: torch.full((dims["N"],), float(x), dtype=torch.float64) for n, x in values.items()})
    if backward is not None:
        model = dataclasses.replace(model, backward=backward)
    return check_case(model, Case(model.name, {"N": 1}, "float64", "cpu", 0, 1.0))


@pytest.mark.parametrize("right, both", [(0.8, 1.1), (0.65, 1.5), (0.9, 2.0)])
def test_a_kink_whose_curvature_outweighs_its_jump_at_every_step_is_a_kink(right, both):
    # in units of the jump over the narrowest step: the central difference, pulled by the
    # curvature, lands within autograd's allowance alone, and the one-sided gaps halve as if
    # smooth; the curvature-free gap (Richardson on the signed gaps) keeps the jump
    res = _loaded(0.0, k=(right * 1e8) ** 0.5, q=(both * 1e8) ** 0.5)
    assert at_kink(res) and res.tensors["w"].worst[0].kink, (res.verdict, res.tensors["w"].worst)


def test_a_kink_lost_in_the_rounding_of_a_large_loss_is_a_kink():
    # a jump of 1 under a loss of 1e13: no finite-difference step resolves it; autograd,
    # extrapolated to either side of the element, jumps, and the manual 0 is one side
    res = _loaded(0.0, c=1e13, k=3e3)
    assert at_kink(res), (res.verdict, res.tensors["w"].worst)


@pytest.mark.parametrize("w, k, c", [(0.0, 3e3, 1e13), (0.5, 0.0, 3e12)])
def test_a_wrong_gradient_that_no_step_resolves_still_fails(w, k, c):
    # 10% off under a loss of 1e13 (3e12), beyond its computation floor and within every
    # step's rounding: on the kink, outside what autograd takes on either side; off it,
    # where autograd does not jump at all
    wrong = lambda p, d, r, g: {"w": 1.1 * g * (d.a + 2 * d.k ** 2 * r) * (p.w >= 0)}
    res = _loaded(w, c=c, k=k, backward=wrong)
    assert res.verdict == FAIL and res.failing == ["w"], (res.verdict, res.tensors["w"].worst)


@pytest.mark.parametrize("phi", [
    lambda t: math.exp(3e3 * t), lambda t: math.sin(1e4 * t) + 1e-3 * t, lambda t: 1 / (1 + (10 * t) ** 2),
    lambda t: (1 + t) ** 9 * 1e12, lambda t: t ** 3 * 1e20 + t, lambda t: math.tanh(30 * t + 0.1)])
def test_smooth_curves_are_never_kinks_at_any_step(phi):
    # steep, oscillating, large and cubic smooth curves: the curvature-free gap falls 8-fold
    # (a smooth step much narrower than the step itself is a kink at that step, rightly)
    line = lambda t: (phi(t), abs(phi(t)))
    for h in rules.STEPS:
        est = oracles.estimate(line, h)
        assert not est.kink, (h, est)


# -- 2. a forward that rounds away its own change --------------------------------------

@pytest.mark.parametrize("dims", [dict(N=1, F=1), dict(N=8, F=4)])
def test_a_forward_that_rounds_its_change_away_is_not_a_disagreement(dims):
    res = check_case(SATURATED_BCE, Case(SATURATED_BCE.name, dims, "float64", "cpu", 0, 1.0))
    assert float(SATURATED_BCE.forward(*_tensors(SATURATED_BCE, res.case))[0]) == 0.0   # really rounded away
    assert res.verdict == PASS, (res.verdict, res.problems)


def test_a_wrong_backward_of_the_same_forward_fails_where_it_is_not_saturated():
    """At saturation a doubled gradient of 1e-31 is negligible against the computation;
    off saturation the same bug must fail."""
    def moderate(dims, gen, dtype, scale):
        return {**_saturated(dims, gen, dtype, scale), "w": 0.3 * _randn(gen, dims["F"])}

    bad = dataclasses.replace(SATURATED_BCE, make_tensors=moderate,
                              backward=lambda p, d, c, g: {"w": 2 * _bce_backward(p, d, c, g)["w"]})
    res = check_case(bad, Case(bad.name, dict(N=8, F=4), "float64", "cpu", 0, 1.0))
    assert res.verdict == FAIL and res.failing == ["w"]


def _ste_forward(p, d):
    r = p.w + (torch.sin(p.w) - torch.sin(p.w).detach())   # value is w, autograd says 1 + cos(w)
    return (r * d.x).sum(), None


STRAIGHT_THROUGH = Model(
    name="straight_through", dims={"N": Dim(1, 5, 5)}, params={"w": ("N",)}, data={"x": ("N",)},
    forward=_ste_forward, backward=lambda p, d, c, g: {"w": g * d.x * (1 + torch.cos(p.w))})


def test_a_forward_that_really_ignores_its_input_is_still_a_disagreement():
    res = check_case(STRAIGHT_THROUGH, Case(STRAIGHT_THROUGH.name, {"N": 3}, "float64", "cpu", 0, 1.0))
    assert res.verdict == DISAGREE, (res.verdict, res.problems)
    assert "w" in res.problems[0]


# -- 3. a float64 reference that is itself inexact ------------------------------------

def _lstm_case(seed, scale, **dims):
    return Case(SATURATED_LSTM.name, {"N": dims.get("N", 6), "I": dims.get("I", 5)}, "float64", "cpu", seed, scale)


def test_a_deeply_saturated_lstm_step_passes_in_float64():
    # found by the nightly sweep: at scale 1e3 autograd's s * (1 - s) carries 1.4e-16 on
    # gradients of 5e-15, a scale the largest gradient of the backward shows
    res = check_case(SATURATED_LSTM, _lstm_case(5, 1000.0, N=5, I=3))
    assert res.verdict == PASS, (res.verdict, {n: c.worst[:1] for n, c in res.tensors.items()})


@pytest.mark.parametrize("scale", [1.0, 3.0, 10.0])
def test_a_saturated_lstm_step_passes_in_float64(scale):
    for seed in range(6):
        res = check_case(SATURATED_LSTM, _lstm_case(seed, scale))
        assert res.verdict == PASS, (seed, res.verdict, res.problems, {n: c.worst[:1] for n, c in res.tensors.items()})


def test_one_element_off_by_1e5_relative_in_an_lstm_still_fails():
    def backward(p, d, cache, g):
        out = _lstm_backward(p, d, cache, g)
        out["u"] = out["u"].clone()
        k = int(out["u"].abs().argmax())
        out["u"].view(-1)[k] *= 1 + 1e-5
        return out

    res = check_case(dataclasses.replace(SATURATED_LSTM, backward=backward), _lstm_case(0, 0.3))
    assert res.verdict == FAIL and res.failing == ["u"]


# -- 4. an all-zero reference -----------------------------------------------------------

def test_a_tiny_gradient_against_an_exactly_zero_reference_is_not_a_failure():
    res = check_case(SOFTMAX_DOT, Case(SOFTMAX_DOT.name, {"K": 3}, "float64", "cpu", 0, 1e3))
    assert res.verdict == PASS, (res.verdict, res.tensors["z"].worst)
    worst = res.tensors["z"].worst[0]
    assert worst.autograd == 0.0 and 0 < abs(worst.manual) < 1e-150      # the class really is exercised


@pytest.mark.parametrize("k, seed, scale", [(6, 0, 1e3), (6, 1335, 100.0), (2, 1, 74.98942093324558),
                                           (3, 6, 56.23413251903491), (5, 0, 86.59643233600653),
                                           (5, 2487, 60.42963902381328)])
def test_a_softmax_whose_autograd_cancels_to_zero_passes(k, seed, scale):
    # the last four were found by the nightly sweep: autograd's t_0 - <p, t> cancels to 0,
    # or leaves its rounding (2e-16) on a gradient of 1e-13 to 7e-12; in the last one that
    # rounding drifts smoothly with the jitter, and its second difference alone is ~0
    res = check_case(SOFTMAX_DOT, Case(SOFTMAX_DOT.name, {"K": k}, "float64", "cpu", seed, scale))
    assert res.verdict == PASS, (res.verdict, res.tensors["z"].worst)


POWER = 1300


def _steep_forward(p, d):
    y = p.w ** POWER
    return (y * d.t).sum(), y


def _steep_backward(p, d, y, g):
    return {"w": g * d.t * POWER * p.w ** (POWER - 1)}


def _steep_tensors(dims, gen, dtype, scale):
    # w ~ 1.49: each gradient element moves by 13% when the jitter scales w by 1e-4, and no
    # element is below 1e-3 of the largest (where atol alone would cover a 1e-5 error)
    k = dims["K"]
    return {"w": 1.49 + 0.005 * torch.rand(k, generator=gen, dtype=torch.float64), "t": _randn(gen, k)}


STEEP = Model(name="steep_power", dims={"K": Dim(1, 4, 4)}, params={"w": ("K",)}, data={"t": ("K",)},
              forward=_steep_forward, backward=_steep_backward, make_tensors=_steep_tensors)


def test_a_steep_gradient_off_by_1e5_in_one_element_still_fails():
    """The jitter's first differences must not mask an error in an element whose value
    moves by 13% with the jitter (8 times that is more than the error itself): a fraction
    of the element, or a constant."""
    case = Case(STEEP.name, {"K": 3}, "float64", "cpu", 0, 1.0)
    assert check_case(STEEP, case).verdict == PASS
    from gradcheck_suite.check.case import build
    p, d = build(STEEP, case)
    constant = float(1e-5 * _steep_backward(p, d, None, 1.0)["w"][1].abs())

    def relative(p, d, y, g):
        gw = _steep_backward(p, d, y, g)["w"].clone()
        gw[1] *= 1 + 1e-5
        return {"w": gw}

    def shifted(p, d, y, g):
        gw = _steep_backward(p, d, y, g)["w"].clone()
        gw[1] += constant * g
        return {"w": gw}

    for backward in (relative, shifted):
        res = check_case(dataclasses.replace(STEEP, backward=backward), case)
        assert res.verdict == FAIL and res.failing == ["w"], (backward.__name__, res.verdict, res.tensors["w"].worst)
        assert res.tensors["w"].worst[0].index == (1,)


def test_a_wrong_softmax_backward_still_fails_at_every_scale():
    bad = dataclasses.replace(SOFTMAX_DOT, backward=lambda p, d, prob, g: {"z": g * prob * d.t})
    for scale in (1e-3, 1.0):
        res = check_case(bad, Case(bad.name, {"K": 4}, "float64", "cpu", 0, scale))
        assert res.verdict == FAIL and res.failing == ["z"], scale


# -- 5. reentrancy that is only bitwise --------------------------------------------------

def test_a_backward_reproducible_only_within_rounding_passes_with_a_note():
    m = dataclasses.replace(REORDERED, backward=_set_order_backward())
    res = check_case(m, Case(m.name, {"N": 40, "F": 8}, "float64", "cpu", 3, 1.0))
    assert res.verdict == PASS, (res.verdict, res.problems)
    assert any("bitwise" in n for n in res.notes), res.notes


def test_a_backward_that_keeps_state_beyond_rounding_is_an_error():
    calls = itertools.count()

    def backward(p, d, cache, g):
        return {"w": g * 2 * p.w * (d.x * d.x.sum(dim=1, keepdim=True)).sum(dim=0) * (1 + 1e-6 * next(calls))}

    m = dataclasses.replace(REORDERED, backward=backward)
    res = check_case(m, Case(m.name, {"N": 5, "F": 3}, "float64", "cpu", 3, 1.0))
    assert res.verdict == ERROR
    assert "another result when called twice" in res.problems[0] and "w" in res.problems[0]


# -- 6. non-finite gradients in both -----------------------------------------------------

def test_overflow_in_both_gradients_is_set_aside_and_said_plainly():
    res = check_case(LOG_SUM, Case(LOG_SUM.name, {"N": 3}, "float16", "cpu", 0, 1.0))
    assert res.verdict == SKIPPED, (res.verdict, res.problems)
    text = " ".join(res.notes)
    assert "w" in text and "not finite" in text and "set aside" in text
    assert "custom autograd Function" not in text


def test_a_wrong_gradient_beside_an_overflow_still_fails():
    bad = dataclasses.replace(LOG_SUM, backward=lambda p, d, c, g: {"w": g / p.w},
                              make_tensors=lambda dims, gen, dtype, scale: {
                                  "w": torch.tensor([1e-5, 0.5, 2.0][: dims["N"]], dtype=torch.float64)},
                              forward=lambda p, d: ((p.w.log() * torch.tensor([1.0, 1.0, 3.0][: p.w.numel()],
                                                                               dtype=p.w.dtype)).sum(), None))
    res = check_case(bad, Case(bad.name, {"N": 3}, "float16", "cpu", 0, 1.0))
    assert res.verdict == FAIL and res.failing == ["w"]


# -- 7. crashes --------------------------------------------------------------------------

def test_a_flaky_run_is_an_error_on_its_model_with_hypothesis_words(monkeypatch, registry):
    from hypothesis.errors import Flaky

    from gradcheck_suite.run import limits

    def flaky(model, case):
        raise Flaky("Inconsistent results: the test failed once and passed on a rerun")

    monkeypatch.setattr(limits, "check_case", flaky)
    run = run_model(registry.get("affine_scalar"), examples=5)
    assert run.verdict == "error"
    assert any(p.startswith("flaky:") for p in run.problems), run.problems


def test_a_forward_that_raises_a_step_away_is_an_error_naming_the_forward():
    def forward(p, d):
        if bool((p.w <= 1.0).any()):
            raise ValueError("w must stay above 1")
        return p.w.log().sum(), None

    m = Model(name="edge_of_domain", dims={"N": Dim(1, 3, 3)}, params={"w": ("N",)}, forward=forward,
              backward=lambda p, d, c, g: {"w": g / p.w},
              make_tensors=lambda dims, gen, dtype, scale: {"w": torch.full((dims["N"],), 1.0 + 1e-7, dtype=torch.float64)})
    res = check_case(m, Case(m.name, {"N": 2}, "float64", "cpu", 0, 1.0))
    assert res.verdict == ERROR
    assert res.problems[0].startswith("forward raised ValueError: w must stay above 1")
    assert "finite differences" in res.problems[0]


def _tensors(model, case):
    from gradcheck_suite.check.case import build
    return build(model, case)


def _exp_forward(p, d):
    y = torch.exp(p.w * d.x)      # the gradient reaching w * x is ~1e283
    return (y * d.t).sum(), y


EXP_HUGE = Model(name="exp_huge", dims={"K": Dim(1, 4, 4)}, params={"w": ("K",)}, data={"x": ("K",), "t": ("K",)},
                 forward=_exp_forward, backward=lambda p, d, y, g: {"w": g * d.t * d.x * y},
                 make_tensors=lambda dims, gen, dtype, scale: {
                     "w": 650 + torch.rand(dims["K"], generator=gen, dtype=torch.float64),
                     "x": torch.ones(dims["K"], dtype=torch.float64), "t": _randn(gen, dims["K"])})


def test_gradients_near_1e283_keep_a_finite_tolerance():
    """The computation floor squared the backward's scale (8 eps * 1e283) and overflowed:
    every bound became inf and any error passed."""
    case = Case(EXP_HUGE.name, {"K": 3}, "float64", "cpu", 0, 1.0)
    res = check_case(EXP_HUGE, case)
    assert res.verdict == PASS and bool(torch.isfinite(res.tensors["w"].bound).all())

    def wrong(p, d, y, g):
        gw = g * d.t * d.x * y
        gw[0] *= 1 + 1e-5
        return {"w": gw}

    res = check_case(dataclasses.replace(EXP_HUGE, backward=wrong), case)
    assert res.verdict == FAIL and res.failing == ["w"], (res.verdict, res.tensors["w"].worst)


def _tanh_forward(p, d):
    y = torch.tanh(d.x @ p.w)
    return (y * d.t).sum(), y


def _tanh_backward(p, d, y, g):
    return {"w": d.x.T @ (g * d.t * (1 - y ** 2))}


TANH = Model(name="tanh_layer", dims={"N": Dim(1, 8, 8), "I": Dim(1, 8, 8), "O": Dim(1, 8, 8)},
             params={"w": ("I", "O")}, data={"x": ("N", "I"), "t": ("N", "O")},
             forward=_tanh_forward, backward=_tanh_backward)


def test_an_error_that_moves_to_another_element_nearby_still_fails():
    """A 1e-5 error at an element picked by the values' last digits: the jitter's nearby
    points put it elsewhere, so at this element it looks like rounding that moves.  Finite
    differences resolve it and side with autograd."""
    def backward(p, d, y, g):
        gw = _tanh_backward(p, d, y, g)["w"].clone()
        flat = gw.view(-1)
        digits = torch.remainder(p.w.reshape(-1) * 1e6, 1.0)
        qualifies = flat.abs() >= 1e-2 * flat.abs().max()    # not covered by atol (1e-3 of the largest)
        flat[int(torch.where(qualifies, digits, -1.0).argmax())] *= 1 + 1e-5
        return {"w": gw}

    wrong = dataclasses.replace(TANH, backward=backward)
    for seed, scale in itertools.product(range(3), (0.3, 1.0, 3.0)):
        case = Case(TANH.name, {"N": 8, "I": 8, "O": 8}, "float64", "cpu", seed, scale)
        assert check_case(TANH, case).verdict == PASS
        res = check_case(wrong, case)
        assert res.verdict == FAIL and res.failing == ["w"], (seed, scale, res.verdict, res.tensors["w"].worst[:1])
