"""y = w·x with a scalar weight and no bias; the loss is each sample's squared error.

The output is the vector of per-sample losses (w·x_i − y_i)², so the upstream gradient
g has one entry per sample: dL/dw = Σ_i g_i · 2·x_i·(w·x_i − y_i).
"""
from gradcheck_suite import Dim, Model


def forward(p, d):
    r = p.w * d.x - d.y
    return r ** 2, r


def backward(p, d, r, g):
    return {"w": (g * 2 * d.x * r).sum()}


def make_tensors(dims, gen, dtype, scale):
    # the seed's data lie on y = 2x; the weight starts anywhere
    import torch   # here, not at the top: listing the models does not load torch

    x = scale * torch.randn(dims["N"], generator=gen, dtype=torch.float64)
    noise = 0.1 * scale * torch.randn(dims["N"], generator=gen, dtype=torch.float64)
    w = 2.0 * torch.randn((), generator=gen, dtype=torch.float64)
    return {"w": w, "x": x, "y": 2 * x + noise}


model = Model(
    name="scalar_linear",
    dims={"N": Dim(low=1, high=16, bench=4)},
    params={"w": ()},
    data={"x": ("N",), "y": ("N",)},
    forward=forward,
    backward=backward,
    make_tensors=make_tensors,
    flops=lambda s: (3 * s["N"], 5 * s["N"]),
    train=dict(lr=0.01, loss="sum"),   # seeds 000 and 001; the outputs are per-sample losses
    doc=__doc__,
)
