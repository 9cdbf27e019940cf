"""A two-layer net in numpy, course style: affine - relu - affine - softmax loss.

Each layer is a forward that returns (out, cache) and a backward that takes
(dout, cache); the net chains them. Labels are class indices in [0, C), made by
their own factory while the other arrays keep the default values.
"""
import numpy as np
import torch

from gradcheck_suite import Dim, numpy_model


def affine_forward(x, w, b):
    return x @ w + b, (x, w)


def affine_backward(dout, cache):
    x, w = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def relu_forward(x):
    return np.maximum(0, x), x


def relu_backward(dout, x):
    return dout * (x > 0)


def softmax_loss(scores, y):
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = scores.shape[0]
    loss = -log_probs[np.arange(n), y].mean()
    dscores = np.exp(log_probs)
    dscores[np.arange(n), y] -= 1
    return loss, dscores / n


def two_layer_forward(x, w1, b1, w2, b2, y):
    h, cache1 = affine_forward(x, w1, b1)
    a, cache_relu = relu_forward(h)
    scores, cache2 = affine_forward(a, w2, b2)
    loss, dscores = softmax_loss(scores, y)
    return loss, (cache1, cache_relu, cache2, dscores)


def two_layer_backward(dout, cache):
    cache1, cache_relu, cache2, dscores = cache
    da, dw2, db2 = affine_backward(dout * dscores, cache2)
    dh = relu_backward(da, cache_relu)
    _, dw1, db1 = affine_backward(dh, cache1)
    return dw1, db1, dw2, db2


def reference(x, w1, b1, w2, b2, y):
    scores = torch.relu(x @ w1 + b1) @ w2 + b2
    return torch.nn.functional.cross_entropy(scores, y)


model = numpy_model(
    two_layer_forward,
    two_layer_backward,
    name="numpy_two_layer",
    dims={"N": Dim(low=1, high=16, bench=64), "D": Dim(low=1, high=12, bench=3072),
          "H": Dim(low=1, high=12, bench=100), "C": Dim(low=1, high=6, bench=10)},
    inputs={"w1": ("D", "H"), "b1": ("H",), "w2": ("H", "C"), "b2": ("C",)},
    data={"x": ("N", "D"), "y": ("N",)},
    args=("x", "w1", "b1", "w2", "b2", "y"),
    factories={"y": lambda dims, gen, dtype, scale: torch.randint(0, dims["C"], (dims["N"],), generator=gen)},
    reference=reference,
)
