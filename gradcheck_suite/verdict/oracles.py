"""The two oracles: torch autograd, and finite differences of the forward alone.

Finite differences run in float64 along a direction ``v`` (a random one over every
differentiable tensor, or one element), on ``phi(t) = <g, f(theta + t v)>``: the
directional derivative ``phi'(0)`` equals ``<gradient, v>``.  Nothing the size of a
Jacobian is ever built: a probe costs five forward calls.  Richardson extrapolation
of two central differences gives the estimate and its own error; comparing the
one-sided differences at two steps tells a kink (their gap stays as the step halves)
from a smooth curve (their gap halves with the step).
"""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from ..record.spec import Model, Tensors

#: Steps relative to each tensor's typical magnitude.  The first is where Richardson's
#: truncation (~h^4) and rounding (~eps/h) errors are both near 1e-12; the larger one
#: helps where rounding dominates (a large loss, a small slope); the smaller ones are
#: tried when a kink sits inside the first step.
STEPS = (1e-4, 1e-2, 1e-6, 1e-8)
#: The order for a random direction where the manual gradient and autograd already agree
#: in every element, so the probe asks only whether autograd is the derivative: the
#: narrow step first, because a wide one moves many ReLU-like units across their kinks
#: when the tensors are large (a 256x4000 -> 400 layer crosses ~8 at 1e-4).  Any step
#: that agrees settles such a probe, so only the number of forward calls depends on it.
AGREED_STEPS = (1e-6, 1e-4, 1e-2, 1e-8)
EPS64 = torch.finfo(torch.float64).eps
ROUNDING = 64.0      # forward rounding taken as ROUNDING * eps * (its first-order bound, see Traced)
KINK_RATIO = 0.7     # one-sided gap at h/2 over gap at h: ~0.5 when smooth, ~1 at a kink
KINK_FLOOR = 1e-7    # a gap below this fraction of the slope is smooth, whatever the ratio
JUMP = 1e-10         # the relative step to either side of an element at which autograd looks for a kink
ENOUGH = 1e-3        # an agreement this precise (relative) settles a probe where manual and autograd agree


class Finding(enum.Enum):
    """What finite differences concluded about one probe (a direction or an element)."""

    AGREE = "agree"                    # manual and autograd agree, and so does the estimate
    FOR_AUTOGRAD = "resolved for autograd"  # sides with autograd: the manual gradient is wrong
    FOR_MANUAL = "resolved for manual"  # sides with the manual gradient: autograd is not the derivative
    NEITHER = "neither"                # agrees with neither
    KINK = "kink"                      # one-sided differences differ at a step that resolves them
    UNRESOLVED = "unresolved"          # manual and autograd differ, but no step can tell them apart


#: Which finding stands for a probe when its steps conclude differently: a step that
#: resolves the two gradients wins, then agreement, then evidence of a kink, which outweighs
#: a step too noisy to tell the two apart.
_RANK = {Finding.FOR_AUTOGRAD: 0, Finding.AGREE: 1, Finding.KINK: 2, Finding.UNRESOLVED: 3,
         Finding.FOR_MANUAL: 4, Finding.NEITHER: 4}


@dataclasses.dataclass(frozen=True)
class Estimate:
    """One finite-difference estimate of a directional derivative."""

    value: float
    error: float  # the estimate's own error: truncation (Richardson) plus rounding
    kink: bool
    step: float

    def agrees(self, value: float, tolerance: float) -> bool:
        return abs(value - self.value) <= 8.0 * self.error + tolerance


def autograd(model: Model, p: Tensors, d: Tensors, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Autograd's gradient of ``<g, reference(p, d)>`` (or of the forward) for every differentiable tensor."""
    return traced_autograd(model, p, d, g).grads


@dataclasses.dataclass(frozen=True)
class Traced:
    """Autograd's gradients, and ``resolution``: the first-order rounding bound of
    ``<g, f>``, the sum over every value v the forward computed of |v| * |d<g, f>/dv|
    (each value rounds by about eps * |v|, and that moves the output by the gradient), and
    ``backward``: the largest gradient the backward passed through."""

    grads: dict[str, torch.Tensor]
    resolution: float
    backward: float = 0.0    # the largest |d<g, f>/dv| over the same values


def traced_autograd(model: Model, p: Tensors, d: Tensors, g: torch.Tensor, trace: bool = True) -> Traced:
    """:func:`autograd`, with the output's first-order rounding bound (see :class:`Traced`);
    without ``trace``, autograd alone (the bound left at 0), which skips a hook on every
    value the forward computes."""
    leaves, P, D = on_leaves(model, p, d)
    terms = _Terms()
    with torch.enable_grad():
        with terms if trace else contextlib.nullcontext():
            out = differentiated(model, P, D)
        try:
            grads = vjp(out, g, leaves)
        except RuntimeError as e:
            if not refuses_grad(e):
                raise
            # torch.autograd.grad is refused (a reentrant checkpoint): the graph is partly
            # consumed, so the forward runs again on fresh leaves and .backward() takes the
            # gradients, as training does
            del out
            leaves, P, D = on_leaves(model, p, d)
            terms = _Terms()
            with terms if trace else contextlib.nullcontext():
                out = differentiated(model, P, D)
            grads = vjp(out, g, leaves, through_backward=True)
    return Traced(grads, terms.total(), terms.largest())


def refuses_grad(e: BaseException) -> bool:
    """Whether ``e`` is torch refusing ``torch.autograd.grad`` itself where ``.backward()``
    works (a ``torch.utils.checkpoint(..., use_reentrant=True)`` region): a limit of how
    the harness takes gradients, never the model's fault."""
    return isinstance(e, RuntimeError) and "incompatible with .grad()" in str(e)


def backward_into(outs: list[torch.Tensor], grads_out: list[torch.Tensor],
                  leaves: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The gradients of ``sum <grads_out, outs>`` for each leaf, taken as training takes
    them: ``.backward()`` into the leaves' ``.grad`` (the leaves are the harness's own
    detached copies, so no tensor of the user's gets a ``.grad``; a tensor requiring grad
    that the code closes over accumulates one, as in training).  Zeros where a leaf gets none."""
    for x in leaves.values():
        x.grad = None
    with torch.enable_grad():
        torch.autograd.backward(outs, grad_tensors=grads_out)
    out = {n: torch.zeros_like(x) if x.grad is None else x.grad.detach() for n, x in leaves.items()}
    for x in leaves.values():
        x.grad = None
    return out


def on_leaves(model: Model, p: Tensors, d: Tensors) -> tuple[dict[str, torch.Tensor], Tensors, Tensors]:
    """The differentiable tensors as leaves that require grad, and the case's tensors with
    them in place.  Detached, not copied: autograd.grad writes no .grad, and a forward that
    changes a leaf in place raises (the contract check catches one that changes its inputs)."""
    leaves = {n: (p[n] if n in p else d[n]).detach().requires_grad_(True) for n in model.differentiable}
    return (leaves, Tensors((n, leaves[n]) for n in p),
            Tensors((n, leaves[n] if n in leaves else t) for n, t in d.items()))


def vjp(out: object, g: torch.Tensor, leaves: Mapping[str, torch.Tensor],
        through_backward: bool = False) -> dict[str, torch.Tensor]:
    """The gradient of ``<g, out>`` for each leaf, ``out`` computed from them in grad mode
    (zeros where it does not depend on a leaf, or on none); ``through_backward``: taken
    with ``.backward()`` (:func:`backward_into`), where ``torch.autograd.grad`` is refused."""
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return {n: torch.zeros_like(x) for n, x in leaves.items()}
    if through_backward:
        with torch.enable_grad():
            return backward_into([weighted(out, g)], [torch.ones((), dtype=out.dtype, device=out.device)], leaves)
    with torch.enable_grad():
        grads = torch.autograd.grad(weighted(out, g), list(leaves.values()), allow_unused=True)
    return {n: (torch.zeros_like(leaves[n]) if gr is None else gr.detach()) for n, gr in zip(leaves, grads)}


def weighted(out: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``<g, out>`` as a scalar, whose gradient is the vector-Jacobian product with ``g``
    (the product's backward multiplies by ``g`` exactly).  Torch's own ``grad_outputs``
    path imports its symbolic-shapes machinery on first use, a third of a second per
    process."""
    return (out * g).sum()


#: Ops that round nothing: each output element is one of their inputs' elements (a
#: selection, a view, a sign) or a constant they write (``masked_fill``, ``where``, ``pad``).
#: Their values are counted in the resolution where they were computed, or not at all: a
#: constant is exact.  Counting them again would count a mask's fill value, often
#: ``-finfo.max``, as a rounded value times the gradient that flows past it, and the
#: resolution (and the floor of every bound built from it) would be 1e24 or more.
EXACT = frozenset({"neg", "__neg__", "abs", "clamp", "clip", "relu", "clamp_min", "clamp_max", "cat", "concat",
                   "stack", "where", "masked_fill", "masked_fill_", "pad", "__getitem__", "index_select", "gather",
                   "take_along_dim", "narrow", "select", "max", "min", "amax", "amin", "maximum", "minimum", "sort",
                   "topk", "chunk", "split", "unbind", "flatten", "unflatten", "reshape", "view", "view_as",
                   "transpose", "swapaxes", "permute", "t", "expand", "expand_as", "contiguous", "clone", "squeeze",
                   "unsqueeze", "repeat", "movedim", "roll", "flip", "tril", "triu", "diagonal"})


class _Terms(TorchFunctionMode):
    """Hooks every value the forward computes, so that the backward adds |v| * |dv| for it."""

    def __init__(self) -> None:
        super().__init__()
        self.sums: list[torch.Tensor] = []
        self.tops: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in EXACT:     # nothing rounded: its values are counted where made
            return out
        for t in _tensors((out,)):
            if t.requires_grad and t.grad_fn is not None and t.is_floating_point():
                try:
                    t.register_hook(functools.partial(self._add, t.detach()))
                except RuntimeError:   # a view that cannot take a hook: its base's counts
                    pass
        return out

    def _add(self, value: torch.Tensor, grad: torch.Tensor | None) -> None:
        if grad is None or not grad.numel():   # None: an output the loss never used (chunk, max(dim))
            return
        size, value = grad.detach().abs().reshape(-1), value.abs().reshape(-1)
        if size.dtype != torch.float64:
            size, value = size.double(), value.double()
        self.sums.append(torch.dot(value, size))      # summed on the device, read once
        self.tops.append(size.max())

    def largest(self) -> float:
        """The largest finite gradient of a value (0 where none is finite)."""
        return float(torch.stack(self.tops).nan_to_num(0.0, 0.0, 0.0).max()) if self.tops else 0.0

    def total(self) -> float:
        """The sum of the terms; 0 where it is not finite (an overflow says nothing of rounding)."""
        value = float(torch.stack(self.sums).sum()) if self.sums else 0.0
        return value if math.isfinite(value) else 0.0


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
    terms, the others (``DRAWS``) carry only the errors, and the larger is kept.  Empty where
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
                     for left in range(DRAWS - 1, -1, -1)]
    except Exception:    # the reference already ran for autograd: a failure here is this method's (a
        return {}        # refused torch.autograd.grad, a backward that takes no second pass), no allowance
    out = {}
    for i, n in enumerate(names):      # the larger of the draws, element by element
        found = [d[i].detach().abs() for d in draws if d[i] is not None]
        if found:
            out[n] = functools.reduce(torch.maximum, found)
    return out


#: Independent draws of the rounding errors in :func:`backward_rounding`, the largest kept per
#: element (six leave an element below half its spread once in 300): one draw can all
#: but cancel where two steps carry equal terms (a product, then a division by a constant).
DRAWS = 6


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
        for t in _tensors((out,)):
            if t.requires_grad and t.grad_fn is not None and t.is_floating_point():
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
            for x in _tensors(args, (kwargs or {}).values()):
                if x.requires_grad and x.is_floating_point():
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
        noise = torch.randn(grad.shape, generator=self.gen, dtype=torch.float64).to(grad.device)
        return grad + noise.mul_(scale * torch.finfo(grad.dtype).eps).to(grad.dtype)


def _largest(t: torch.Tensor) -> torch.Tensor:
    """max |t| in float64 (0 where not finite, or empty), left on t's device."""
    if not t.numel():
        return torch.zeros((), dtype=torch.float64, device=t.device)
    return t.detach().abs().max().to(torch.float64).nan_to_num(0.0, 0.0, 0.0)


def differentiated(model: Model, p: Tensors, d: Tensors) -> torch.Tensor:
    """The output autograd differentiates: the model's plain-torch ``reference`` where it
    has one (its forward may be a custom op or numpy), else its forward's output."""
    if model.reference is not None:
        return model.reference(p, d)
    return model.forward(p, d)[0]


def _fused_ops() -> list:
    aten = torch.ops.aten
    names = ("native_layer_norm", "native_group_norm", "native_batch_norm", "_native_batch_norm_legit",
             "_native_batch_norm_legit_no_training", "_softmax", "_log_softmax", "gelu", "silu", "mish",
             "logsumexp", "binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss",
             "smooth_l1_loss", "huber_loss", "_scaled_dot_product_attention_math", "cross_entropy_loss",
             "nll_loss_forward", "log_sigmoid_forward", "softplus", "hardswish", "elu", "glu")
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


def decomposed_autograd(model: Model, p: Tensors, d: Tensors, g: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Autograd of the same oracle with its fused ops (layer norm, softmax, GELU, the
    losses, ...) decomposed into the elementary ops they are made of: a second
    implementation of the same function, whose distance from the first measures the
    rounding hidden inside the fused kernels (``F.layer_norm`` at a normalised size of 1
    amplifies it by 1/sqrt(eps)).  None where the oracle cannot be traced."""
    try:
        from torch._decomp import get_decompositions
        from torch.fx.experimental.proxy_tensor import make_fx

        names = list(model.differentiable)

        def loss(*xs):
            at = dict(zip(names, xs))
            P = Tensors((n, at.get(n, t)) for n, t in p.items())
            D = Tensors((n, at.get(n, t)) for n, t in d.items())
            return (differentiated(model, P, D) * g).sum()

        start = [(p[n] if n in p else d[n]).detach() for n in names]
        graph = make_fx(loss, decomposition_table=get_decompositions(_fused_ops()))(*start)
        xs = [t.clone().requires_grad_(True) for t in start]
        with torch.enable_grad():
            grads = torch.autograd.grad(graph(*xs), xs, allow_unused=True)
    except Exception:       # not traceable (data-dependent Python, numpy, ...): no second implementation
        return None
    return {n: torch.zeros_like(x) if gr is None else gr.detach() for n, x, gr in zip(names, xs, grads)}


Phi = Callable[[float], tuple[float, float]]


def _tensors(*groups):
    """The tensors among an op's arguments or results (inside lists and tuples too)."""
    for group in groups:
        for x in group:
            if isinstance(x, torch.Tensor):
                yield x
            elif isinstance(x, (list, tuple)):
                yield from _tensors(x)


class Line:
    """``phi(t) = (<g, f(theta + t v)>, its rounding scale)`` in float64, ``v`` given by
    ``direction``; see :func:`line`.  Each ``t`` runs the forward once: the values are kept,
    and ``resolution`` may be raised later without running them again."""

    def __init__(self, model: Model, p: Tensors, d: Tensors, g: torch.Tensor,
                 direction: Mapping[str, torch.Tensor], resolution: float = 0.0,
                 at_zero: torch.Tensor | None = None):
        self.model, self.p, self.d, self.direction = model, p, d, direction
        self.g64 = g.detach().to(torch.float64)
        self.resolution = resolution
        self.memo: dict[float, tuple[float, float]] = {}
        if at_zero is not None:
            self.memo[0.0] = self._value(at_zero)

    def _value(self, out: torch.Tensor) -> tuple[float, float]:
        prod = self.g64 * out.to(torch.float64)
        return float(prod.sum()), float(prod.abs_().sum())

    def __call__(self, t: float) -> tuple[float, float]:
        if t not in self.memo:
            P, D = moved(self.p, self.d, self.direction, t)
            with torch.no_grad():
                out, _ = self.model.forward(P, D)
            self.memo[t] = self._value(out)
        value, size = self.memo[t]
        return value, max(size, self.resolution)


def line(model: Model, p: Tensors, d: Tensors, g: torch.Tensor, direction: Mapping[str, torch.Tensor],
         resolution: float = 0.0, at_zero: torch.Tensor | None = None) -> Line:
    """``t -> (<g, f(theta + t v)>, its rounding scale)`` in float64, ``v`` given by ``direction``.

    The rounding scale is ``sum|g * f|``, or the forward's first-order rounding bound
    ``resolution`` (see :class:`Traced`) where that is larger: a saturated
    ``log(1 - sigmoid(z))`` returns exactly 0 after passing through 1.  ``phi(0)`` runs the
    forward once, or not at all where its output is given as ``at_zero``.
    """
    return Line(model, p, d, g, direction, resolution, at_zero)


def jumps(model: Model, p: Tensors, d: Tensors, g: torch.Tensor, name: str, index: tuple[int, ...],
          size: float, manual: float, tol: float) -> bool:
    """Whether one element sits on a kink that finite differences cannot resolve (its
    slope is lost in the rounding of a large output): autograd's gradient of that element,
    taken to either side and extrapolated to the point, jumps by more than ``tol``, and
    ``manual`` lies between the two sides (within ``tol``), a one-sided derivative or a mix
    of the two.  Each side is ``2 a(s) - a(2 s)`` at ``s = +-JUMP * size``, so that a
    gradient that itself changes fast beside the kink (a large curvature on one side) does
    not pass for a jump, or hide one.  Autograd needs no step to resolve a slope, so the
    steps can be ones that no other kink is likely to fall within."""
    x = p[name] if name in p else d[name]
    v = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    v[index] = size
    g64 = g.detach().to(torch.float64)

    def at(t: float) -> float:
        return float(autograd(model, *moved(p, d, {name: v}, t), g64)[name][index])

    try:
        sides = [2 * at(t) - at(2 * t) for t in (JUMP, -JUMP)]
    except Exception:     # the reference fails beside the case: no evidence of a kink
        return False
    low, high = min(sides), max(sides)
    return high - low > tol and low - tol <= manual <= high + tol


def moved(p: Tensors, d: Tensors, direction: Mapping[str, torch.Tensor], t: float) -> tuple[Tensors, Tensors]:
    """The case's tensors at ``theta + t v``, in float64 (``v`` given by ``direction``)."""
    return (Tensors((n, _moved(n, x, direction, t)) for n, x in p.items()),
            Tensors((n, _moved(n, x, direction, t)) for n, x in d.items()))


def _moved(name: str, x: torch.Tensor, direction: Mapping[str, torch.Tensor], t: float) -> torch.Tensor:
    if not x.is_floating_point():
        return x
    x = x.detach().to(torch.float64)
    v = direction.get(name)
    return x if v is None or t == 0.0 else torch.add(x, v, alpha=t)


def estimate(phi: Phi, h: float) -> Estimate:
    """Central differences at h and h/2, Richardson-extrapolated; one-sided gaps for kinks."""
    (f0, a0), (fp, ap), (fm, am) = phi(0.0), phi(h), phi(-h)
    (fp2, ap2), (fm2, am2) = phi(h / 2), phi(-h / 2)
    d1 = (fp - fm) / (2 * h)
    d2 = (fp2 - fm2) / h
    value = (4 * d2 - d1) / 3
    rounding = ROUNDING * EPS64 * max(a0, ap, am, ap2, am2, abs(f0)) / h
    error = abs(value - d2) + rounding
    bent1 = (fp - 2 * f0 + fm) / h            # one-sided slopes' gap, signed: the curvature,
    bent2 = (fp2 - 2 * f0 + fm2) / (h / 2)    # times the step, plus any kink's jump
    gap1, gap2 = abs(bent1), abs(bent2)
    floor = max(4 * rounding, KINK_FLOOR * (abs(d1) + abs(d2)))
    kink = (gap2 > KINK_RATIO * gap1 and gap2 > floor) or _curved_kink(phi, h, f0, bent1, bent2, rounding, floor)
    if kink:
        error = max(error, gap2)
    return Estimate(value, error, kink, h)


def _curved_kink(phi: Phi, h: float, f0: float, bent1: float, bent2: float, rounding: float,
                 floor: float) -> bool:
    """A kink whose sides curve apart, the curvature outweighing the jump at every step
    (a unit on its kink under a large loss): the gap's ratio is then ~0.5, as if smooth.
    Richardson on the signed gaps cancels the curvature, ``jump(h) = 2 gap(h/2) - gap(h)``:
    a kink's jump stays as the step halves, a smooth curve's falls 8-fold (it is O(h^3)).
    Two more forward calls (at +-h/4), only where ``jump(h)`` stands above rounding."""
    jump1 = 2 * bent2 - bent1
    if abs(jump1) <= max(10 * rounding, floor):   # 20/h of rounding in all, half of it as for gap2
        return False
    (fp4, ap4), (fm4, am4) = phi(h / 4), phi(-h / 4)
    bent4 = (fp4 - 2 * f0 + fm4) / (h / 4)
    jump2 = 2 * bent4 - bent2
    rounding4 = max(rounding, ROUNDING * EPS64 * max(ap4, am4) / h)
    return jump1 * jump2 > 0 and abs(jump2) > KINK_RATIO * abs(jump1) and abs(jump2) > max(20 * rounding4, floor)


def central(phi: Phi, h: float, target: float, tol: float) -> Estimate | None:
    """The central difference at ``h`` alone (two forward calls), where it agrees with
    ``target`` within ``tol`` plus 8 times its rounding, and that rounding is within
    ``ENOUGH`` of the value: the allowance :meth:`Estimate.agrees` gives the same step,
    less its truncation error, so it accepts nothing the full estimate at that step would
    not.  None otherwise: then the full estimate decides (``phi`` keeps the two values)."""
    (f0, a0), (fp, ap), (fm, am) = phi(0.0), phi(h), phi(-h)
    value = (fp - fm) / (2 * h)
    rounding = ROUNDING * EPS64 * max(a0, ap, am, abs(f0)) / h
    if abs(value - target) <= 8.0 * rounding + tol and rounding <= ENOUGH * max(abs(value), abs(target)):
        return Estimate(value, rounding + abs(value - target), False, h)
    return None


class _Steps:
    """Estimates at each step in ``STEPS``, in turn and lazily (stop when satisfied).  A step
    at least as wide as one that saw a kink is not evaluated (``skip_from``): it straddles
    that kink as well."""

    def __init__(self, phi: Phi, steps: tuple[float, ...] = STEPS):
        self.phi, self.steps, self.skip_from = phi, steps, float("inf")

    def __iter__(self):
        for h in self.steps:
            if h < self.skip_from:
                yield estimate(self.phi, h)


def estimates(phi: Phi, steps: tuple[float, ...] = STEPS) -> _Steps:
    return _Steps(phi, steps)


def judge(steps, dm: float, da: float, tol: float, precise: float) -> tuple[Finding, Estimate | None]:
    """What finite differences say of one probe, where the manual gradient projects to ``dm``
    and autograd to ``da`` (``tol`` apart at most where they agree).

    Steps are tried in turn.  A step at least as wide as one that saw a kink straddles that
    kink: it is not evaluated, or counts as the kink.  One that sides with autograd alone
    settles the probe, unless a narrower step then sees a kink (a kink whose two sides curve
    differently looks smooth, and sides with autograd, at a wide step), so the narrower steps
    are still tried.  Otherwise the steps' findings are ranked (``_RANK``), and of equal
    findings the most precise estimate is kept; the search stops at an agreement within
    ``precise`` (relative)."""
    differ = abs(dm - da) > tol
    best: Finding | None = None
    kept: Estimate | None = None
    kinked: Estimate | None = None     # the narrowest step that saw a kink
    resolved: Estimate | None = None   # a step that sided with autograd alone

    def narrower_only(step: float) -> None:   # wider steps are not evaluated from here on
        if isinstance(steps, _Steps):
            steps.skip_from = min(steps.skip_from, step)

    for est in steps:
        if est.kink and (kinked is None or est.step < kinked.step):
            kinked = est
            narrower_only(est.step)
        finding = Finding.KINK if kinked is not None and est.step >= kinked.step else _finding(est, dm, da, tol, differ)
        if finding is Finding.FOR_AUTOGRAD:
            resolved = resolved or est
            narrower_only(est.step)           # only narrower steps can still show a kink
            continue
        if best is None or _RANK[finding] < _RANK[best]:
            best, kept = finding, est
        elif finding is best and est.error < kept.error:
            kept = est
        if resolved is None and finding is Finding.AGREE and est.error <= (
                ENOUGH if not differ else precise) * max(abs(est.value), abs(da)):
            # where the two gradients agree, no later step outranks an agreement (``_RANK``):
            # a narrower step would only make the estimate more precise than it needs to be
            break
    if resolved is not None:
        if kinked is not None and kinked.step < resolved.step:
            return Finding.KINK, kinked
        return Finding.FOR_AUTOGRAD, resolved
    return (best or Finding.KINK), kept


def _finding(est: Estimate, dm: float, da: float, tol: float, differ: bool) -> Finding:
    if est.kink:
        return Finding.KINK
    with_manual, with_autograd = est.agrees(dm, tol), est.agrees(da, tol)
    if with_manual and with_autograd:
        return Finding.UNRESOLVED if differ else Finding.AGREE
    if with_autograd:
        return Finding.FOR_AUTOGRAD
    if with_manual:
        return Finding.FOR_MANUAL
    if min(dm, da) < est.value < max(dm, da):
        # strictly between the two: the average of one-sided slopes that differ, a kink
        # whose gap the curvature hides at every step (a ReLU unit whose two sides slope alike)
        return Finding.KINK
    return Finding.NEITHER


def scale_of(x: torch.Tensor, fallback: float) -> float:
    """A tensor's typical magnitude (rms), for sizing steps relative to its values."""
    if not x.is_floating_point() or x.numel() == 0:
        return fallback
    rms = float(torch.linalg.vector_norm(x.detach(), dtype=torch.float64)) / math.sqrt(x.numel())
    return rms if rms > 0 and rms == rms and rms != float("inf") else fallback


def random_direction(model: Model, tensors: Mapping[str, torch.Tensor], seed: int, fallback: float,
                     sizes: Mapping[str, float] | None = None) -> dict[str, torch.Tensor]:
    """A random direction over every differentiable tensor, each part sized like its values
    (``sizes``, where the caller has them): random signs (Rademacher), as good as Gaussian
    for a projection and cheaper to draw (one random bit each)."""
    draws = np.random.Generator(np.random.SFC64(seed % 2**64))
    names = list(model.differentiable)
    counts = [tensors[n].numel() for n in names]
    bits = np.unpackbits(np.frombuffer(draws.bytes((sum(counts) + 7) // 8), np.uint8), count=sum(counts))
    signs = torch.from_numpy(bits).to(torch.float64).mul_(2).sub_(1)     # one draw for every tensor
    out = {}
    for n, part in zip(names, signs.split(counts)):
        x = tensors[n]
        size = sizes[n] if sizes is not None else scale_of(x, fallback)
        out[n] = part.reshape(x.shape).mul_(size).to(x.device)
    return out


def element_direction(x: torch.Tensor, name: str, index: tuple[int, ...], fallback: float) -> dict[str, torch.Tensor]:
    """The unit direction of one element, sized like that element (or its tensor)."""
    v = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    size = abs(float(x[index])) if x.dim() else abs(float(x))
    v[index] = max(size, scale_of(x, fallback))
    return {name: v}
