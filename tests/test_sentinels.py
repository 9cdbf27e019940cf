"""A mask filled with a huge finite constant (``-finfo.max``, ``finfo.min``, -1e4), as
attention code writes it: the constant is exact, so it must not widen the bounds.  A
backward that forgets the mask in a row that sees no key must fail; the right one passes."""
import pytest
import torch

from gradcheck_suite import Dim, op_model
from gradcheck_suite import run_model

FILLS = {"-finfo.max": lambda dt: -torch.finfo(dt).max, "finfo.min": lambda dt: torch.finfo(dt).min,
         "-1e4": lambda dt: -1e4}


def _hidden(s):
    """Row i sees the keys j < i: row 0 sees none, so its softmax is uniform over the fill."""
    n, m = s.shape[-2:]
    return torch.arange(m, device=s.device).view(1, -1) >= torch.arange(n, device=s.device).view(-1, 1)


def _model(fill: str, masked_backward: bool):
    def forward_of(s):
        return torch.softmax(s.masked_fill(_hidden(s), FILLS[fill](s.dtype)), dim=-1)

    class MaskedSoftmax(torch.autograd.Function):
        @staticmethod
        def forward(ctx, s):
            out = forward_of(s)
            ctx.save_for_backward(out, _hidden(s))
            return out

        @staticmethod
        def backward(ctx, g):
            out, hidden = ctx.saved_tensors
            gs = out * (g - (g * out).sum(-1, keepdim=True))
            return gs.masked_fill(hidden, 0.0) if masked_backward else gs

    return op_model(MaskedSoftmax, name=f"masked_softmax_{'right' if masked_backward else 'unmasked'}",
                    dims={"N": Dim(1, 5, 8), "M": Dim(1, 5, 8)}, inputs={"s": ("N", "M")}, reference=forward_of)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fill", sorted(FILLS))
def test_a_backward_that_forgets_the_mask_of_a_row_that_sees_nothing_fails(fill, dtype):
    run = run_model(_model(fill, masked_backward=False), dtype=dtype, examples=12)
    assert run.verdict == "fail", run.failure
    assert run.failure.failing == ["s"]


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize("fill", sorted(FILLS))
def test_the_masked_backward_passes_whatever_the_fill(fill, dtype):
    run = run_model(_model(fill, masked_backward=True), dtype=dtype, examples=12)
    assert run.verdict == "pass", run.failure and run.failure.summary
