"""The custom module TwoLayerNet: linear2(linear1(x)), MSELoss(reduction="sum").

Its forward has no ReLU between the layers, exactly as the module defines it, so the
whole net is affine in x and the backward is two chained linear layers.  torch loads
when the model first runs, so that listing the models does not wait for it.
"""
import functools

from gradcheck_suite import Dim, Model


@functools.cache
def _net():
    from torch import nn

    class TwoLayerNet(nn.Module):
        def __init__(self, d_in: int, h: int, d_out: int):
            super().__init__()
            self.linear1 = nn.Linear(d_in, h)
            self.linear2 = nn.Linear(h, d_out)

        def forward(self, x):
            return self.linear2(self.linear1(x))

    return TwoLayerNet(1, 1, 1)


def _sub(p, prefix):
    return {k.removeprefix(prefix): v for k, v in p.items() if k.startswith(prefix)}


def forward(p, d):
    from torch.func import functional_call

    # TwoLayerNet.forward, a layer at a time so that the hidden output can be cached
    h = functional_call(_net().linear1, _sub(p, "linear1."), (d.x,))
    y = functional_call(_net().linear2, _sub(p, "linear2."), (h,))
    return ((y - d.t) ** 2).sum(), (h, y)


def backward(p, d, cache, g):
    h, y = cache
    gy = 2 * g * (y - d.t)
    gh = gy @ p["linear2.weight"]
    return {"linear1.weight": gh.T @ d.x, "linear1.bias": gh.sum(0),
            "linear2.weight": gy.T @ h, "linear2.bias": gy.sum(0)}


def _flops(s):
    n, i, h, o = s["N"], s["D_in"], s["H"], s["D_out"]
    # the backward has no gradient for x: gy @ W2, ghᵀ @ x and gyᵀ @ h, the two bias sums, gy itself
    return 2 * n * (i * h + h * o) + n * h + 4 * n * o, 2 * n * i * h + 4 * n * h * o + n * h + 3 * n * o


model = Model(
    name="two_layer_net",
    dims={"N": Dim(low=1, high=32, bench=64), "D_in": Dim(low=1, high=40, bench=1000),
          "H": Dim(low=1, high=40, bench=100), "D_out": Dim(low=1, high=12, bench=10)},
    params={"linear1.weight": ("H", "D_in"), "linear1.bias": ("H",),
            "linear2.weight": ("D_out", "H"), "linear2.bias": ("D_out",)},
    data={"x": ("N", "D_in"), "t": ("N", "D_out")},
    dtype="float32",
    forward=forward,
    backward=backward,
    flops=_flops,
    doc=__doc__,
)
