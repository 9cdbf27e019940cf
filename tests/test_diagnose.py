"""What mistake, and where: each mistake named for a class of models at several shapes,
the first wrong line of the backward found, and nothing guessed where nothing matches."""
import inspect

import numpy as np
import pytest
import torch

from gradcheck_suite import Dim, Model, numpy_model, op_model
from gradcheck_suite.run.report import case_message, case_json
from gradcheck_suite import run_model
from tests.models.diagnosis_bank import tut_backward, tut_forward


def bug_line(fn) -> int:
    lines, start = inspect.getsourcelines(fn)
    return next(start + i for i, text in enumerate(lines) if "# BUG" in text)


# -- a two-layer net in the "learning PyTorch with examples" style: the bank's forward and its
#    right backward (tests/models/diagnosis_bank.py), each wrong backward below one line off it

def sign_w2(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = -h_relu.t().mm(grad_y_pred)                  # BUG: a sign
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def no_two(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = (y_pred - d.y) * g                       # BUG: the 2 of the square left out
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def transposed_w2(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = grad_y_pred.t().mm(h_relu)                   # BUG: the product transposed
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def ones_for_g(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y)                     # BUG: g never multiplied in
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def swapped(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w2, "w2": grad_w1}                  # BUG: returned in each other's place


def first_row_only(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_w2[1:] = 0                                        # BUG: only the first row kept
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def no_mask(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()                           # BUG: the mask below left out
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def _tutorial(backward, square=False, hidden=(1, 6, 6)):
    """``square``: every weight H×H, so that transposed and swapped gradients keep their shapes."""
    d_dim, o_dim = ("H", "H") if square else ("D", "O")
    dims = {"N": Dim(1, 8, 8), "D": Dim(1, 6, 6), "H": Dim(*hidden), "O": Dim(1, 4, 4)}
    if square:
        del dims["O"], dims["D"]
    return Model(name=f"tutorial_{backward.__name__}", dims=dims, params={"w1": (d_dim, "H"), "w2": ("H", o_dim)},
                 data={"x": ("N", d_dim), "y": ("N", o_dim)}, forward=tut_forward, backward=backward)


CASES = [
    (sign_w2, {}, {"w2": "sign"}),
    (no_two, {}, {"w1": "scale", "w2": "scale"}),
    (transposed_w2, {"square": True, "hidden": (2, 6, 6)}, {"w2": "transpose"}),
    (ones_for_g, {}, {"w1": "ignores_upstream", "w2": "ignores_upstream"}),
    (swapped, {"square": True, "hidden": (2, 6, 6)}, {"w1": "swapped", "w2": "swapped"}),
    (first_row_only, {"hidden": (2, 6, 6)}, {"w2": "partial"}),
]


@pytest.mark.parametrize("backward, shape, mistakes", CASES, ids=[c[0].__name__ for c in CASES])
def test_each_kind_is_named_and_the_line_found(backward, shape, mistakes):
    run = run_model(_tutorial(backward, **shape), examples=20)
    assert run.verdict == "fail"
    res = run.failure
    named = {k.tensor: k.mistake for k in res.diagnosis}
    assert named == {n: mistakes[n] for n in res.failing}, (named, res.case.describe())
    assert res.location is not None, res.location_note
    assert (res.location.file, res.location.line) == (__file__, bug_line(backward)), res.location
    message = case_message(res)
    assert "look at: " in message and f":{bug_line(backward)}" in message


def test_a_factor_is_named():
    run = run_model(_tutorial(no_two), examples=20)
    texts = [k.text for k in run.failure.diagnosis]
    assert all("1/2 × autograd (scale ×1/2: a missing ½?)" in t for t in texts), texts
    assert all(k.factor == 0.5 for k in run.failure.diagnosis)


def mean_as_sum_forward(p, d):
    err = d.x.mv(p.w) - d.t
    return (err ** 2).mean(), err


def mean_as_sum_backward(p, d, err, g):
    grad_err = 2 * err * g                                  # BUG: the mean's 1/N left out
    grad_w = d.x.t().mv(grad_err)
    return {"w": grad_w}


def test_a_mean_taken_as_a_sum_is_named_by_its_dim():
    m = Model(name="mean_as_sum", dims={"N": Dim(2, 8, 8), "D": Dim(1, 5, 5)}, params={"w": ("D",)},
              data={"x": ("N", "D"), "t": ("N",)}, forward=mean_as_sum_forward, backward=mean_as_sum_backward)
    res = run_model(m, examples=10).failure
    (mistake,) = res.diagnosis
    n = res.case.dims["N"]
    assert mistake.mistake == "scale" and mistake.factor == pytest.approx(n)
    assert f"×N (N = {n}): a mean taken as a sum?" in mistake.text
    assert res.location.line == bug_line(mean_as_sum_backward)


def test_a_missing_mask_is_other_and_located():
    res = run_model(_tutorial(no_mask), examples=20).failure
    assert {k.mistake for k in res.diagnosis} == {"other"}
    assert res.location is not None and res.location.variable == "grad_h"
    assert res.location.line == bug_line(no_mask) and "the gradient of h" in res.location.expected


def test_a_correct_backward_gets_no_diagnosis():
    run = run_model(_tutorial(tut_backward), examples=20)
    assert run.verdict == "pass" and run.failure is None


# -- numpy, cs231n style -----------------------------------------------------------------------

def affine_relu_forward(x, w, b):
    a = x.dot(w) + b
    out = np.maximum(0, a)
    return out, (x, w, a)


def affine_relu_backward(dout, cache):
    x, w, a = cache
    da = dout * (a > 0)
    dx = da.dot(w.T)
    dw = -x.T.dot(da)                                         # BUG: a sign
    db = da.sum(axis=0)
    return dx, dw, db


def test_a_numpy_layer_is_diagnosed_through_its_reference():
    m = numpy_model(affine_relu_forward, affine_relu_backward, name="np_affine_relu",
                    dims={"N": Dim(1, 6, 6), "D": Dim(1, 5, 5), "M": Dim(1, 4, 4)},
                    inputs={"x": ("N", "D"), "w": ("D", "M"), "b": ("M",)},
                    reference=lambda x, w, b: torch.relu(x @ w + b))
    res = run_model(m, examples=20).failure
    assert [(k.tensor, k.mistake) for k in res.diagnosis] == [("w", "sign")]
    assert res.location is not None, res.location_note
    assert res.location.line == bug_line(affine_relu_backward) and res.location.variable == "dw"


# -- an autograd.Function -------------------------------------------------------------------------

class HalfSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * x * x

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        grad_x = 2 * x * grad_output                          # BUG: the ½ forgotten
        return grad_x


def test_a_function_gets_its_kind_and_its_line():
    m = op_model(HalfSquare, name="half_square", dims={"N": Dim(1, 6, 8)}, inputs={"x": ("N",)},
                 reference=lambda x: 0.5 * x * x)
    res = run_model(m, examples=10).failure
    assert [(k.mistake, k.factor) for k in res.diagnosis] == [("scale", 2.0)]
    assert res.location is not None, res.location_note
    assert res.location.line == bug_line(HalfSquare.backward)


def test_where_nothing_matches_the_report_says_so_and_guesses_nothing():
    def forward(p, d):
        return (p.w ** 3).sum(), None

    def backward(p, d, cache, g):
        return {"w": torch.from_numpy(np.asarray(2 * p.w.numpy() ** 2)) * g}     # one expression, no steps

    m = Model(name="no_steps", dims={"N": Dim(1, 6, 8)}, params={"w": ("N",)}, forward=forward, backward=backward)
    res = run_model(m, examples=10).failure
    assert res.location is None and res.location_note.startswith("could not localise")
    assert "look at" not in case_message(res)
    record = case_json(res)
    assert record["location"] is None and record["location_note"] == res.location_note
    assert record["diagnosis"] == [{"tensor": "w", "mistake": "scale", "kind": "scale", "factor": pytest.approx(2 / 3),
                                    "text": res.diagnosis[0].text, "dims": None}]


# -- the bank: wrong backwards as people write them -------------------------------------------

def test_the_bank_of_wrong_backwards_gets_its_kinds_and_lines():
    from tests.models.diagnosis_bank import BANK, bug_line as marked
    located = named = simple = wrong = 0
    for entry in BANK:
        run = run_model(entry.model, examples=20)
        if not entry.buggy:
            assert run.verdict == "pass" and run.failure is None, entry.model.name
            continue
        wrong += 1
        res = run.failure
        got = {k.tensor: k.mistake for k in res.diagnosis}
        if any(k != "other" for k in entry.mistakes.values()):
            simple += 1
            named += bool(got) and got == {n: entry.mistakes.get(n) for n in got}
        loc = res.location
        located += loc is not None and (loc.file, loc.line) == marked(entry)
    assert wrong >= 15 and named == simple, (named, simple)
    assert located >= 0.9 * wrong, (located, wrong)
