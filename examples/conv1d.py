"""A strided 1-d convolution whose input width is derived from the output length L,
the kernel width K and the stride S: width (L - 1)·S + K, so every drawn case is valid.

y = conv1d(x, w, b, stride=S); loss = Σ y · t.
"""
import torch

from gradcheck_suite import Dim, Model


def forward(p, d, h):
    y = torch.nn.functional.conv1d(d.x, p.w, p.b, stride=h.stride)
    return (y * d.t).sum(), None


def backward(p, d, cache, g, h):
    S, K = h.stride, p.w.shape[2]
    gy = g * d.t                                             # (N, C_out, L)
    windows = d.x.unfold(2, K, S)                            # (N, C_in, L, K): the window under each output
    gw = torch.einsum("nol,nclk->ock", gy, windows)
    gwin = torch.einsum("nol,ock->nclk", gy, p.w)
    gx = torch.zeros_like(d.x)
    L = gy.shape[2]
    for k in range(K):                                       # each tap k touches x at l·S + k
        gx[:, :, k:k + (L - 1) * S + 1:S] += gwin[..., k]
    return {"w": gw, "b": gy.sum(dim=(0, 2)), "x": gx}


model = Model(
    name="conv1d_strided",
    dims={"N": Dim(1, 4, 16), "C_in": Dim(1, 4, 16), "C_out": Dim(1, 4, 32),
          "L": Dim(1, 12, 128), "K": Dim(1, 5, 5)},
    hyper={"stride": Dim(1, 3, 2)},
    params={"w": ("C_out", "C_in", "K"), "b": ("C_out",)},
    data={"x": ("N", "C_in", "(L - 1) * stride + K"), "t": ("N", "C_out", "L")},
    grad_data=("x",),
    forward=forward,
    backward=backward,
)
