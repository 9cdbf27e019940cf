"""nn.Sequential(Linear, ReLU, Linear) with MSELoss(reduction="sum").

The parameters carry the module's own names ("0.weight", ...), and the forward runs the
module's own layers on them with torch.func.functional_call.  nn.Linear computes x @ Wᵀ + b.
torch loads when the model first runs, so that listing the models does not wait for it.
"""
import functools

from gradcheck_suite import Dim, Model


@functools.cache
def _modules():
    from torch import nn

    return nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1)), nn.MSELoss(reduction="sum")


def forward(p, d):
    from torch.func import functional_call

    net, loss = _modules()
    # the Sequential's own layers, one after another, on the given parameters
    outs = [d.x]
    for i, layer in enumerate(net):
        own = {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith(f"{i}.")}
        outs.append(functional_call(layer, own, (outs[-1],)))
    _, h, a, y = outs
    return loss(y, d.t), (h, a, y)


def backward(p, d, cache, g):
    h, a, y = cache
    gy = 2 * g * (y - d.t)
    gh = (gy @ p["2.weight"]) * (h > 0)
    return {"0.weight": gh.T @ d.x, "0.bias": gh.sum(0), "2.weight": gy.T @ a, "2.bias": gy.sum(0)}


def _flops(s):
    n, i, h, o = s["N"], s["D_in"], s["H"], s["D_out"]
    # the backward has no gradient for x: gy @ W2, ghᵀ @ x and gyᵀ @ a, the mask, the bias sums, gy itself
    return 2 * n * (i * h + h * o) + 2 * n * h + 4 * n * o, 2 * n * i * h + 4 * n * h * o + 3 * n * h + 3 * n * o


model = Model(
    name="mlp_sequential",
    dims={"N": Dim(low=1, high=32, bench=64), "D_in": Dim(low=1, high=40, bench=100),
          "H": Dim(low=1, high=40, bench=100), "D_out": Dim(low=1, high=12, bench=10)},
    params={"0.weight": ("H", "D_in"), "0.bias": ("H",), "2.weight": ("D_out", "H"), "2.bias": ("D_out",)},
    data={"x": ("N", "D_in"), "t": ("N", "D_out")},
    dtype="float32",
    forward=forward,
    backward=backward,
    flops=_flops,
    doc=__doc__,
)
