"""Linear regression y = x @ w + b with F features and O outputs; loss = ½ Σ(y − t)².

With r = y − t:  dw = xᵀ (g·r),  db = Σ_rows (g·r)  (the Aᵀ G rule for a matmul).
"""
from gradcheck_suite import Dim, Model


def forward(p, d):
    r = d.x @ p.w + p.b - d.t
    return 0.5 * (r ** 2).sum(), r


def backward(p, d, r, g):
    gr = g * r
    return {"w": d.x.T @ gr, "b": gr.sum(dim=0, keepdim=True)}


def make_tensors(dims, gen, dtype, scale):
    # the seed's data: x uniform on [0, 20], targets 2x + 3 plus noise; all scaled
    import torch   # here, not at the top: listing the models does not load torch

    n, f, o = dims["N"], dims["F"], dims["O"]
    f64 = torch.float64
    x = 20 * scale * torch.rand((n, f), generator=gen, dtype=f64)
    t = 2 * x.sum(dim=1, keepdim=True).expand(n, o) + 3 * scale + scale * torch.randn((n, o), generator=gen, dtype=f64)
    w = scale * torch.randn((f, o), generator=gen, dtype=f64)
    b = scale * torch.randn((1, o), generator=gen, dtype=f64)
    return {"w": w, "b": b, "x": x, "t": t}


model = Model(
    name="linear_regression",
    dims={"N": Dim(low=1, high=64, bench=32), "F": Dim(low=1, high=12, bench=1), "O": Dim(low=1, high=6, bench=1)},
    params={"w": ("F", "O"), "b": (1, "O")},
    data={"x": ("N", "F"), "t": ("N", "O")},
    forward=forward,
    backward=backward,
    make_tensors=make_tensors,
    flops=lambda s: (2 * s["N"] * s["F"] * s["O"] + 4 * s["N"] * s["O"], 2 * s["N"] * s["F"] * s["O"] + 2 * s["N"] * s["O"]),
    train=dict(lr=1e-4, steps=500, batch="fresh"),   # seed 002: 500 steps of fresh batches of 32
    doc=__doc__,
)
