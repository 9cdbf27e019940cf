"""y = softplus(x @ w + b), loss = Σ y: the README's example model, benchmarked by
`gradcheck-suite bench --models-from examples/`."""
import torch

from gradcheck_suite import Dim, Model


def forward(p, d):
    z = d.x @ p.w + p.b
    return torch.nn.functional.softplus(z).sum(), z          # output, cache


def backward(p, d, z, g):                                     # g: upstream gradient of the output
    gz = g * torch.sigmoid(z)                                 # stable where exp(z) would overflow
    return {"w": d.x.T @ gz, "b": gz.sum(dim=0), "x": gz @ p.w.T}


model = Model(
    name="softplus_layer",
    dims={"N": Dim(low=1, high=32, bench=64), "I": Dim(low=1, high=24, bench=512),
          "O": Dim(low=1, high=24, bench=256)},
    params={"w": ("I", "O"), "b": ("O",)},
    data={"x": ("N", "I")},
    grad_data=("x",),
    dtype="float64",
    forward=forward,
    backward=backward,
    flops=lambda s: (2 * s["N"] * s["I"] * s["O"], 4 * s["N"] * s["I"] * s["O"]),
)
