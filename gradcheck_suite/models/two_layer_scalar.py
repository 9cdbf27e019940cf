"""Two chained scalar affine layers: y = a2·(a1·x + b1) + b2; loss = Σ(y − t)² / 2."""
from gradcheck_suite import Dim, Model


def forward(p, d):
    h = p.a1 * d.x + p.b1
    r = p.a2 * h + p.b2 - d.t
    return (r ** 2).sum() / 2, (h, r)


def backward(p, d, cache, g):
    h, r = cache
    gr = g * r            # dL/dy
    gh = gr * p.a2        # dL/dh
    return {"a2": (gr * h).sum(), "b2": gr.sum(), "a1": (gh * d.x).sum(), "b1": gh.sum()}


model = Model(
    name="two_layer_scalar",
    dims={"N": Dim(low=1, high=16, bench=5)},
    params={"a1": (), "b1": (), "a2": (), "b2": ()},
    data={"x": ("N",), "t": ("N",)},
    forward=forward,
    backward=backward,
    flops=lambda s: (7 * s["N"], 9 * s["N"]),
    doc=__doc__,
)
