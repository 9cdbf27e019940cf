"""Three matrix layers F → H1 → H2 → 1 with biases and the loss (Σ(out − t)²)² / 2.

The backward starts from dL/dout = 2·S·(out − t)·g with S = Σ(out − t)², then chains
linear_layer's rule through each layer in turn.
"""
from gradcheck_suite import Dim, Model
from gradcheck_suite.models.linear_layer import layer_backward


def forward(p, d):
    h1 = d.x @ p.w1 + p.b1
    h2 = h1 @ p.w2 + p.b2
    r = (h2 @ p.w3 + p.b3)[:, 0] - d.t
    s = (r ** 2).sum()
    return s ** 2 / 2, (h1, h2, r, s)


def backward(p, d, cache, g):
    h1, h2, r, s = cache
    gout = (2 * s * g * r)[:, None]
    g2, gw3, gb3 = layer_backward(h2, p.w3, gout)
    g1, gw2, gb2 = layer_backward(h1, p.w2, g2)
    _, gw1, gb1 = layer_backward(d.x, p.w1, g1)
    return {"w1": gw1, "b1": gb1, "w2": gw2, "b2": gb2, "w3": gw3, "b3": gb3}


def _flops(s):
    n, f, h1, h2 = s["N"], s["F"], s["H1"], s["H2"]
    mm = 2 * n * (f * h1 + h1 * h2 + h2)
    biases = n * (h1 + h2 + 1)
    # the backward runs layer_backward for the first layer too, x's gradient included
    return mm + biases + 3 * n + 2, 2 * mm + biases + n + 2


model = Model(
    name="deep_linear",
    dims={"N": Dim(low=1, high=32, bench=5), "F": Dim(low=1, high=8, bench=2),
          "H1": Dim(low=1, high=8, bench=2), "H2": Dim(low=1, high=8, bench=2)},
    params={"w1": ("F", "H1"), "b1": ("H1",), "w2": ("H1", "H2"), "b2": ("H2",), "w3": ("H2", 1), "b3": (1,)},
    data={"x": ("N", "F"), "t": ("N",)},
    forward=forward,
    backward=backward,
    flops=_flops,
    doc=__doc__,
)
