"""Higher orders judge against the scale of the computation (check/stages/double_backward.py):
a correct backward whose k-th derivative differs from the reference's by no more than the
reference's own inexactness (a threshold, a linearised tail, a clamp, a ``where``, a function
saturated to rounding) passes at order 2 and 3, in float64 and float32, at scales 1e-3 to 1e3;
a backward whose second or third derivative is wrong by 1e-5 (relative) in one element fails,
naming the tensor."""
import pytest
import torch
import torch.nn.functional as F

from gradcheck_suite import Dim, Model
from gradcheck_suite.check.case import Case
from gradcheck_suite.check.pipeline import check_case

SCALES = (1e-3, 1.0, 10.0, 1e3)


def _elementwise(name: str, reference, derivative, wrong=None) -> Model:
    """loss = sum(t * f(x)), ``f`` the ``reference``; the backward is ``g * t * derivative(x)``,
    in differentiable torch ops, so that every order differentiates it.  ``wrong(x, d)``,
    where given, replaces the derivative's value in element [0, 0] by ``d`` plus an error
    whose own derivatives make order 2 or 3 wrong (see :func:`_bump`)."""
    def forward(p, d):
        return (d.t * reference(p.x)).sum(), None

    def backward(p, d, cache, g):
        dx = derivative(p.x)
        if wrong is not None:
            dx = wrong(p.x, dx)
        return {"x": g * d.t * dx}

    return Model(name=name, dims={"N": Dim(1, 6, 4), "F": Dim(1, 7, 5)}, params={"x": ("N", "F")},
                 data={"t": ("N", "F")}, forward=forward, backward=backward,
                 reference=lambda p, d: (d.t * reference(p.x)).sum())


def _softplus(x):            # torch's: linear above its threshold (20), so flat beyond it from order 2
    return F.softplus(4.0 * x) / 4.0


def _tail(x):                # a user's own: log(1 + e^z) with the tail z > 20 linearised by a where
    z = 4.0 * x
    return torch.where(z > 20, z, torch.log1p(torch.exp(z.clamp(max=20)))) / 4.0


def _clamped_sigmoid(x):     # a sigmoid whose argument is clamped where it saturates
    return torch.sigmoid(x.clamp(-40, 40))


def _sigmoid_derivative(x):  # sigma(x) * sigma(-x): no cancellation, exact in the saturated tails
    return torch.sigmoid(x) * torch.sigmoid(-x)


CORRECT = {
    "softplus_threshold": (_softplus, lambda x: torch.sigmoid(4.0 * x)),
    "softplus_where_tail": (_tail, lambda x: torch.sigmoid(4.0 * x)),
    "sigmoid_clamped": (_clamped_sigmoid, _sigmoid_derivative),
    "sigmoid_saturating": (torch.sigmoid, _sigmoid_derivative),
    "tanh_saturating": (torch.tanh, lambda x: (1 - torch.tanh(x)) * (1 + torch.tanh(x))),
}


def softplus_of_product() -> Model:
    """Two tensors through one threshold, F.softplus(4 x w) / 4: each one's second derivative
    comes from the other's first too (the cross terms), and is flat in the reference where the
    product passes the threshold."""
    def forward(p, d):
        return (d.t * F.softplus(4.0 * p.x * p.w) / 4.0).sum(), None

    def backward(p, d, cache, g):
        s = g * d.t * torch.sigmoid(4.0 * p.x * p.w)
        return {"x": s * p.w, "w": s * p.x}

    return Model(name="softplus_of_product", dims={"N": Dim(1, 6, 4), "F": Dim(1, 7, 5)},
                 params={"x": ("N", "F"), "w": ("N", "F")}, data={"t": ("N", "F")}, forward=forward,
                 backward=backward, reference=lambda p, d: (d.t * F.softplus(4.0 * p.x * p.w) / 4.0).sum())


def _case(model: Model, dims: dict, dtype: str, seed: int, scale: float, order: int) -> Case:
    return Case(model.name, dims, dtype, "cpu", seed, scale, order=order)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CORRECT) + ["softplus_of_product"])
def test_a_correct_backward_of_a_piecewise_or_saturating_reference_passes_at_order_2_and_3(name, dtype):
    model = _elementwise(name, *CORRECT[name]) if name in CORRECT else softplus_of_product()
    for order in (2, 3):
        for scale in SCALES:
            for seed, dims in ((0, {"N": 6, "F": 7}), (1, {"N": 1, "F": 1}), (2, {"N": 5, "F": 3})):
                res = check_case(model, _case(model, dims, dtype, seed, scale, order))
                assert res.verdict == "pass", (order, scale, seed, dims, res.verdict, res.summary, res.problems)


def _bump(order: int, relative: float, kth):
    """An error in element [0, 0] of the first derivative that leaves its value and (at
    order 3) its first derivative as they are, and adds ``relative`` times the reference's
    own k-th derivative there (k = ``order``): ``d + relative * kth(x0) * (x - x0)^(k-1)``."""
    def wrong(x, d):
        x0 = x.detach()[0, 0]
        mask = torch.zeros_like(x)
        mask[0, 0] = 1
        return d + mask * relative * (x - x0) ** (order - 1) * kth(x0)
    return wrong


# f, f', f'', f''': the wrong models add an error relative to the k-th derivative
FUNCTIONS = {
    "sigmoid": (torch.sigmoid, _sigmoid_derivative,
                lambda x: torch.sigmoid(x) * torch.sigmoid(-x) * (1 - 2 * torch.sigmoid(x)),
                lambda x: torch.sigmoid(x) * torch.sigmoid(-x) * (1 - 6 * torch.sigmoid(x) * torch.sigmoid(-x))),
    "sine": (torch.sin, torch.cos, lambda x: -torch.sin(x), lambda x: -torch.cos(x)),
    "cube": (lambda x: x ** 3, lambda x: 3 * x ** 2, lambda x: 6 * x, lambda x: 6 + 0 * x),
}


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_a_second_or_third_derivative_wrong_by_1e_5_in_one_element_fails_naming_the_tensor(function, order):
    f, d1, *kth = FUNCTIONS[function]
    model = _elementwise(f"wrong_{function}{order}", f, d1, _bump(order, 1e-5, kth[order - 2]))
    right = _elementwise(f"{function}{order}", f, d1)
    dims = {"N": 6, "F": 7}
    word = "double backward" if order == 2 else "third derivative"
    for scale in (1e-3, 0.1, 1.0, 3.0):
        for seed in range(2):
            assert check_case(right, _case(right, dims, "float64", seed, scale, order)).verdict == "pass"
            res = check_case(model, _case(model, dims, "float64", seed, scale, order))
            assert res.verdict == "fail", (scale, seed, res.verdict, res.summary)
            assert res.failing and res.failing[0] == f"x ({word})", res.failing
            assert "of x" in res.summary, res.summary
