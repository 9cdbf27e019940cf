"""One matrix layer, out = x @ w + b, checked with the gradient of its input too.

Its backward is the layer-wise rule other models chain: given the layer's input x, the
upstream gradient G of its output and its weight w,

    dx = G @ wᵀ,   dw = xᵀ @ G,   db = Σ_rows G

for every batch size, including 1, and every width, including 1 (no squeeze).
"""
from gradcheck_suite import Dim, Model


def layer_backward(x, w, g):
    """(dx, dw, db) of out = x @ w + b, given the upstream gradient g of out."""
    return g @ w.T, x.T @ g, g.sum(dim=0)


def forward(p, d):
    return d.x @ p.w + p.b, None


def backward(p, d, cache, g):
    dx, dw, db = layer_backward(d.x, p.w, g)
    return {"w": dw, "b": db, "x": dx}


model = Model(
    name="linear_layer",
    dims={"N": Dim(low=1, high=64, bench=64), "I": Dim(low=1, high=48, bench=1000), "O": Dim(low=1, high=48, bench=100)},
    params={"w": ("I", "O"), "b": ("O",)},
    data={"x": ("N", "I")},
    grad_data=("x",),
    forward=forward,
    backward=backward,
    flops=lambda s: (2 * s["N"] * s["I"] * s["O"], 4 * s["N"] * s["I"] * s["O"] + s["N"] * s["O"]),
    doc=__doc__,
)
