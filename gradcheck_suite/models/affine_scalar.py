"""y = a·x + b with scalar a and b; loss = Σ(y − t)² / 2."""
from gradcheck_suite import Dim, Model


def forward(p, d):
    r = p.a * d.x + p.b - d.t
    return (r ** 2).sum() / 2, r


def backward(p, d, r, g):
    gr = g * r
    return {"a": (gr * d.x).sum(), "b": gr.sum()}


model = Model(
    name="affine_scalar",
    dims={"N": Dim(low=1, high=16, bench=5)},
    params={"a": (), "b": ()},
    data={"x": ("N",), "t": ("N",)},
    forward=forward,
    backward=backward,
    flops=lambda s: (5 * s["N"], 4 * s["N"]),
    doc=__doc__,
)
