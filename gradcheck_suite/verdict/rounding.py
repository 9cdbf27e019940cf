"""The rounding a backward of the computation carries into each gradient
(:func:`backward_rounding`): the floor below which a gradient that is exactly 0, or nearly so,
in the reference is judged against the scale of the computation, not against itself."""
from __future__ import annotations

import functools

import torch
from torch.overrides import TorchFunctionMode

from . import rules
from ..record.spec import Model, Tensors
from .autograd_oracle import differentiated, on_leaves, tensors_in, weighted


def backward_rounding(model: Model, p: Tensors, d: Tensors, g: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """The rounding a backward of this computation carries into each gradient, in the
    dtype it runs in: for each tensor, the gradient of ``<r, f>`` where nothing flows in
    from the output (``g = 0``) and every value ``u`` the forward computed is given a
    rounding error ``eps * T_u`` of random sign, ``T_u`` the size of the terms of which
    ``u``'s gradient is the sum: its own largest element, or ``T_c`` of a value ``c``
    computed from ``u`` times the size of that step's Jacobian, ``|c| / |u|`` for a
    product and 1 for sums, selections and views (``UNIT``) and for the ops in ``BOUNDED`` (a softmax over one position has an
    exact gradient of 0, the difference of two terms the size of its output's gradient,
    itself a sum of terms of |upstream gradient| times |v|).  Each error reaches the tensors through the
    computation's own Jacobians, so a gradient that is exactly 0 in the reference, and
    rounding of ``eps * |q| |k| |v|`` in a correct attention backward, is judged against
    the scale of the computation that produced it, not against itself.

    Backward passes over one forward: the first records the size of each value's
    terms, the others (``rules.DRAWS``) carry only the errors, and the larger is kept.  Empty where
    the reference cannot be differentiated this way (``torch.autograd.grad`` refused, any
    exception: the reference already ran for autograd, so it is this method's)."""
    leaves, P, D = on_leaves(model, p, d)
    rounder = _Rounder(seed)
    try:
        with torch.enable_grad():
            with rounder:
                out = differentiated(model, P, D)
            if not isinstance(out, torch.Tensor) or not out.requires_grad:
                return {}
            names = list(leaves)
            torch.autograd.grad(weighted(out, g), [leaves[n] for n in names], allow_unused=True, retain_graph=True)
            rounder.injecting = True
            zero = weighted(out, torch.zeros_like(g))
            draws = [torch.autograd.grad(zero, [leaves[n] for n in names], allow_unused=True, retain_graph=left > 0)
                     for left in range(rules.DRAWS - 1, -1, -1)]
    except Exception:    # the reference already ran for autograd: a failure here is this method's (a
        return {}        # refused torch.autograd.grad, a backward that takes no second pass), no allowance
    out = {}
    for i, n in enumerate(names):      # the larger of the draws, element by element
        found = [d[i].detach().abs() for d in draws if d[i] is not None]
        if found:
            out[n] = functools.reduce(torch.maximum, found)
    return out


#: Ops whose Jacobian is a difference of terms no larger than 1 per unit of the input
#: (softmax: diag(p) - p p^T; sigmoid: s - s^2; tanh: 1 - t^2), whatever the size of the
#: input: the terms of the input's gradient are those of the output's, not scaled by
#: |output| / |input| as for a product or a sum.
BOUNDED = frozenset({"softmax", "log_softmax", "_softmax", "_log_softmax", "sigmoid", "tanh", "logsigmoid",
                     "normalize", "layer_norm", "group_norm", "rms_norm"})


#: Ops whose Jacobian is 1 (or 0) per element: sums, differences, selections and views.
#: ``|out| / |in|`` would be far off for them (``y - t`` where ``t`` outweighs ``y``).
UNIT = frozenset({"add", "sub", "__add__", "__sub__", "__radd__", "__rsub__", "__iadd__", "__isub__", "neg",
                  "__neg__", "sum", "cumsum", "clamp", "clip", "relu", "clamp_min", "clamp_max", "cat", "concat",
                  "stack", "where", "masked_fill", "pad", "__getitem__", "index_select", "gather", "narrow",
                  "select", "max", "min", "amax", "amin", "maximum", "minimum", "chunk", "split", "unbind",
                  "flatten", "reshape", "view", "transpose", "permute", "t", "expand", "contiguous", "clone",
                  "squeeze", "unsqueeze", "repeat", "movedim", "roll", "flip", "tril", "triu", "diagonal"})


class _Rounder(TorchFunctionMode):
    """Hooks every value the forward computes and notes, for each input of each op, the
    values computed from it and a size of that step's Jacobian; see :func:`backward_rounding`."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.tops: list[torch.Tensor | None] = []          # per value: the size of its gradient's terms
        self.consumers: dict[int, list[tuple[int, torch.Tensor]]] = {}   # id of a tensor -> (value, Jacobian size)
        self.kept: list[torch.Tensor] = []                 # alive while hooked, so that ids stay unique
        self.injecting = False
        self.gen = torch.Generator().manual_seed(seed % 2**63)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        slots = []
        for t in tensors_in((out,)):
            if t.requires_grad and t.grad_fn is not None and (t.is_floating_point() or t.is_complex()):
                slot = len(self.tops)
                self.tops.append(None)
                try:
                    t.register_hook(functools.partial(self._hook, slot, id(t)))
                except RuntimeError:   # a view that cannot take a hook
                    continue
                self.kept.append(t)
                slots.append((slot, _largest(t)))
        if slots:
            name = getattr(func, "__name__", "")
            unit = name in BOUNDED or name in UNIT
            for x in tensors_in(args, (kwargs or {}).values()):
                if x.requires_grad and (x.is_floating_point() or x.is_complex()):
                    size = _largest(x)
                    for slot, top in slots:
                        # |d out / d x| ~ |out| / |x| for a product (homogeneous of degree 1)
                        step = torch.ones_like(top) if unit else top / size.clamp_min(torch.finfo(top.dtype).tiny)
                        self.consumers.setdefault(id(x), []).append((slot, step))
                    self.kept.append(x)
        return out

    def _hook(self, slot: int, key: int, grad: torch.Tensor | None):
        if grad is None or not grad.numel():
            return None
        if not self.injecting:
            # the size of the terms this gradient sums: its own size, or a term's from a value
            # computed from it (already visited: the backward runs in reverse) times that step
            tops = [_largest(grad)]
            tops += [(self.tops[i] * step).to(grad.device) for i, step in self.consumers.get(key, ())
                     if self.tops[i] is not None]
            self.tops[slot] = torch.stack(tops).nan_to_num(0.0, 0.0, 0.0).max()
            return None
        scale = self.tops[slot]
        if scale is None:
            return None
        # Gaussian, not random signs: two steps whose terms are equally large (a division
        # by a constant) would cancel exactly half the time
        # (a complex value's in both its parts)
        noise = torch.randn((*grad.shape, 2) if grad.is_complex() else grad.shape, generator=self.gen,
                            dtype=torch.float64).to(grad.device)
        noise = torch.view_as_complex(noise) if grad.is_complex() else noise
        return grad + noise.mul_(scale * torch.finfo(grad.dtype).eps).to(grad.dtype)


def _largest(t: torch.Tensor) -> torch.Tensor:
    """max |t| in float64 (0 where not finite, or empty), left on t's device."""
    if not t.numel():
        return torch.zeros((), dtype=torch.float64, device=t.device)
    return t.detach().abs().max().to(torch.float64).nan_to_num(0.0, 0.0, 0.0)
