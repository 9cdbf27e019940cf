"""One training trajectory and what it is measured by.

A :class:`Run` holds parameters and an optimiser and takes steps with the manual gradient (the
model's forward and hand-written backward) or with autograd's (of the reference, or of the
forward); a rounding twin is an autograd run whose gradient is moved, every step, as another
correct summation order would move it.  Around it: the loss a run trains on (the output's sum,
half its mean square, a :class:`Target`, or the record's own callable), the call into the
user's code that turns an exception into a one-line :class:`TrainError`, and the distance
between two runs.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from ..check.case import Bound
from ..record.spec import Tensors
from ..verdict import rules
from .result import TrainError


class Target:
    """The default loss of an output that is not a scalar: half the mean square distance
    from a fixed random target, as large as the first output.  Unlike the output's own
    square, its gradient is not zero where the output is, so a backward that forgets a
    mask there still trains differently."""

    def __init__(self, target: torch.Tensor):
        self.target = target
        self._cast: dict = {}

    def _t(self, y: torch.Tensor) -> torch.Tensor:
        key = (y.dtype, y.device)
        if key not in self._cast:
            if tuple(y.shape) != tuple(self.target.shape):
                raise TrainError(f"the output's shape changed from {tuple(self.target.shape)} to "
                                 f"{tuple(y.shape)} between steps")
            self._cast[key] = self.target.to(dtype=y.dtype, device=y.device)
        return self._cast[key]

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((y - self._t(y)) ** 2).mean()

    def upstream(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self._t(y)) / y.numel()


def make_target(out: torch.Tensor, seed: int) -> Target:
    """The :class:`Target` for the first output ``out``, drawn from the run's seed."""
    gen = torch.Generator().manual_seed(seed ^ rules.SALT_TRAIN_TARGET)
    size = float(out.double().pow(2).mean().sqrt()) if out.numel() else 1.0
    size = size if math.isfinite(size) and size > 0 else 1.0
    return Target(size * torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device))


def loss_function(loss: object, out: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss as a function of the output: the record's callable, the sum (``"sum"``, or a
    scalar output by default), or half the mean square."""
    if callable(loss):
        return loss
    if loss == "sum" or (loss is None and out.numel() == 1):
        return lambda y: y.sum()
    return lambda y: 0.5 * (y * y).mean()


def call_user(fn, what: str, *args):
    """``fn(*args)``, the user's code: an exception becomes a :class:`TrainError` naming
    ``what`` raised it, and where."""
    try:
        return fn(*args)
    except TrainError:
        raise
    except Exception as e:
        from ..record.blame import where
        raise TrainError(f"{what} raised {type(e).__name__}: {e}{where(e)}") from e


class _PlainSGD:
    """p -= lr * grad: what torch.optim.SGD does without momentum, minus its per-step overhead."""

    def __init__(self, params: list[torch.Tensor], lr: float):
        self.params, self.lr = params, lr

    def step(self) -> None:
        torch._foreach_add_(self.params, [p.grad for p in self.params], alpha=-self.lr)


def _optimizer(name: str, params: list[torch.Tensor], lr: float):
    if name == "sgd":
        return _PlainSGD(params, lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=rules.TRAIN_MOMENTUM)
    return torch.optim.Adam(params, lr=lr)


class Run:
    """One trajectory: parameters, optimiser, and the loss and gradient of each step.

    ``manual`` takes the model's forward and backward, otherwise autograd's gradient; a
    ``twin`` number makes it a rounding twin of autograd's run (see :func:`_reround`)."""

    def __init__(self, label: str, model: Bound, start: Mapping[str, torch.Tensor], dtype: torch.dtype,
                 device: str, optimizer: str, lr: float, manual: bool, twin: int | None = None):
        self.label, self.model, self.manual = label, model, manual
        # a rounding twin draws its moves from its own seed, so a replay draws the same ones
        self.twin = None if twin is None else torch.Generator().manual_seed(rules.SALT_TRAIN_TWIN + twin)
        self.dtype, self.device = dtype, device
        self.params = {n: t.detach().to(device=device, dtype=dtype).clone() for n, t in start.items()}
        self.opt = _optimizer(optimizer, list(self.params.values()), lr)
        self.losses: list[float | None] = []
        self.stopped = False
        self._cast: tuple | None = None

    def advance(self, d: Mapping[str, torch.Tensor], loss: object) -> None:
        """One step, its loss recorded; a run whose loss left the numbers stops (its losses None)."""
        if self.stopped:
            self.losses.append(None)
            return
        value = self.step(d, loss)
        self.losses.append(value)
        if not math.isfinite(value):
            self.stopped = True

    def cast(self, d: Mapping[str, torch.Tensor]) -> Tensors:
        """The batch in this run's dtype and device; a fixed batch is cast once."""
        if self._cast is not None and self._cast[0] is d:
            return self._cast[1]
        cast = self._convert(d)
        self._cast = (d, cast)
        return cast

    def _convert(self, d: Mapping[str, torch.Tensor]) -> Tensors:
        return Tensors((n, t.to(device=self.device, dtype=self.dtype) if t.is_floating_point() else t.to(self.device))
                       for n, t in d.items())

    def step(self, d: Mapping[str, torch.Tensor], loss: object) -> float:
        """One forward, backward and optimiser step on the batch ``d``; the loss before the step."""
        data = self.cast(d)
        grads, value = (self._manual if self.manual else self._autograd)(data, loss)
        if self.twin is not None:
            grads = {n: _reround(gr, self.twin) for n, gr in grads.items()}
        for n, p in self.params.items():
            p.grad = grads[n]
        self.opt.step()
        return value

    def _manual(self, data: Tensors, loss: object):
        p = Tensors(self.params.items())
        with torch.no_grad():
            returned = call_user(self.model.forward, "forward", p, data)
        if not (isinstance(returned, tuple) and len(returned) == 2) or not isinstance(returned[0], torch.Tensor):
            raise TrainError("forward must return (output, cache); `gradcheck-suite check` says more")
        out, cache = returned
        value, g = _loss_and_upstream(loss, out)
        with torch.no_grad():
            grads = call_user(self.model.backward, "backward", p, data, cache, g)
        return _params_grads(self.model, grads, self.params), value

    def _autograd(self, data: Tensors, loss: object):
        from ..verdict.oracles import differentiated
        leaves = {n: t.detach().requires_grad_(True) for n, t in self.params.items()}
        with torch.enable_grad():
            out = call_user(differentiated, "reference" if self.model.reference else "forward", self.model,
                            Tensors(leaves.items()), data)
            if not isinstance(out, torch.Tensor):
                raise TrainError(f"the {'reference' if self.model.reference else 'forward'}'s output is "
                                 f"{type(out).__name__}, not a tensor")
            total = loss_function(loss, out)(out)
            grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        grads = {n: torch.zeros_like(leaves[n]) if gr is None else gr for n, gr in zip(leaves, grads)}
        return grads, float(total.detach())


def _reround(g: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``g`` as another correct backward might round it: each nonzero element moved by a
    uniform random amount of up to ``rules.TRAIN_TWIN_ROUNDING`` x the dtype's epsilon x the
    largest magnitude in ``g``.  Moves relative to each element alone would not do: Adam
    divides every element by its own size, so it barely feels them, while a correct sum in
    another order moves a small element by the rounding of the large terms it cancelled."""
    if g.numel() == 0 or not g.is_floating_point():
        return g
    top = float(g.abs().max())
    if top == 0 or not math.isfinite(top):
        return g
    work = g.dtype if g.dtype in (torch.float32, torch.float64) else torch.float32
    step = rules.TRAIN_TWIN_ROUNDING * torch.finfo(g.dtype).eps * top
    moved = torch.rand(g.shape, generator=gen, dtype=work).to(g.device)       # the draw is the CPU's
    moved.mul_(2 * step).sub_(step).add_(g).masked_fill_(g == 0, 0)
    return moved.to(g.dtype)


def _loss_and_upstream(loss: object, out: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The loss of the manual forward's output and its gradient there: the upstream ``g``
    (written out for the two named losses, autograd's for a callable)."""
    if isinstance(loss, Target):
        return float(loss(out)), loss.upstream(out)
    if loss == "sum" or (loss is None and out.numel() == 1):
        return float(out.sum()), torch.ones_like(out)
    if loss == "square":
        return float(0.5 * (out * out).mean()), out / out.numel()
    y = out.detach().requires_grad_(True)
    with torch.enable_grad():
        total = loss_function(loss, y)(y)
        (g,) = torch.autograd.grad(total, [y])
    return float(total.detach()), g


def _params_grads(model: Bound, grads: object, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(grads, Mapping):
        raise TrainError(f"backward returned {type(grads).__name__}, expected a dict of gradients by name "
                         "(`gradcheck-suite check` says more)")
    out = {}
    for n, p in params.items():
        gr = grads.get(n)
        if not isinstance(gr, torch.Tensor):
            raise TrainError(f"backward gave no gradient for {n} (`gradcheck-suite check` says more)")
        if tuple(gr.shape) != tuple(p.shape):
            raise TrainError(f"{n}: gradient shape {tuple(gr.shape)}, expected {tuple(p.shape)} "
                             "(`gradcheck-suite check` says more)")
        out[n] = gr.detach().to(dtype=p.dtype)
    return out


def params_norm(tensors: Mapping[str, torch.Tensor]) -> float:
    """The norm of all of a run's parameters as one vector, in float64."""
    return math.hypot(*(float(torch.linalg.vector_norm(t, dtype=torch.float64)) for t in tensors.values()))


def _gap(a: Run, b: Run) -> float:
    """The norm of the difference of two runs' parameters (all as one vector), in float64."""
    norms = []
    for n, x in a.params.items():
        y = b.params[n]
        if y.dtype != x.dtype:
            # the envelope run against the float64 one, in the envelope's dtype: rounding the
            # float64 side moves the result by at most eps/2 relative, half the envelope's floor
            y = y.to(x.dtype)
        norms.append(float(torch.linalg.vector_norm(x - y, dtype=torch.float64)))
    return math.hypot(*norms)      # no overflow where the runs blow up


def distance_between(a: Run, b: Run, loss_scale: float, param_scale: float) -> float | None:
    """Two runs' distance at their last step: the larger of their losses' difference over
    ``loss_scale`` and their parameters' over ``param_scale``; None where a loss is missing
    or not finite."""
    la, lb = a.losses[-1], b.losses[-1]
    if la is None or lb is None or not (math.isfinite(la) and math.isfinite(lb)):
        return None
    loss = abs(la - lb) / loss_scale if loss_scale > 0 else 0.0
    return max(loss, _gap(a, b) / param_scale)
