"""P3(x) = (5x³ − 3x) / 2 as an autograd.Function, checked as it ships.

The backward is written in torch operations on the saved input, so it is itself
differentiable, and the record opts in to checking that second derivative too.
"""
import torch

from gradcheck_suite import Dim, op_model


class LegendreP3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * (5 * x ** 3 - 3 * x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * 1.5 * (5 * x ** 2 - 1)        # P3'(x)


def p3_reference(x):
    return 0.5 * (5 * x ** 3 - 3 * x)                        # plain torch: autograd's oracle


model = op_model(
    LegendreP3,
    name="legendre_p3",
    dims={"N": Dim(low=1, high=64, bench=2000)},
    inputs={"x": ("N",)},
    reference=p3_reference,
    scale_range=(1e-2, 1e1),          # P3 lives on [-1, 1]; a cube of 1e3 is not its business
    double_backward=True,
)
