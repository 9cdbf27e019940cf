"""Correct models for the verdict's hard cases: each one is right, and a naive rule fails
it.  The tests in ``tests/test_verdict_trust.py`` use them (and wrong versions made from
them), and the nightly sweep runs them through the CLI:

    gradcheck-suite check --models-from tests/models --profile nightly
"""
import itertools

import torch

from gradcheck_suite import Dim, Model


def _randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


# -- a kink that rounding hides at the smallest step -----------------------------------

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
    if torch.rand((), generator=gen) < 0.5:
        w[:, 0] = 0.0                          # hidden unit 0 sits on its kink for every sample
    return {"w": w, "v": scale * _randn(gen, dims["H"]), "x": scale * _randn(gen, dims["N"], dims["I"]),
            "t": scale * _randn(gen, dims["N"])}


HINGE = Model(name="hinge_on_kink", dims={"N": Dim(1, 4, 4), "I": Dim(1, 3, 3), "H": Dim(1, 3, 3)},
              params={"w": ("I", "H"), "v": ("H",)}, data={"x": ("N", "I"), "t": ("N",)},
              forward=_hinge_forward, backward=_hinge_backward, make_tensors=_hinge_tensors)


# -- a kink under a large loss: curvature or rounding outweighs its jump at every step ---

def _loaded_forward(p, d):
    r = p.w.clamp(min=0)
    # a jump of a at the kink, a curvature k^2 on its right side, q^2 on both
    return d.c + r * d.a + (r * d.k) ** 2 + (p.w * d.q) ** 2, r


def _loaded_backward(p, d, r, g, *, factor=1.0):
    kinked = (d.a + 2 * d.k ** 2 * r) * (p.w > 0)     # 0 at the kink, where autograd's clamp says a
    return {"w": factor * g * (kinked + 2 * d.q ** 2 * p.w)}


def _loaded_tensors(dims, gen, dtype, scale):
    n = dims["N"]

    def spread(decades):    # log-uniform magnitudes over that many decades, random signs
        return 10 ** (decades * torch.rand(n, generator=gen, dtype=torch.float64)) * _randn(gen, n)

    w = scale * _randn(gen, n)
    w[torch.rand(n, generator=gen) < 0.5] = 0.0       # on the kink
    # the offset up to 1e16 times the slope's effect; the curvatures from 1e-3 to 1e3 per scale
    return {"w": w, "a": _randn(gen, n), "c": scale * spread(16),
            "k": 1e-3 / scale * spread(6), "q": 1e-3 / scale * spread(6)}


KINK_UNDER_LOAD = Model(name="kink_under_load", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)},
                        data={"a": ("N",), "k": ("N",), "q": ("N",), "c": ("N",)},
                        forward=_loaded_forward, backward=_loaded_backward, make_tensors=_loaded_tensors)


# -- a forward that rounds away its own change ------------------------------------------

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



# -- a float64 reference that is itself inexact -----------------------------------------

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
    n, i = dims["N"], dims["I"]
    return {"w": 6.0 * scale * _randn(gen, i, 4 * HIDDEN), "u": 6.0 * scale * _randn(gen, HIDDEN, 4 * HIDDEN),
            "x": 3.0 * _randn(gen, n, i), "h": _randn(gen, n, HIDDEN), "c": _randn(gen, n, HIDDEN)}


HIDDEN = 4
SATURATED_LSTM = Model(
    name="saturated_lstm", dims={"N": Dim(1, 6, 6), "I": Dim(1, 5, 5)},
    params={"w": ("I", 4 * HIDDEN), "u": (HIDDEN, 4 * HIDDEN)},
    data={"x": ("N", "I"), "h": ("N", HIDDEN), "c": ("N", HIDDEN)},
    forward=_lstm_forward, backward=_lstm_backward, make_tensors=_lstm_tensors,
    doc="one LSTM step whose gates saturate; its backward avoids 1 - sigmoid's cancellation")


# -- an all-zero reference -------------------------------------------------------------

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



# -- a backward reproducible only within rounding ---------------------------------------

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
                  forward=_weighted_forward, backward=_set_order_backward())



# -- overflow in both gradients ---------------------------------------------------------

LOG_SUM = Model(name="log_sum", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)}, dtype="float16",
                forward=lambda p, d: (p.w.log().sum(), None),
                backward=lambda p, d, c, g: {"w": g / p.w},
                make_tensors=lambda dims, gen, dtype, scale: {
                    # half the seeds put w where 1 / w overflows float16 (past 65504)
                    "w": (1e-5 if torch.rand((), generator=gen) < 0.5 else 0.5)
                    * (1 + torch.rand(dims["N"], generator=gen, dtype=torch.float64))})


