"""Correct backwards that a naive verdict rule fails, and the wrong ones beside them that
must still fail.  Each class is a model of the harness's own: kinks that rounding hides,
forwards that round away their own change, references that are themselves inexact,
all-zero references, backwards that are reproducible only within rounding, overflow in
both gradients, and runs that crash."""
import dataclasses
import itertools

import pytest
import torch

from gradcheck_suite import Case, Dim, Model, check_case
from gradcheck_suite.check import DISAGREE, ERROR, FAIL, NONDIFF, PASS, SKIPPED
from gradcheck_suite.runner import run_model


def _randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


# -- 1. a kink that rounding hides at the smallest step -------------------------------

def _hinge_forward(p, d):
    h = d.x @ p.w
    y = h.clamp(min=0) @ p.v
    return ((y - d.t) ** 2).sum(), (h, y)


def _hinge_backward(p, d, cache, g, *, factor=1.0):
    h, y = cache
    gy = 2 * g * (y - d.t)
    gh = (gy[:, None] * p.v) * (h > 0)        # the mask says 0 at the kink, autograd's clamp says 1
    return {"w": factor * (d.x.T @ gh), "v": h.clamp(min=0).T @ gy}


def _hinge_tensors(dims, gen, dtype, scale):
    w = scale * _randn(gen, dims["I"], dims["H"])
    w[:, 0] = 0.0                              # hidden unit 0 sits on its kink for every sample
    return {"w": w, "v": scale * _randn(gen, dims["H"]), "x": scale * _randn(gen, dims["N"], dims["I"]),
            "t": scale * _randn(gen, dims["N"])}


HINGE = Model(name="hinge_on_kink", dims={"N": Dim(1, 4, 4), "I": Dim(1, 3, 3), "H": Dim(1, 3, 3)},
              params={"w": ("I", "H"), "v": ("H",)}, data={"x": ("N", "I"), "t": ("N",)},
              forward=_hinge_forward, backward=_hinge_backward, make_tensors=_hinge_tensors)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
@pytest.mark.parametrize("dims", [dict(N=1, I=1, H=1), dict(N=2, I=1, H=2), dict(N=4, I=3, H=3)])
def test_a_kink_hidden_by_rounding_at_the_smallest_step_is_not_a_failure(dims, scale):
    for seed in range(4):
        res = check_case(HINGE, Case(HINGE.name, dims, "float64", "cpu", seed, scale))
        assert res.verdict in (NONDIFF, PASS), (seed, res.verdict, res.problems, res.tensors["w"].worst)


def test_a_dropped_factor_beside_the_kink_still_fails():
    bad = dataclasses.replace(HINGE, backward=lambda p, d, c, g: _hinge_backward(p, d, c, g, factor=0.5))
    res = check_case(bad, Case(bad.name, dict(N=4, I=3, H=3), "float64", "cpu", 1, 1e-3))
    assert res.verdict == FAIL and res.failing == ["w"]


# -- 2. a forward that rounds away its own change --------------------------------------

def _bce_forward(p, d):
    prob = torch.sigmoid(d.x @ p.w)
    # the textbook form, not the stable one: log(1 - sigmoid(z)) is exactly 0 for z << 0
    return -(d.y * prob.log() + (1 - d.y) * (1 - prob).log()).sum(), prob


def _bce_backward(p, d, prob, g):
    return {"w": g * (d.x.T @ (prob - d.y))}


def _saturated(dims, gen, dtype, scale):
    x = 1.0 + _randn(gen, dims["N"], dims["F"]).abs()
    w = -70.0 / dims["F"] * (1.0 + 0.01 * _randn(gen, dims["F"]))     # logits around -70
    return {"w": w, "x": x, "y": torch.zeros(dims["N"], dtype=torch.float64)}


SATURATED_BCE = Model(name="saturated_bce", dims={"N": Dim(1, 8, 8), "F": Dim(1, 4, 4)},
                      params={"w": ("F",)}, data={"x": ("N", "F"), "y": ("N",)},
                      forward=_bce_forward, backward=_bce_backward, make_tensors=_saturated)


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

def _lstm_forward(p, d):
    gates = d.x @ p.w + d.h @ p.u
    i, f, o, c_new = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * d.c + torch.sigmoid(i) * torch.tanh(c_new)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h.sum(), (gates, c)


def _lstm_backward(p, d, cache, g):
    gates, c = cache
    i, f, o, c_new = gates.chunk(4, dim=1)

    def dsigmoid(z):                 # sigma(z) sigma(-z): no cancellation where sigma(z) is near 1
        return torch.sigmoid(z) * torch.sigmoid(-z)

    def dtanh(z):                    # 1 / cosh^2: no cancellation where tanh(z) is near 1
        return torch.cosh(z).pow(-2)

    gc = g * torch.sigmoid(o) * dtanh(c)
    gg = torch.cat([gc * torch.tanh(c_new) * dsigmoid(i), gc * d.c * dsigmoid(f),
                    g * torch.tanh(c) * dsigmoid(o), gc * torch.sigmoid(i) * dtanh(c_new)], dim=1)
    return {"w": d.x.T @ gg, "u": d.h.T @ gg}


def _lstm_tensors(dims, gen, dtype, scale):
    n, i, h = dims["N"], dims["I"], dims["H"]
    return {"w": 6.0 * scale * _randn(gen, i, 4 * h), "u": 6.0 * scale * _randn(gen, h, 4 * h),
            "x": 3.0 * _randn(gen, n, i), "h": _randn(gen, n, h), "c": _randn(gen, n, h)}


SATURATED_LSTM = Model(
    name="saturated_lstm", dims={"N": Dim(1, 6, 6), "I": Dim(1, 5, 5), "H": Dim(1, 4, 4), "G": Dim(4, 16, 16)},
    params={"w": ("I", "G"), "u": ("H", "G")}, data={"x": ("N", "I"), "h": ("N", "H"), "c": ("N", "H")},
    forward=_lstm_forward, backward=_lstm_backward, make_tensors=_lstm_tensors,
    doc="one LSTM step; G is the 4H gate columns")


def _lstm_case(seed, scale, **dims):
    n, i, h = dims.get("N", 6), dims.get("I", 5), dims.get("H", 4)
    return Case(SATURATED_LSTM.name, {"N": n, "I": i, "H": h, "G": 4 * h}, "float64", "cpu", seed, scale)


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

def _softmax_forward(p, d):
    prob = torch.softmax(p.z, dim=0)
    return (prob * d.t).sum(), prob


def _softmax_backward(p, d, prob, g):
    # sum_j p_j (t_i - t_j) is t_i - <p, t>, without its cancellation: tiny but not zero
    return {"z": g * prob * (prob[None, :] * (d.t[:, None] - d.t[None, :])).sum(dim=1)}


def _spread_logits(dims, gen, dtype, scale):
    k = dims["K"]
    z = -0.395 * scale * torch.arange(k, dtype=torch.float64)   # at scale 1e3: p = 1, 1e-172, 0, ...
    return {"z": z, "t": _randn(gen, k)}


SOFTMAX_DOT = Model(name="softmax_dot", dims={"K": Dim(1, 6, 6)}, params={"z": ("K",)}, data={"t": ("K",)},
                    forward=_softmax_forward, backward=_softmax_backward, make_tensors=_spread_logits)


def test_a_tiny_gradient_against_an_exactly_zero_reference_is_not_a_failure():
    res = check_case(SOFTMAX_DOT, Case(SOFTMAX_DOT.name, {"K": 3}, "float64", "cpu", 0, 1e3))
    assert res.verdict == PASS, (res.verdict, res.tensors["z"].worst)
    worst = res.tensors["z"].worst[0]
    assert worst.autograd == 0.0 and 0 < abs(worst.manual) < 1e-150      # the class really is exercised


def test_a_wrong_softmax_backward_still_fails_at_every_scale():
    bad = dataclasses.replace(SOFTMAX_DOT, backward=lambda p, d, prob, g: {"z": g * prob * d.t})
    for scale in (1e-3, 1.0):
        res = check_case(bad, Case(bad.name, {"K": 4}, "float64", "cpu", 0, scale))
        assert res.verdict == FAIL and res.failing == ["z"], scale


# -- 5. reentrancy that is only bitwise --------------------------------------------------

def _set_order_backward():
    calls = itertools.count()

    def backward(p, d, cache, g):
        # sums per-sample terms in another order on every call, as a backward over a set does
        terms = list(g * d.x * d.x.sum(dim=1, keepdim=True) * 2)
        if next(calls) % 2:
            terms.reverse()
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return {"w": total * p.w}
    return backward


def _weighted_forward(p, d):
    return ((d.x * d.x.sum(dim=1, keepdim=True)).sum(dim=0) * p.w * p.w).sum(), None


REORDERED = Model(name="reordered_sum", dims={"N": Dim(1, 40, 40), "F": Dim(1, 8, 8)},
                  params={"w": ("F",)}, data={"x": ("N", "F")},
                  forward=_weighted_forward, backward=lambda p, d, c, g: _set_order_backward()(p, d, c, g))


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

LOG_SUM = Model(name="log_sum", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)}, dtype="float16",
                forward=lambda p, d: (p.w.log().sum(), None),
                backward=lambda p, d, c, g: {"w": g / p.w},
                make_tensors=lambda dims, gen, dtype, scale: {
                    "w": 1e-5 * (1 + torch.rand(dims["N"], generator=gen, dtype=torch.float64))})


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

def test_a_flaky_backward_is_reported_on_its_model():
    calls = itertools.count()

    def backward(p, d, cache, g):
        good = {"w": g / p.w}
        return {"w": good["w"] * 2} if next(calls) == 2 else good    # wrong once, then right forever

    m = Model(name="flaky_once", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)}, domain={"w": (0.5, 2.0)},
              forward=lambda p, d: (p.w.log().sum(), None), backward=backward)
    run = run_model(m, examples=10)
    assert run.verdict == "error"
    assert any("flaky" in p.lower() or "did not" in p for p in run.problems), run.problems


def _tensors(model, case):
    from gradcheck_suite.case import build
    return build(model, case)
