"""Backwards that are wrong only where two dims differ, and their correct twins.

- RMSNorm over the last dim of (B, T, D), whose backward divides by ``shape[0]`` (the
  batch) where it means ``shape[-1]`` (the normalised width): right whenever B == D, so a
  schedule whose equal-ranged dims are always equal (or both 1) never sees it.
- sparsemax over the last dim of (B, T, K), whose backward calls ``.squeeze()`` on the
  per-row sum: wrong only when T is 1 and B is not.  As an ``autograd.Function`` its
  gradient then has shape (B, B, K), which torch's engine sums to the input's (B, 1, K)
  without a word; as a record it is a gradient of the wrong shape.

Each comes as a record and as an ``autograd.Function`` (checked with ``op_model``).
"""
import torch

from gradcheck_suite import Dim, Model, op_model

EPS = 1e-6


# -- RMSNorm: y = x / sqrt(mean(x², last) + eps) * w ------------------------------------------

def rms_forward(x, w):
    r = torch.rsqrt((x * x).mean(-1, keepdim=True) + EPS)
    return x * r * w, r


def rms_backward(x, w, r, g, width):
    """(dx, dw); ``width`` is the size the mean divided by."""
    gh = g * w
    dx = r * gh - x * r ** 3 * (gh * x).sum(-1, keepdim=True) / width
    return dx, (g * x * r).sum((0, 1))


_RMS_DIMS = {"B": Dim(1, 8, 8), "T": Dim(1, 8, 16), "D": Dim(1, 8, 64)}


def _rms_record(name, wrong):
    def backward(p, d, r, g):
        dx, dw = rms_backward(p.x, p.w, r, g, p.x.shape[0] if wrong else p.x.shape[-1])
        return {"x": dx, "w": dw}

    return Model(name=name, dims=_RMS_DIMS, params={"x": ("B", "T", "D"), "w": ("D",)},
                 forward=lambda p, d: rms_forward(p.x, p.w), backward=backward)


def _rms_function(wrong):
    class RMSNorm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            y, r = rms_forward(x, w)
            ctx.save_for_backward(x, w, r)
            return y

        @staticmethod
        def backward(ctx, g):
            x, w, r = ctx.saved_tensors
            return rms_backward(x, w, r, g, x.shape[0] if wrong else x.shape[-1])

    return RMSNorm


def _rms_reference(x, w):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + EPS) * w


rmsnorm = _rms_record("rmsnorm", wrong=False)
rmsnorm_batch = _rms_record("rmsnorm_batch", wrong=True)
rmsnorm_fn = op_model(_rms_function(False), name="rmsnorm_fn", dims=_RMS_DIMS,
                      inputs={"x": ("B", "T", "D"), "w": ("D",)}, reference=_rms_reference)
rmsnorm_batch_fn = op_model(_rms_function(True), name="rmsnorm_batch_fn", dims=_RMS_DIMS,
                           inputs={"x": ("B", "T", "D"), "w": ("D",)}, reference=_rms_reference)


# -- sparsemax over the last dim -------------------------------------------------------------

def sparsemax(z):
    zs = z.sort(-1, descending=True).values
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    cs = zs.cumsum(-1) - 1
    support = (k * zs > cs).sum(-1, keepdim=True).clamp(min=1)     # rounding may leave none in float16
    tau = cs.gather(-1, support - 1) / support.to(z.dtype)
    return (z - tau).clamp(min=0)


def sparsemax_backward(out, g, squeeze):
    on = (out > 0).to(g.dtype)
    v = (g * on).sum(-1) / on.sum(-1).clamp(min=1)
    if squeeze:
        v = v.squeeze()              # drops a size-1 T along with everything else
    return on * (g - v.unsqueeze(-1))


def _sparsemax_function(squeeze):
    class Sparsemax(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            out = sparsemax(z)
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, g):
            (out,) = ctx.saved_tensors
            return sparsemax_backward(out, g, squeeze)

    return Sparsemax


def _sparsemax_record(name, squeeze):
    def forward(p, d):
        out = sparsemax(p.z)
        return out, out

    return Model(name=name, dims=_SPARSE_DIMS, params={"z": ("B", "T", "K")}, forward=forward,
                 backward=lambda p, d, out, g: {"z": sparsemax_backward(out, g, squeeze)})


_SPARSE_DIMS = {"B": Dim(1, 6, 8), "T": Dim(1, 6, 8), "K": Dim(1, 9, 16)}

sparsemax_rows = _sparsemax_record("sparsemax_rows", squeeze=False)
sparsemax_squeeze = _sparsemax_record("sparsemax_squeeze", squeeze=True)
sparsemax_fn = op_model(_sparsemax_function(False), name="sparsemax_fn", dims=_SPARSE_DIMS,
                        inputs={"z": ("B", "T", "K")}, reference=sparsemax)
sparsemax_squeeze_fn = op_model(_sparsemax_function(True), name="sparsemax_squeeze_fn", dims=_SPARSE_DIMS,
                                inputs={"z": ("B", "T", "K")}, reference=sparsemax)
