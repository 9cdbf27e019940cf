"""softplus(βx)/β as a torch.library custom op with register_autograd; β is a
hyperparameter drawn from a few values, so it shows in the case and the reproduce command."""
import torch

from gradcheck_suite import Dim, op_model


@torch.library.custom_op("gradcheck_examples::scaled_softplus", mutates_args=())
def scaled_softplus(x: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.nn.functional.softplus(beta * x) / beta


def _setup_context(ctx, inputs, output):
    x, beta = inputs
    ctx.save_for_backward(x)
    ctx.beta = beta


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    # d/dx softplus(βx)/β = sigmoid(βx); None for beta, a float
    return grad * torch.sigmoid(ctx.beta * x), None


scaled_softplus.register_autograd(_backward, setup_context=_setup_context)

model = op_model(
    scaled_softplus,
    name="scaled_softplus",
    dims={"N": Dim(low=1, high=16, bench=256), "F": Dim(low=1, high=16, bench=256)},
    inputs={"x": ("N", "F")},
    hyper={"beta": (1.0, 0.5, 4.0)},
    reference=lambda x, beta: torch.nn.functional.softplus(beta * x) / beta,
)
