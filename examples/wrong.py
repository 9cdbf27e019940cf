"""A deliberately wrong backward: the two-layer ReLU net of ``mlp_relu`` whose backward
forgets the ReLU mask.  It agrees with autograd wherever every hidden unit is on, so a
check at one "typical" case can miss it; hypothesis finds a unit that is off (h < 0).

    gradcheck-suite check mlp_no_mask --models-from examples/wrong.py
"""
from gradcheck_suite import Dim, Model


def forward(p, d):
    h = d.x @ p.w1
    y = h.clamp(min=0) @ p.w2
    return ((y - d.t) ** 2).sum(), (h, y)          # output, cache for the backward


def backward(p, d, cache, g):                      # g: upstream gradient of the output
    h, y = cache
    gy = 2 * g * (y - d.t)
    gh = gy @ p.w2.T                               # wrong: missing `* (h > 0)`
    return {"w1": d.x.T @ gh, "w2": h.clamp(min=0).T @ gy}


model = Model(
    name="mlp_no_mask",
    dims={"N": Dim(low=1, high=8, bench=64), "D_in": Dim(low=1, high=8, bench=1000),
          "H": Dim(low=1, high=8, bench=100), "D_out": Dim(low=1, high=4, bench=10)},
    params={"w1": ("D_in", "H"), "w2": ("H", "D_out")},
    data={"x": ("N", "D_in"), "t": ("N", "D_out")},
    forward=forward,
    backward=backward,
)
