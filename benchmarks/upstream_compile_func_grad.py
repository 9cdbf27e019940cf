"""Does ``torch.compile(torch.func.grad(f))`` use an ``autograd.Function``'s own backward on
the installed torch?  (pytorch/pytorch #193279 reports that it silently does not.)

    python benchmarks/upstream_compile_func_grad.py

The Function's backward is deliberately not the forward's derivative (twice it for ``x``), so
whichever one ran shows in the values: eager ``torch.func.grad`` and ``torch.func.vjp`` of the
compiled function use the Function's backward; the script prints, for each way of calling,
which gradient came out.  It exits 1 where a compiled path gave another gradient than eager.
"""
from __future__ import annotations

import sys

import torch


class Twice(torch.autograd.Function):
    """y = x * sigmoid(w); its backward returns 2x the derivative for x (to tell them apart)."""

    @staticmethod
    def forward(x, w):
        return x * torch.sigmoid(w)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(w)
        return 2 * g * s, g * x * s * (1 - s)


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    x, w, g = (torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(3))

    def f(x, w):
        return (Twice.apply(x, w) * g).sum()

    custom = torch.func.grad(f, argnums=(0, 1))(x, w)[0]
    derivative = g * torch.sigmoid(w)

    def which(got: torch.Tensor) -> str:
        if torch.allclose(got, custom):
            return "the Function's backward"
        if torch.allclose(got, derivative):
            return "autograd of the forward (the custom backward dropped)"
        return "neither"

    print(f"torch {torch.__version__}")
    paths = {
        "torch.func.grad(f), eager": lambda: torch.func.grad(f, argnums=(0, 1))(x, w)[0],
        "torch.compile(torch.func.grad(f)), aot_eager":
            lambda: torch.compile(torch.func.grad(f, argnums=(0, 1)), backend="aot_eager")(x, w)[0],
        "torch.func.grad(torch.compile(f)), aot_eager":
            lambda: torch.func.grad(torch.compile(f, backend="aot_eager"), argnums=(0, 1))(x, w)[0],
        "torch.autograd.grad through torch.compile(f), aot_eager":
            lambda: torch.autograd.grad(torch.compile(f, backend="aot_eager")(x.requires_grad_(), w), x)[0],
    }
    differ = False
    for label, path in paths.items():
        torch._dynamo.reset()
        got = which(path().detach())
        differ |= got != "the Function's backward"
        print(f"{label:<58} {got}")
    return int(differ)


if __name__ == "__main__":
    sys.exit(main())
