"""Two-layer ReLU net: y = relu(x @ w1) @ w2, loss = Σ(y − t)².

The mask (h > 0), read off the cached activation, gives 0 where h is exactly 0, and
autograd's clamp gives 1; both are subgradients, and the harness reports such a point
as non-differentiable, not a failure.
"""
from gradcheck_suite import Dim, Model


def forward(p, d):
    a = (d.x @ p.w1).clamp(min=0)
    r = a @ p.w2 - d.t
    return (r ** 2).sum(), (a, r)


def backward(p, d, cache, g):
    a, r = cache
    gy = (2 * g) * r                  # dL/dy; g is a scalar here, so scale it first
    gh = (gy @ p.w2.T) * (a > 0)      # a > 0 exactly where h = x @ w1 > 0
    return {"w1": d.x.T @ gh, "w2": a.T @ gy}


def _flops(s):
    n, i, h, o = s["N"], s["D_in"], s["H"], s["D_out"]
    return 2 * n * (i * h + h * o) + n * h + 3 * n * o, 2 * n * (i * h + 2 * h * o) + n * h + 3 * n * o


model = Model(
    name="mlp_relu",
    dims={"N": Dim(low=1, high=32, bench=64), "D_in": Dim(low=1, high=40, bench=1000),
          "H": Dim(low=1, high=40, bench=100), "D_out": Dim(low=1, high=12, bench=10)},
    params={"w1": ("D_in", "H"), "w2": ("H", "D_out")},
    data={"x": ("N", "D_in"), "t": ("N", "D_out")},
    forward=forward,
    backward=backward,
    flops=_flops,
    train=dict(lr=1e-6),   # seed 004: randn start and data, lr 1e-6
    doc=__doc__,
)
