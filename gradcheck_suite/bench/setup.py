"""What every measurement of a model starts from: the model bound to its case (dims, dtype,
device, seed, its benchmark hyperparameters), its parameters and data, and the upstream
gradient; and the leaves autograd differentiates.  The timed regions (:mod:`.timing`), the
FLOP count (:mod:`.flops`) and the memory rounds (:mod:`.memory`) share it, so that they
measure the same values."""
from __future__ import annotations

from collections.abc import Mapping


def setup(model, dims: Mapping[str, int], device: str = "cpu", dtype: str = "float32", seed: int = 0):
    """The model bound to its case, its parameters and data, and the upstream gradient:
    the inputs that the timed regions and the memory rounds share (same seed, same values)."""
    import torch

    from ..check.case import Bound, Case, build, upstream

    case = Case(model.name, dict(dims), dtype, device, seed, 1.0, dict(model.bench_hyper))
    model = Bound(model, case)    # hyperparameters passed on, a tuple of outputs joined
    p, d = build(model, case, dense=False)    # a sparse input is timed as it is
    with torch.no_grad():
        out, _ = model.forward(p, d)
    return model, p, d, upstream(out, seed)


def autograd_inputs(model, p, d):
    """Copies of the differentiable inputs that require grad, the parameters and data
    holding them, and the list autograd differentiates with respect to."""
    from ..record.spec import Tensors

    names = model.differentiable
    leaves = {n: (p[n] if n in p else d[n]).detach().clone().requires_grad_(True) for n in names}
    P = Tensors((n, leaves[n]) for n in p)
    D = Tensors((n, leaves.get(n, t)) for n, t in d.items())
    return P, D, [leaves[n] for n in names]
