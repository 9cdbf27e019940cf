"""Wrong backwards written as people write them, one bug each on a line marked '# BUG',
and correct twins: the yardstick for naming a mistake and its line.

Each wrong backward is a copy of its twin's with one line changed (or, for a line left
out, marked where it should have followed).  ``mistakes`` lists every tensor whose gradient
ends up wrong at the record's bench dims, with the mistake it shows there.  Some bugs vanish
at size 1 (a factor of N, a mean of one row, an axis of a 1 x 1 array, a ReLU mask no
unit falls under): the checks judge them at the bench dims.

The records are kept inside ``BANK`` only, never as top-level names, so that loading this
folder with ``--models-from tests/models`` registers none of these wrong models.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from gradcheck_suite import Dim, Model, numpy_model, op_model


@dataclasses.dataclass(frozen=True)
class Entry:
    model: Model
    mistakes: Mapping[str, str]       # tensor -> expected mistake; empty for a correct twin
    buggy: bool
    backward: Callable                # the hand-written backward that holds the '# BUG' line
    style: str = ""


def bug_line(entry: Entry) -> tuple[str, int] | None:
    """(absolute file path, line number) of the '# BUG' line in the entry's backward, or None
    for a correct twin."""
    if not entry.buggy:
        return None
    fn = inspect.unwrap(entry.backward)
    lines, first = inspect.getsourcelines(fn)
    marked = [first + i for i, line in enumerate(lines) if "# BUG" in line]
    if len(marked) != 1:
        raise ValueError(f"{entry.model.name}: {len(marked)} '# BUG' lines in {fn.__qualname__}")
    return os.path.abspath(inspect.getsourcefile(fn)), marked[0]


# =====================================================================================
# 1. "Learning PyTorch with examples": a two-layer ReLU net with a sum of squares loss
# =====================================================================================

def tut_forward(p, d):
    h = d.x.mm(p.w1)
    h_relu = h.clamp(min=0)
    y_pred = h_relu.mm(p.w2)
    loss = (y_pred - d.y).pow(2).sum()
    return loss, (h, h_relu, y_pred)


def tut_backward(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def tut_backward_residual_reversed(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (d.y - y_pred) * g  # BUG: the residual taken the wrong way round
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def tut_backward_sign_h_relu(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = -grad_y_pred.mm(p.w2.t())  # BUG: a stray minus sign
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def tut_backward_no_mask(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()  # BUG: the ReLU mask grad_h[h < 0] = 0 never follows
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def tut_backward_missing_2(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = (y_pred - d.y) * g  # BUG: the 2 of d(r^2) is missing
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def tut_backward_h_for_h_relu(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h.t().mm(grad_y_pred)  # BUG: h where h_relu was meant
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def tut_backward_no_g(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y)  # BUG: the upstream gradient g is never applied
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


# square weights (x: N x H, w1, w2: H x H, y: N x H), so a transposed product still fits

def tut_backward_w2_transposed(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = grad_y_pred.t().mm(h_relu)  # BUG: the product taken the other way round
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def tut_backward_w2_not_transposed(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(p.w2)  # BUG: w2 where w2.t() was meant
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2}


def tut_backward_swapped(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w2, "w2": grad_w1}  # BUG: the two gradients in each other's place


# with an output bias b2

def tut_bias_forward(p, d):
    h = d.x.mm(p.w1)
    h_relu = h.clamp(min=0)
    y_pred = h_relu.mm(p.w2) + p.b2
    loss = (y_pred - d.y).pow(2).sum()
    return loss, (h, h_relu, y_pred)


def tut_bias_backward(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_b2 = grad_y_pred.sum(0)
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2, "b2": grad_b2}


def tut_bias_backward_mean(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_b2 = grad_y_pred.mean(0)  # BUG: a mean over the batch where the bias adds to every row
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2, "b2": grad_b2}


def tut_bias_backward_placeholder(p, d, cache, g):
    h, h_relu, y_pred = cache
    grad_y_pred = 2.0 * (y_pred - d.y) * g
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_b2 = torch.zeros_like(p.b2)  # BUG: a placeholder never filled in
    grad_h_relu = grad_y_pred.mm(p.w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = d.x.t().mm(grad_h)
    return {"w1": grad_w1, "w2": grad_w2, "b2": grad_b2}


_TUT_DIMS = {"N": Dim(1, 8, 8), "D": Dim(1, 6, 4), "H": Dim(1, 6, 5), "O": Dim(1, 4, 3)}
_TUT_SQUARE_DIMS = {"N": Dim(1, 8, 8), "H": Dim(1, 6, 4)}


def _tut(name: str, backward) -> Model:
    return Model(name=name, dims=_TUT_DIMS, params={"w1": ("D", "H"), "w2": ("H", "O")},
                 data={"x": ("N", "D"), "y": ("N", "O")}, forward=tut_forward, backward=backward)


def _tut_square(name: str, backward) -> Model:
    return Model(name=name, dims=_TUT_SQUARE_DIMS, params={"w1": ("H", "H"), "w2": ("H", "H")},
                 data={"x": ("N", "H"), "y": ("N", "H")}, forward=tut_forward, backward=backward)


def _tut_bias(name: str, backward) -> Model:
    return Model(name=name, dims=_TUT_DIMS, params={"w1": ("D", "H"), "w2": ("H", "O"), "b2": ("O",)},
                 data={"x": ("N", "D"), "y": ("N", "O")}, forward=tut_bias_forward, backward=backward)


# =====================================================================================
# 2. cs231n: numpy layers and a two-layer net, forward -> (out, cache), backward(dout, cache)
# =====================================================================================

def affine_forward(x, w, b):
    out = x.dot(w) + b
    cache = (x, w, b)
    return out, cache


def affine_backward(dout, cache):
    x, w, b = cache
    dx = dout.dot(w.T)
    dw = x.T.dot(dout)
    db = np.sum(dout, axis=0)
    return dx, dw, db


def affine_backward_db_axis(dout, cache):
    x, w, b = cache
    dx = dout.dot(w.T)
    dw = x.T.dot(dout)
    db = np.sum(dout, axis=1)  # BUG: summed over the features, not the batch
    return dx, dw, db


def affine_backward_dw_transposed(dout, cache):
    x, w, b = cache
    dx = dout.dot(w.T)
    dw = dout.T.dot(x)  # BUG: the product taken the other way round
    db = np.sum(dout, axis=0)
    return dx, dw, db


def affine_reference(x, w, b):
    return x @ w + b


def relu_forward(x):
    out = np.maximum(0, x)
    cache = x
    return out, cache


def relu_backward_ignores_dout(dout, cache):
    x = cache
    dx = (x > 0).astype(np.float64)  # BUG: dout is never applied
    return dx


def _affine(name: str, backward, dims, shapes) -> Model:
    x, w, b = shapes
    return numpy_model(affine_forward, backward, name=name, dims=dims,
                       inputs={"x": x, "w": w, "b": b}, reference=affine_reference)


# the two-layer net of TwoLayerNet.loss: affine - relu - affine - softmax, one function each way

def net_forward(X, W1, b1, W2, b2, y):
    N = X.shape[0]
    h = X.dot(W1) + b1
    h_relu = np.maximum(0, h)
    scores = h_relu.dot(W2) + b2
    shifted = scores - np.max(scores, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    probs = np.exp(log_probs)
    loss = -np.sum(log_probs[np.arange(N), y]) / N
    return loss, (X, W1, W2, h, h_relu, probs, y)


def net_backward(dout, cache):
    X, W1, W2, h, h_relu, probs, y = cache
    N = X.shape[0]
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 1
    dscores = dout * dscores / N
    dW2 = h_relu.T.dot(dscores)
    db2 = np.sum(dscores, axis=0)
    dh = dscores.dot(W2.T)
    dh[h <= 0] = 0
    dW1 = X.T.dot(dh)
    db1 = np.sum(dh, axis=0)
    return dW1, db1, dW2, db2


def net_backward_no_mask(dout, cache):
    X, W1, W2, h, h_relu, probs, y = cache
    N = X.shape[0]
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 1
    dscores = dout * dscores / N
    dW2 = h_relu.T.dot(dscores)
    db2 = np.sum(dscores, axis=0)
    dh = dscores.dot(W2.T)  # BUG: the ReLU mask dh[h <= 0] = 0 never follows
    dW1 = X.T.dot(dh)
    db1 = np.sum(dh, axis=0)
    return dW1, db1, dW2, db2


def net_backward_forgot_n(dout, cache):
    X, W1, W2, h, h_relu, probs, y = cache
    N = X.shape[0]
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 1
    dscores = dout * dscores  # BUG: forgot to divide by N
    dW2 = h_relu.T.dot(dscores)
    db2 = np.sum(dscores, axis=0)
    dh = dscores.dot(W2.T)
    dh[h <= 0] = 0
    dW1 = X.T.dot(dh)
    db1 = np.sum(dh, axis=0)
    return dW1, db1, dW2, db2


def net_backward_dw2_n_twice(dout, cache):
    X, W1, W2, h, h_relu, probs, y = cache
    N = X.shape[0]
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 1
    dscores = dout * dscores / N
    dW2 = h_relu.T.dot(dscores) / N  # BUG: divided by N a second time
    db2 = np.sum(dscores, axis=0)
    dh = dscores.dot(W2.T)
    dh[h <= 0] = 0
    dW1 = X.T.dot(dh)
    db1 = np.sum(dh, axis=0)
    return dW1, db1, dW2, db2


def net_backward_swapped(dout, cache):
    X, W1, W2, h, h_relu, probs, y = cache
    N = X.shape[0]
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 1
    dscores = dout * dscores / N
    dW2 = h_relu.T.dot(dscores)
    db2 = np.sum(dscores, axis=0)
    dh = dscores.dot(W2.T)
    dh[h <= 0] = 0
    dW1 = X.T.dot(dh)
    db1 = np.sum(dh, axis=0)
    return dW2, db1, dW1, db2  # BUG: dW1 and dW2 returned in each other's place


def net_reference(X, W1, b1, W2, b2, y):
    scores = torch.relu(X @ W1 + b1) @ W2 + b2
    return F.cross_entropy(scores, y)


def _labels(dims, gen, dtype, scale):
    return torch.randint(0, dims["C"], (dims["N"],), generator=gen)


def _square_labels(dims, gen, dtype, scale):
    return torch.randint(0, dims["H"], (dims["N"],), generator=gen)


def _net(name: str, backward) -> Model:
    return numpy_model(net_forward, backward, name=name,
                       dims={"N": Dim(1, 8, 8), "D": Dim(1, 6, 6), "H": Dim(1, 6, 4), "C": Dim(1, 4, 3)},
                       inputs={"W1": ("D", "H"), "b1": ("H",), "W2": ("H", "C"), "b2": ("C",)},
                       data={"X": ("N", "D"), "y": ("N",)}, args=("X", "W1", "b1", "W2", "b2", "y"),
                       factories={"y": _labels}, reference=net_reference)


def _net_square(name: str, backward) -> Model:
    """W1 and W2 both H x H (and H classes), so that dW1 and dW2 have the same shape."""
    return numpy_model(net_forward, backward, name=name, dims={"N": Dim(1, 8, 5), "H": Dim(1, 6, 4)},
                       inputs={"W1": ("H", "H"), "b1": ("H",), "W2": ("H", "H"), "b2": ("H",)},
                       data={"X": ("N", "H"), "y": ("N",)}, args=("X", "W1", "b1", "W2", "b2", "y"),
                       factories={"y": _square_labels}, reference=net_reference)


# a linear softmax classifier with the bias trick: a column of ones on X, the bias the last row of W,
# L2 regularization on the weights but not on the bias row

REG = 0.5


def softmax_bias_forward(W, X, y):
    N = X.shape[0]
    X1 = np.hstack([X, np.ones((N, 1))])
    scores = X1.dot(W)
    shifted = scores - np.max(scores, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    probs = np.exp(log_probs)
    loss = -np.sum(log_probs[np.arange(N), y]) / N + 0.5 * REG * np.sum(W[:-1] * W[:-1])
    return loss, (W, X1, probs, y)


def softmax_bias_backward(dout, cache):
    W, X1, probs, y = cache
    N = X1.shape[0]
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 1
    dscores /= N
    dW = X1.T.dot(dscores)
    dW[:-1] += REG * W[:-1]
    dW *= dout
    return dW


def softmax_bias_backward_reg_bias(dout, cache):
    W, X1, probs, y = cache
    N = X1.shape[0]
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 1
    dscores /= N
    dW = X1.T.dot(dscores)
    dW += REG * W  # BUG: regularizes the bias row too, which the loss leaves out
    dW *= dout
    return dW


def softmax_bias_reference(W, X, y):
    X1 = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], dim=1)
    return F.cross_entropy(X1 @ W, y) + 0.5 * REG * (W[:-1] ** 2).sum()


def _softmax_bias(name: str, backward) -> Model:
    return numpy_model(softmax_bias_forward, backward, name=name,
                       dims={"N": Dim(1, 8, 5), "D": Dim(1, 6, 3), "C": Dim(1, 5, 4)},
                       inputs={"W": ("D + 1", "C")}, data={"X": ("N", "D"), "y": ("N",)}, args=("W", "X", "y"),
                       factories={"y": _labels}, reference=softmax_bias_reference)


# =====================================================================================
# 3. autograd.Function, checked as it ships
# =====================================================================================

class Sqrt(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        result = torch.sqrt(x)
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad_output):
        (result,) = ctx.saved_tensors
        grad_input = grad_output * 0.5 / result
        return grad_input


class SqrtMissingHalf(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        result = torch.sqrt(x)
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad_output):
        (result,) = ctx.saved_tensors
        grad_input = grad_output / result  # BUG: the 0.5 of d sqrt(x) = 0.5 / sqrt(x) is missing
        return grad_input


class Cos(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.cos(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        grad_input = grad_output * torch.sin(x)  # BUG: d cos(x) is -sin(x)
        return grad_input


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        grad_input = torch.ones_like(x) * 3 * x ** 2  # BUG: grad_output is never used
        return grad_input


class SequenceMask(torch.autograd.Function):
    """Zeroes the padded steps t >= lengths[n] of each row."""

    @staticmethod
    def forward(ctx, x, lengths):
        ctx.save_for_backward(lengths)
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        return x * mask

    @staticmethod
    def backward(ctx, grad_output):
        (lengths,) = ctx.saved_tensors
        T = grad_output.shape[1]
        steps = torch.arange(T, device=grad_output.device)
        mask = steps[None, :] < lengths[:, None]
        grad_input = grad_output * mask
        return grad_input, None


class SequenceMaskOffByOne(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lengths):
        ctx.save_for_backward(lengths)
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        return x * mask

    @staticmethod
    def backward(ctx, grad_output):
        (lengths,) = ctx.saved_tensors
        T = grad_output.shape[1]
        steps = torch.arange(T, device=grad_output.device)
        mask = steps[None, :] <= lengths[:, None]  # BUG: <= lets one padded step through
        grad_input = grad_output * mask
        return grad_input, None


class CausalMaskDiagonal(torch.autograd.Function):
    """Zeroes the future (j > i) of each T x T score matrix."""

    @staticmethod
    def forward(ctx, scores):
        T = scores.shape[-1]
        future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=scores.device), diagonal=1)
        return scores.masked_fill(future, 0.0)

    @staticmethod
    def backward(ctx, grad_output):
        T = grad_output.shape[-1]
        ones = torch.ones(T, T, dtype=torch.bool, device=grad_output.device)
        future = torch.triu(ones, diagonal=0)  # BUG: diagonal=0 masks the present too
        grad_input = grad_output.masked_fill(future, 0.0)
        return grad_input


def _lengths(dims, gen, dtype, scale):
    return torch.randint(0, dims["T"] + 1, (dims["N"],), generator=gen)


def _sequence_mask(name: str, op) -> Model:
    return op_model(op, name=name, dims={"N": Dim(1, 6, 4), "T": Dim(1, 8, 6)}, inputs={"x": ("N", "T")},
                    data={"lengths": ("N",)}, factories={"lengths": _lengths},
                    reference=lambda x, lengths: x * (torch.arange(x.shape[1])[None, :] < lengths[:, None]))


def _causal_reference(scores):
    T = scores.shape[-1]
    return scores * torch.tril(torch.ones(T, T, dtype=scores.dtype))


def _sqrt(name: str, op) -> Model:
    return op_model(op, name=name, dims={"N": Dim(1, 8, 6)}, inputs={"x": ("N",)}, reference=torch.sqrt,
                    domain={"x": (0.0, None)})


# =====================================================================================
# 4. Only some rows, columns or elements wrong; a gradient left at zero
# =====================================================================================

# per-step weights over a sequence, written as the loop over time steps of RNN code

def steps_forward(p, d):
    y = d.x * p.w
    return y, None


def steps_backward(p, d, cache, g):
    T = d.x.shape[1]
    grad_w = torch.zeros_like(p.w)
    grad_x = torch.zeros_like(d.x)
    for t in range(T):
        grad_w[t] = (g[:, t] * d.x[:, t]).sum()
        grad_x[:, t] = g[:, t] * p.w[t]
    return {"w": grad_w, "x": grad_x}


def steps_backward_off_by_one(p, d, cache, g):
    T = d.x.shape[1]
    grad_w = torch.zeros_like(p.w)
    grad_x = torch.zeros_like(d.x)
    for t in range(1, T):  # BUG: off by one, step 0 is never visited
        grad_w[t] = (g[:, t] * d.x[:, t]).sum()
        grad_x[:, t] = g[:, t] * p.w[t]
    return {"w": grad_w, "x": grad_x}


def _steps(name: str, backward) -> Model:
    return Model(name=name, dims={"N": Dim(1, 6, 4), "T": Dim(1, 8, 6)}, params={"w": ("T",)},
                 data={"x": ("N", "T")}, grad_data=("x",), forward=steps_forward, backward=backward)


# first differences along time (a smoothness penalty's inner step)

def diff_forward(p, d):
    diff = p.z[:, 1:] - p.z[:, :-1]
    return diff, None


def diff_backward_copy_paste(p, d, cache, g):
    grad_z = torch.zeros_like(p.z)
    grad_z[:, 1:] += g
    grad_z[:, 1:] -= g  # BUG: copy-paste, the slice should be [:, :-1]
    return {"z": grad_z}


# =====================================================================================

BANK = [
    # -- 1. "Learning PyTorch with examples" -------------------------------------------
    Entry(_tut("bank_tut_ok", tut_backward), {}, False, tut_backward, "tutorial"),
    Entry(_tut("bank_tut_residual_reversed", tut_backward_residual_reversed),
          {"w1": "sign", "w2": "sign"}, True, tut_backward_residual_reversed, "tutorial"),
    Entry(_tut("bank_tut_sign_h_relu", tut_backward_sign_h_relu),
          {"w1": "sign"}, True, tut_backward_sign_h_relu, "tutorial"),
    Entry(_tut("bank_tut_no_mask", tut_backward_no_mask),
          {"w1": "other"}, True, tut_backward_no_mask, "tutorial"),
    Entry(_tut("bank_tut_missing_2", tut_backward_missing_2),
          {"w1": "scale", "w2": "scale"}, True, tut_backward_missing_2, "tutorial"),
    Entry(_tut("bank_tut_h_for_h_relu", tut_backward_h_for_h_relu),
          {"w2": "other"}, True, tut_backward_h_for_h_relu, "tutorial"),
    Entry(_tut("bank_tut_no_g", tut_backward_no_g),
          {"w1": "ignores_upstream", "w2": "ignores_upstream"}, True, tut_backward_no_g, "tutorial"),
    Entry(_tut_square("bank_tut_square_ok", tut_backward), {}, False, tut_backward, "tutorial"),
    Entry(_tut_square("bank_tut_w2_transposed", tut_backward_w2_transposed),
          {"w2": "transpose"}, True, tut_backward_w2_transposed, "tutorial"),
    Entry(_tut_square("bank_tut_w2_not_transposed", tut_backward_w2_not_transposed),
          {"w1": "other"}, True, tut_backward_w2_not_transposed, "tutorial"),
    Entry(_tut_square("bank_tut_swapped", tut_backward_swapped),
          {"w1": "swapped", "w2": "swapped"}, True, tut_backward_swapped, "tutorial"),
    Entry(_tut_bias("bank_tut_bias_ok", tut_bias_backward), {}, False, tut_bias_backward, "tutorial"),
    Entry(_tut_bias("bank_tut_bias_mean", tut_bias_backward_mean),
          {"b2": "scale"}, True, tut_bias_backward_mean, "tutorial"),
    Entry(_tut_bias("bank_tut_bias_placeholder", tut_bias_backward_placeholder),
          {"b2": "zero"}, True, tut_bias_backward_placeholder, "tutorial"),

    # -- 2. cs231n numpy ------------------------------------------------------------------
    # batch size M equal to the output width, so that summing over the wrong axis still fits
    Entry(_affine("bank_np_affine_ok", affine_backward, {"M": Dim(1, 6, 4), "D": Dim(1, 6, 3)},
                  (("M", "D"), ("D", "M"), ("M",))), {}, False, affine_backward, "numpy"),
    Entry(_affine("bank_np_affine_db_axis", affine_backward_db_axis, {"M": Dim(1, 6, 4), "D": Dim(1, 6, 3)},
                  (("M", "D"), ("D", "M"), ("M",))), {"b": "other"}, True, affine_backward_db_axis, "numpy"),
    # w square (D x D), so that the transposed product still fits
    Entry(_affine("bank_np_affine_dw_transposed", affine_backward_dw_transposed,
                  {"N": Dim(1, 6, 5), "D": Dim(1, 6, 4)}, (("N", "D"), ("D", "D"), ("D",))),
          {"w": "transpose"}, True, affine_backward_dw_transposed, "numpy"),
    Entry(numpy_model(relu_forward, relu_backward_ignores_dout, name="bank_np_relu_ignores_dout",
                      dims={"N": Dim(1, 6, 4), "D": Dim(1, 6, 5)}, inputs={"x": ("N", "D")}, reference=torch.relu),
          {"x": "ignores_upstream"}, True, relu_backward_ignores_dout, "numpy"),
    Entry(_net("bank_np_net_ok", net_backward), {}, False, net_backward, "numpy"),
    Entry(_net("bank_np_net_no_mask", net_backward_no_mask),
          {"W1": "other", "b1": "other"}, True, net_backward_no_mask, "numpy"),
    Entry(_net("bank_np_net_forgot_n", net_backward_forgot_n),
          {"W1": "scale", "b1": "scale", "W2": "scale", "b2": "scale"}, True, net_backward_forgot_n, "numpy"),
    Entry(_net("bank_np_net_dw2_n_twice", net_backward_dw2_n_twice),
          {"W2": "scale"}, True, net_backward_dw2_n_twice, "numpy"),
    Entry(_net_square("bank_np_net_swapped", net_backward_swapped),
          {"W1": "swapped", "W2": "swapped"}, True, net_backward_swapped, "numpy"),
    Entry(_softmax_bias("bank_np_softmax_bias_ok", softmax_bias_backward), {}, False, softmax_bias_backward,
          "numpy"),
    Entry(_softmax_bias("bank_np_softmax_reg_bias_row", softmax_bias_backward_reg_bias),
          {"W": "partial"}, True, softmax_bias_backward_reg_bias, "numpy"),

    # -- 3. autograd.Function ---------------------------------------------------------------
    Entry(_sqrt("bank_op_sqrt_ok", Sqrt), {}, False, Sqrt.backward, "function"),
    Entry(_sqrt("bank_op_sqrt_missing_half", SqrtMissingHalf),
          {"x": "scale"}, True, SqrtMissingHalf.backward, "function"),
    Entry(op_model(Cos, name="bank_op_cos_sign", dims={"N": Dim(1, 8, 6)}, inputs={"x": ("N",)},
                   reference=torch.cos), {"x": "sign"}, True, Cos.backward, "function"),
    Entry(op_model(Cube, name="bank_op_cube_ignores_grad", dims={"N": Dim(1, 8, 6)}, inputs={"x": ("N",)},
                   reference=lambda x: x ** 3), {"x": "ignores_upstream"}, True, Cube.backward, "function"),
    Entry(_sequence_mask("bank_op_sequence_mask_ok", SequenceMask), {}, False, SequenceMask.backward, "function"),
    Entry(_sequence_mask("bank_op_sequence_mask_off_by_one", SequenceMaskOffByOne),
          {"x": "partial"}, True, SequenceMaskOffByOne.backward, "function"),
    Entry(op_model(CausalMaskDiagonal, name="bank_op_causal_mask_diagonal",
                   dims={"N": Dim(1, 3, 2), "T": Dim(1, 6, 4)}, inputs={"scores": ("N", "T", "T")},
                   reference=_causal_reference),
          {"scores": "partial"}, True, CausalMaskDiagonal.backward, "function"),

    # -- 4. some rows, columns or elements wrong; a gradient left at zero -------------------
    Entry(_steps("bank_steps_ok", steps_backward), {}, False, steps_backward, "partial"),
    Entry(_steps("bank_steps_off_by_one", steps_backward_off_by_one),
          {"w": "partial", "x": "partial"}, True, steps_backward_off_by_one, "partial"),
    Entry(Model(name="bank_diff_copy_paste", dims={"N": Dim(1, 6, 4), "T": Dim(2, 8, 6)}, params={"z": ("N", "T")},
                forward=diff_forward, backward=diff_backward_copy_paste),
          {"z": "zero"}, True, diff_backward_copy_paste, "partial"),
]

# The correct twins are the file's models for ``--models-from tests/models`` (the nightly sweep):
# each must pass there.  The wrong ones stay inside BANK, where no loader looks.
TWINS = [entry.model for entry in BANK if not entry.buggy]


# =====================================================================================
# 5. The line before the one that shows it: a kernel left unflipped before the convolution
#    and slice that use it, a flip before a slice, a dict filled a line before its return
# =====================================================================================

def conv_forward(p, d):
    y = F.conv1d(d.x, p.w)
    return (y * d.t).sum(), None


def conv_backward(p, d, cache, g):
    K = p.w.shape[2]
    gy = g * d.t
    gw = F.conv1d(F.pad(d.x, (1, 1)).transpose(0, 1), gy.transpose(0, 1)).transpose(0, 1)
    gw = gw[:, :, 1:1 + K]
    kernel = p.w.transpose(0, 1).flip(-1)
    full = F.conv1d(F.pad(gy, (K, K)), kernel)
    gx = full[:, :, 1:1 + d.x.shape[2]]
    return {"w": gw, "x": gx}


def conv_backward_unflipped(p, d, cache, g):
    K = p.w.shape[2]
    gy = g * d.t
    gw = F.conv1d(F.pad(d.x, (1, 1)).transpose(0, 1), gy.transpose(0, 1)).transpose(0, 1)
    gw = gw[:, :, 1:1 + K]
    kernel = p.w.transpose(0, 1)  # BUG: the kernel is not flipped
    full = F.conv1d(F.pad(gy, (K, K)), kernel)
    gx = full[:, :, 1:1 + d.x.shape[2]]
    return {"w": gw, "x": gx}


def conv_backward_flipped_w(p, d, cache, g):
    K = p.w.shape[2]
    gy = g * d.t
    gw = F.conv1d(F.pad(d.x, (1, 1)).transpose(0, 1), gy.transpose(0, 1)).transpose(0, 1)
    gw = gw.flip(-1)  # BUG: the weight's gradient needs no flip
    gw = gw[:, :, 1:1 + K]
    kernel = p.w.transpose(0, 1).flip(-1)
    full = F.conv1d(F.pad(gy, (K, K)), kernel)
    gx = full[:, :, 1:1 + d.x.shape[2]]
    return {"w": gw, "x": gx}


def _conv(name: str, backward) -> Model:
    return Model(name=name, dims={"N": Dim(1, 3, 3), "C": Dim(1, 3, 3), "O": Dim(1, 3, 2), "L": Dim(1, 6, 6),
                                  "K": Dim(2, 4, 3)},
                 params={"w": ("O", "C", "K")}, data={"x": ("N", "C", "L + K - 1"), "t": ("N", "O", "L")},
                 grad_data=("x",), forward=conv_forward, backward=backward)


def square_forward(p, d):
    z = d.x @ p.w
    return F.softplus(z).sum(), z


def square_backward(p, d, z, g):
    gz = g * torch.sigmoid(z)
    grads = {"w": d.x.T @ gz, "x": gz @ p.w.T}
    return grads


def square_backward_untransposed(p, d, z, g):
    gz = g * torch.sigmoid(z)
    grads = {"w": d.x.T @ gz, "x": gz @ p.w}  # BUG: p.w where p.w.T
    return grads


def _square(name: str, backward) -> Model:
    return Model(name=name, dims={"N": Dim(1, 5, 4), "I": Dim(2, 5, 4)}, params={"w": ("I", "I")},
                 data={"x": ("N", "I")}, grad_data=("x",), forward=square_forward, backward=backward)


BANK += [
    Entry(_conv("bank_conv_ok", conv_backward), {}, False, conv_backward, "before"),
    Entry(_conv("bank_conv_unflipped", conv_backward_unflipped), {"x": "other"}, True, conv_backward_unflipped,
          "before"),
    Entry(_conv("bank_conv_flipped_w", conv_backward_flipped_w), {"w": "partial"}, True, conv_backward_flipped_w,
          "before"),
    Entry(_square("bank_square_ok", square_backward), {}, False, square_backward, "before"),
    Entry(_square("bank_square_dict_untransposed", square_backward_untransposed), {"x": "other"}, True,
          square_backward_untransposed, "before"),
]
TWINS = [entry.model for entry in BANK if not entry.buggy]
