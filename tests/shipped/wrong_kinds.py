"""Deliberately wrong code of each kind the harness checks as it ships: each must fail
and name the input. The tests copy this file into a user's folder and run the CLI there."""
import torch

from gradcheck_suite import Dim, numpy_model, op_model


def p3(x):
    return 0.5 * (5 * x ** 3 - 3 * x)


class _P3(torch.autograd.Function):
    """P3's forward; each wrong version below brings its own backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return p3(x)


class P3ForgetsFactor(_P3):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (5 * x ** 2 - 1)           # forgets the factor 1.5


@torch.library.custom_op("gradcheck_wrong::cube_mutates", mutates_args=())
def cube_mutates(x: torch.Tensor) -> torch.Tensor:
    return x ** 3


def _cube_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _cube_backward(ctx, g):
    (x,) = ctx.saved_tensors
    x.mul_(x)                                  # squares the saved input in place, then uses it
    return 3 * x * g


cube_mutates.register_autograd(_cube_backward, setup_context=_cube_setup)


class ScaleGradForFactor(torch.autograd.Function):
    """y = x · k for a float k; the backward returns a "gradient" for k, which torch refuses."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x)
        ctx.k = k
        return x * k

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.k, (g * x).sum()           # k is a float: its slot must be None


class MulCopiedNeeds(torch.autograd.Function):
    """y = x · w, with the needs_input_grad guard copied from the line above unchanged."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = g * w
        if ctx.needs_input_grad[0]:               # copied: [1] is w's
            gw = g * x
        return gx, gw


def affine_forward(x, w):
    return x @ w, (x, w)


def affine_backward_transposed(dout, cache):
    x, w = cache
    return dout @ w.T, dout.T @ x             # transposed: x.T @ dout is right


class P3Prime(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 1.5 * (5 * x ** 2 - 1)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 10 * x                      # P3'' is 15x


class P3WrongSecond(_P3):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * P3Prime.apply(x)            # right first derivative, wrong second


_N = {"N": Dim(1, 12, 64)}

models = [
    op_model(P3ForgetsFactor, name="p3_forgets_factor", dims=_N, inputs={"x": ("N",)}, reference=p3),
    op_model(cube_mutates, name="cube_mutates_saved", dims=_N, inputs={"x": ("N",)}, reference=lambda x: x ** 3),
    op_model(ScaleGradForFactor, name="scale_grad_for_factor", dims=_N, inputs={"x": ("N",)},
             hyper={"k": (0.5, 3.0)}, reference=lambda x, k: x * k),
    op_model(MulCopiedNeeds, name="mul_copied_needs", dims=_N, inputs={"x": ("N",), "w": ("N",)},
             reference=lambda x, w: x * w),
    numpy_model(affine_forward, affine_backward_transposed, name="affine_np_transposed",
                dims={"N": Dim(1, 8, 64), "D": Dim(1, 8, 32)}, inputs={"x": ("N", "D"), "w": ("D", "D")}),
    op_model(P3WrongSecond, name="p3_wrong_second", dims=_N, inputs={"x": ("N",)}, reference=p3,
             double_backward=True),
]

#: what each must report: the verdict and the input it names
EXPECTED = {
    "p3_forgets_factor": ("fail", "the manual gradient of x disagrees"),
    "cube_mutates_saved": ("error", "backward changed a tensor saved on ctx in place (saved_tensors[0], the input x)"),
    "scale_grad_for_factor": ("error", "backward returned a gradient for k (argument 2, not a tensor)"),
    "mul_copied_needs": ("error", "backward gives no gradient for w when x needs no gradient"),
    "affine_np_transposed": ("fail", "the manual gradient of w disagrees with finite differences"),
    "p3_wrong_second": ("fail", "the double backward of x disagrees"),
}
