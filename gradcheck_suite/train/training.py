"""Training with the hand-written gradient next to autograd: does it train the same?

A check compares one gradient at one point.  Training asks the question a learner asks
at the end of every tutorial: K optimiser steps with my gradient, K with autograd's, from
the same start: do the losses and the parameters follow the same path?  Three runs:

- ``manual``: the model's forward and hand-written backward, in the model's dtype;
- ``autograd``: autograd of the reference (or of the forward), in the same dtype;
- ``float64``: the same in float64, the reference path.

Two correct gradients never give the same path bit for bit: they round differently, and
training amplifies that wherever the dynamics are sensitive.  How far apart two correct
runs drift is measured, not assumed: the **envelope** at step s is the largest distance so
far between pairs of correct runs that differ by rounding alone:

- in float32 and lower: autograd in the dtype against float64, and, once the manual run
  leaves that line, autograd against ``TWINS`` **rounding twins**: autograd's run in the
  dtype with its gradient moved, every step, by a random amount of up to the dtype's
  epsilon times the tensor's largest gradient in each nonzero element (what another
  correct summation order gives).  In a chaotic regime (Adam at a large rate) the drift of
  two runs depends on the direction of their first difference as much as on its size, so
  one pair alone can be lucky: the envelope is the widest of several;
- in float64: autograd in float32 against float64 (the nearest run that rounds differently).

The manual run **parts** at the first step where its distance from the autograd run
exceeds ``MARGIN`` times the envelope.  A large learning rate, where any rounding grows,
widens the envelope with it, so it is not blamed on the gradient.

Steps count from 1.  Step s computes the loss and the gradient at the parameters that
s - 1 steps made, then updates them; ``losses[s - 1]`` is its loss.  The distance between
two runs at step s is the larger of the difference of their step-s losses, over the largest
loss of the float64 run so far, and the difference of their parameters after the update,
over the norm of the float64 run's (all parameters as one vector).

Verdicts: ``same``; ``manual diverges`` (parts at step s); ``both diverge`` (autograd's own
loss becomes non-finite or grows ``BLOWUP`` times its start: the learning rate or the model,
not the gradient); ``error`` (a broken contract or an exception, in one line).
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..check.case import Bound, Case, ContractError, FactoryError, build, torch_dtype
from ..record.spec import Model, Tensors

SAME, MANUAL, BOTH, ERROR = "same", "manual diverges", "both diverge", "error"

MARGIN = 10.0          # a parting leaves the envelope by this factor
#: rounding twins in float32 and lower: in a chaotic regime the drift of one pair of correct
#: runs spreads over an order of magnitude with the direction of their first difference
#: (tanh net, Adam at lr 1.8, step 7: 2e-6 to 8e-5 over eight twins), so the envelope takes
#: the widest of several.  Correct backwards that round otherwise came within 51x the float64
#: line alone, 5.8x or 1.6x of one twin (two draws), 1.6x of two (docs/train.md has the sweep)
TWINS = 2
#: a twin's gradient moves by up to this many times the dtype's epsilon x the tensor's largest
#: gradient, uniformly at random in each nonzero element: a correct backward that sums in
#: another order differs from autograd by about one such unit (measured: 0.4-1.3 on the tanh
#: net's w1, whose 1 - h*h cancels); exact zeros stay zero, as a mask or an unused row does
TWIN_ROUNDING = 1.0
BLOWUP = 1e4           # a finite loss this many times its start has blown up
STEPS = 100
FIRST_STEP = 0.05      # the default SGD step lowers the loss by this fraction, to first order
ADAM_LR = 1e-3         # torch's own default


@dataclasses.dataclass
class Options:
    """One training run's settings; None where the record's ``train`` dict or the default decides."""

    steps: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    batch: str | None = None
    dims: Mapping[str, int] | None = None
    dtype: str | None = None
    seed: int = 0
    device: str = "cpu"
    scale: float = 1.0             # the start's and the data's value scale, as in a check's case


@dataclasses.dataclass
class TrainResult:
    name: str
    dtype: str
    verdict: str
    steps: int
    lr: float | None = None
    optimizer: str = "sgd"
    batch: str = "fixed"
    dims: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    parted_at: int | None = None
    nonfinite_at: dict = dataclasses.field(default_factory=lambda: {"manual": None, "autograd": None})
    diverged_at: int | None = None               # autograd's own loss blew up or left the numbers
    losses: dict = dataclasses.field(default_factory=lambda: {"manual": [], "autograd": [], "float64": []})
    distance: list = dataclasses.field(default_factory=list)   # manual from autograd, per step
    envelope: list = dataclasses.field(default_factory=list)   # the threshold per step (MARGIN x drift)
    envelope_from: str = ""
    message: str = ""
    notes: list = dataclasses.field(default_factory=list)
    params: dict = dataclasses.field(default_factory=dict)    # the manual run's last parameters
    seconds: float = 0.0
    plot: str | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "verdict": self.verdict, "steps": self.steps,
                "lr": self.lr, "optimizer": self.optimizer, "batch": self.batch, "dims": self.dims,
                "seed": self.seed, "parted_at": self.parted_at, "nonfinite_at": self.nonfinite_at,
                "diverged_at": self.diverged_at,
                "losses": {k: [_number(v) for v in vs] for k, vs in self.losses.items()},
                "distance": [_number(v) for v in self.distance],
                "envelope": [_number(v) for v in self.envelope], "envelope_from": self.envelope_from,
                "message": self.message, "notes": self.notes, "plot": self.plot,
                "seconds": round(self.seconds, 3)}


def _number(v: float | None) -> float | None:
    """JSON has no NaN or Inf: a step that did not happen, or a non-finite value, is null."""
    return None if v is None or not math.isfinite(v) else v


class TrainError(Exception):
    """A contract problem or an exception of the model's code: the run's one-line message."""


# -- the runs -----------------------------------------------------------------------------


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


def _target(out: torch.Tensor, seed: int) -> Target:
    gen = torch.Generator().manual_seed(seed ^ 0x7A46E7)
    size = float(out.double().pow(2).mean().sqrt()) if out.numel() else 1.0
    size = size if math.isfinite(size) and size > 0 else 1.0
    return Target(size * torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device))


def _loss_fn(loss: object, out: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(loss):
        return loss
    if loss == "sum" or (loss is None and out.numel() == 1):
        return lambda y: y.sum()
    return lambda y: 0.5 * (y * y).mean()


class _PlainSGD:
    """p -= lr * grad: what torch.optim.SGD does without momentum, minus its per-step overhead."""

    def __init__(self, params: list[torch.Tensor], lr: float):
        self.params, self.lr = params, lr

    def step(self) -> None:
        torch._foreach_add_(self.params, [p.grad for p in self.params], alpha=-self.lr)


def _optimizer(kind: str, params: list[torch.Tensor], lr: float):
    if kind == "sgd":
        return _PlainSGD(params, lr)
    if kind == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


class _Run:
    """One trajectory: parameters, optimiser, and the loss and gradient of each step."""

    def __init__(self, label: str, model: Bound, start: Mapping[str, torch.Tensor], dtype: torch.dtype,
                 device: str, optimizer: str, lr: float, manual: bool, twin: int | None = None):
        self.label, self.model, self.manual = label, model, manual
        # a rounding twin draws its moves from its own seed, so a replay draws the same ones
        self.twin = None if twin is None else torch.Generator().manual_seed(0x7417 + twin)
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
            returned = _user(self.model.forward, "forward", p, data)
        if not (isinstance(returned, tuple) and len(returned) == 2) or not isinstance(returned[0], torch.Tensor):
            raise TrainError("forward must return (output, cache); `gradcheck-suite check` says more")
        out, cache = returned
        value, g = _loss_and_upstream(loss, out)
        with torch.no_grad():
            grads = _user(self.model.backward, "backward", p, data, cache, g)
        return _params_grads(self.model, grads, self.params), value

    def _autograd(self, data: Tensors, loss: object):
        from ..verdict.oracles import differentiated
        leaves = {n: t.detach().requires_grad_(True) for n, t in self.params.items()}
        with torch.enable_grad():
            out = _user(differentiated, "reference" if self.model.reference else "forward", self.model,
                        Tensors(leaves.items()), data)
            if not isinstance(out, torch.Tensor):
                raise TrainError(f"the {'reference' if self.model.reference else 'forward'}'s output is "
                                 f"{type(out).__name__}, not a tensor")
            total = _loss_fn(loss, out)(out)
            grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        grads = {n: torch.zeros_like(leaves[n]) if gr is None else gr for n, gr in zip(leaves, grads)}
        return grads, float(total.detach())


def _reround(g: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``g`` as another correct backward might round it: each nonzero element moved by a
    uniform random amount of up to ``TWIN_ROUNDING`` x the dtype's epsilon x the largest
    magnitude in ``g``.  Moves relative to each element alone would not do: Adam divides
    every element by its own size, so it barely feels them, while a correct sum in another
    order moves a small element by the rounding of the large terms it cancelled."""
    if g.numel() == 0 or not g.is_floating_point():
        return g
    top = float(g.abs().max())
    if top == 0 or not math.isfinite(top):
        return g
    work = g.dtype if g.dtype in (torch.float32, torch.float64) else torch.float32
    step = TWIN_ROUNDING * torch.finfo(g.dtype).eps * top
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
        total = _loss_fn(loss, y)(y)
        (g,) = torch.autograd.grad(total, [y])
    return float(total.detach()), g


def _user(fn, what: str, *args):
    try:
        return fn(*args)
    except TrainError:
        raise
    except Exception as e:
        from ..record.blame import where
        raise TrainError(f"{what} raised {type(e).__name__}: {e}{where(e)}") from e


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


def _norm(tensors: Mapping[str, torch.Tensor]) -> float:
    return math.hypot(*(float(torch.linalg.vector_norm(t, dtype=torch.float64)) for t in tensors.values()))


def _gap(a: _Run, b: _Run) -> float:
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


class _Batches:
    """The data of each step: one batch (``fixed``), or the case of seed S + s at step s
    (``fresh``), or the record's own ``data(step, dims, gen, dtype)``."""

    def __init__(self, model: Model, case: Case, batch: str, data: Callable | None, first: Tensors):
        self.model, self.case, self.batch, self.data, self.first = model, case, batch, data, dict(first)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        if self.data is not None:
            gen = torch.Generator().manual_seed(self.case.seed + step)
            made = _user(self.data, "train data", step, dict(self.case.values), gen, torch.float64)
            missing = [n for n in self.model.data if not isinstance(made, Mapping) or n not in made]
            if missing:
                raise TrainError(f"train data gave no {', '.join(missing)} at step {step}")
            return {n: torch.as_tensor(made[n]) for n in self.model.data}
        if self.batch == "fixed" or step == 0:
            return self.first
        case = dataclasses.replace(self.case, seed=(self.case.seed + step) % 2**32)
        try:
            return dict(build(self.model, case)[1])
        except (FactoryError, ContractError) as e:
            raise TrainError(str(e)) from e


def settings(model: Model, opts: Options) -> dict[str, Any]:
    """The run's settings: the options, over the record's ``train`` dict, over the defaults."""
    own = dict(model.train or {})
    return {
        "steps": opts.steps or own.get("steps") or STEPS,
        "lr": opts.lr or own.get("lr"),
        "optimizer": opts.optimizer or own.get("optimizer") or "sgd",
        "batch": opts.batch or own.get("batch") or "fixed",
        "dims": {**model.bench_dims, **dict(own.get("dims") or {}), **dict(opts.dims or {})},
        "dtype": opts.dtype or model.dtype,
        "loss": own.get("loss"),
        "data": own.get("data"),
        "start": own.get("start"),
    }


def train(model: Model, opts: Options | None = None, on_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """K steps with the manual gradient, with autograd in the dtype, and in float64."""
    opts = opts or Options()
    began = time.perf_counter()
    s = settings(model, opts)
    result = TrainResult(model.name, s["dtype"], ERROR, s["steps"], s["lr"], s["optimizer"], s["batch"],
                         dict(s["dims"]), opts.seed)
    try:
        _train(model, opts, s, result, on_step)
    except TrainError as e:
        result.verdict, result.message = ERROR, f"{model.name}: {e}"
    except Exception as e:         # the harness's own fault: said so, with where, not the model's
        import traceback
        result.verdict = ERROR
        result.message = (f"{model.name}: internal error in gradcheck-suite while training ({type(e).__name__}: "
                          f"{e}); not your model's fault, please report it")
        result.notes.append("".join(traceback.format_exception(e)).rstrip())
    result.seconds = time.perf_counter() - began
    return result


def _train(model: Model, opts: Options, s: dict, result: TrainResult, on_step) -> None:
    from ..record.spec import train_problem
    text = train_problem({k: s[k] for k in ("lr", "steps", "optimizer", "batch")})
    if text:
        raise TrainError(text)
    if model.two_way:
        raise TrainError("numpy code without a reference has no autograd to train against: give the record a "
                         "`reference` in torch")
    if not model.params:
        raise TrainError("nothing to train: the record has no params (its gradients are for data only)")
    problem_ = model.check_dims(s["dims"])
    if problem_:
        raise TrainError(problem_)
    hyper = model.bench_hyper
    case = Case(model.name, dict(s["dims"]), "float64", opts.device, opts.seed, opts.scale, hyper)
    bound = Bound(model, case)
    try:
        p, d = build(model, case)
    except (FactoryError, ContractError) as e:
        raise TrainError(str(e)) from e
    start = dict(p)
    if s["start"] is not None:
        gen = torch.Generator().manual_seed(opts.seed)
        made = _user(s["start"], "train start", dict(case.values), gen, torch.float64)
        start.update({n: torch.as_tensor(made[n], dtype=torch.float64) for n in model.params
                      if isinstance(made, Mapping) and n in made})
    batches = _Batches(model, case, s["batch"], s["data"], d)
    dtype = torch_dtype(s["dtype"])
    loss, lr = _probe(bound, start, batches(0), s, opts)
    s = {**s, "loss": loss}
    if s["lr"] is None:
        result.notes.append(f"learning rate {lr:.3g}: " + (
            "torch's Adam default" if s["optimizer"] == "adam" else
            f"the step that lowers the first loss by {FIRST_STEP:.0%} to first order (--lr to choose one)"))
    result.lr = lr
    envelope_dtype = torch.float32 if dtype == torch.float64 else dtype
    runs = {
        "manual": _Run("manual", bound, start, dtype, opts.device, s["optimizer"], lr, manual=True),
        "autograd": _Run("autograd", bound, start, dtype, opts.device, s["optimizer"], lr, manual=False),
    }
    if dtype != torch.float64:
        runs["float64"] = _Run("float64", bound, start, torch.float64, opts.device, s["optimizer"], lr, manual=False)
    reference = runs.get("float64", runs["autograd"])
    # a float64 model's envelope run (float32) starts only once the manual run leaves the floor,
    # which no drift can lower; a lower dtype's rounding twins once it leaves the float64 line
    envelope = _Envelope(bound, start, envelope_dtype, opts.device, s, lr, batches, runs)
    start_loss = None
    for step in range(1, s["steps"] + 1):
        batch = batches(step - 1)
        for r in runs.values():
            r.advance(batch, s["loss"])
        envelope.advance(step, batch)
        ref_loss = reference.losses[-1]
        envelope.scale(ref_loss, _norm(reference.params))
        if start_loss is None:
            start_loss = ref_loss if ref_loss is not None and math.isfinite(ref_loss) else None
        distance = _distance(runs["manual"], runs["autograd"], envelope.loss_scale, envelope.param_scale)
        envelope.measure(step)
        if envelope.waiting and (distance is None or distance > envelope.threshold(step)):
            envelope.catch_up(step)
        result.distance.append(distance)
        result.envelope.append(envelope.threshold(step))
        _watch(result, runs, step, start_loss)
        if on_step is not None:
            on_step(step, s["steps"])
        if all(r.stopped for r in runs.values()):
            break
    result.envelope = envelope.thresholds(len(result.envelope))
    result.envelope_from = envelope.described()
    missing = [None] * (s["steps"] - len(result.envelope))     # the steps that did not happen: null
    for key in ("manual", "autograd", "float64"):
        result.losses[key] = list(runs.get(key, reference).losses) + missing
    result.distance += missing
    result.envelope += missing
    result.params = {n: t.detach().clone() for n, t in runs["manual"].params.items()}
    _verdict(result)


class _Envelope:
    """The drift of pairs of correct runs, step by step, as the parting line ``MARGIN`` x
    drift (never below ``MARGIN`` x the envelope dtype's epsilon).

    Each pair's distance is measured every step once its runs exist; the drift at step s is
    the largest of them all so far.  Some runs start late, once the manual run first leaves
    the line the others draw (while it stays under, no wider envelope could make it part):

    - float64 model: no pair at first (the floor alone); then a float32 autograd run against
      the float64 one;
    - lower dtype: autograd in the dtype against float64 from the start; then ``TWINS``
      rounding twins against autograd in the dtype.

    A run that starts at step s replays steps 1..s from the same start and batches, next to a
    replay of the autograd run it is measured against (both are deterministic, and so is a
    twin's draw), so its drift is known for every step, as if it had run from the start.
    """

    def __init__(self, bound: Bound, start, dtype: torch.dtype, device: str, s: dict, lr: float, batches,
                 runs: Mapping[str, _Run]):
        self.bound, self.start, self.dtype, self.device, self.s, self.lr = bound, start, dtype, device, s, lr
        self.batches, self.autograd = batches, runs["autograd"]
        self.floor = torch.finfo(dtype).eps
        self.low = "float64" in runs               # the model's dtype is below float64
        self.pairs: list[tuple[_Run, _Run]] = [(runs["autograd"], runs["float64"])] if self.low else []
        self.waiting = True                         # the late runs have not started
        self.loss_scale, self.param_scale = 0.0, 1e-300
        self.scales: list[tuple[float, float]] = []     # per step, for a replay
        self.drifts: list[float] = []                   # the running maximum per step

    def scale(self, ref_loss: float | None, ref_norm: float) -> None:
        if ref_loss is not None and math.isfinite(ref_loss):
            self.loss_scale = max(self.loss_scale, abs(ref_loss))
        self.param_scale = max(ref_norm, 1e-300)
        self.scales.append((self.loss_scale, self.param_scale))

    def measure(self, step: int) -> None:
        """This step's drift: the largest distance of a running pair, folded into the maximum so far."""
        if len(self.drifts) >= step:
            return
        last = self.drifts[-1] if self.drifts else 0.0
        for a, b in self.pairs:
            drift = _distance(a, b, self.loss_scale, self.param_scale)
            last = max(last, drift) if drift is not None else last
        self.drifts.append(last)

    def threshold(self, step: int) -> float:
        drift = self.drifts[step - 1] if len(self.drifts) >= step else 0.0
        return MARGIN * max(drift, self.floor)

    def advance(self, step: int, batch) -> None:
        """The late runs, once they started, keep step with the others."""
        for a, _ in self.pairs:
            if len(a.losses) < step:
                a.advance(batch, self.s["loss"])

    def thresholds(self, steps: int) -> list[float]:
        return [self.threshold(i) for i in range(1, steps + 1)]

    def _late_runs(self) -> list[_Run]:
        make = lambda label, dtype, twin=None: _Run(label, self.bound, self.start, dtype,  # noqa: E731
                                                    self.device, self.s["optimizer"], self.lr, manual=False,
                                                    twin=twin)
        if self.low:
            return [make(f"rounding twin {i + 1}", self.dtype, twin=i) for i in range(TWINS)]
        return [make("envelope", self.dtype)]

    def catch_up(self, step: int) -> None:
        """Start the late runs: replay steps 1..step with them and a replay of autograd's run,
        and fold their drifts into every step's."""
        late, self.waiting = self._late_runs(), False
        if not late:
            return
        replay = _Run("autograd replay", self.bound, self.start, self.autograd.dtype, self.device,
                      self.s["optimizer"], self.lr, manual=False)
        last = 0.0
        for t in range(1, step + 1):
            batch = self.batches(t - 1)
            replay.advance(batch, self.s["loss"])
            for run in late:
                run.advance(batch, self.s["loss"])
                drift = _distance(run, replay, *self.scales[t - 1])
                last = max(last, drift) if drift is not None else last
            self.drifts[t - 1] = max(self.drifts[t - 1], last)
        self.pairs += [(run, self.autograd) for run in late]
        del replay

    def described(self) -> str:
        """How the parting line was drawn, for the report."""
        name = str(self.dtype).replace("torch.", "")
        if not self.low and self.waiting:
            return (f"{MARGIN:g} × {name}'s epsilon, the floor: the manual run never left it, and no "
                    f"drift can lower it, so the {name} run was not needed")
        if not self.low:
            return (f"{MARGIN:g} × the drift of autograd in {name} against autograd in float64 (the nearest "
                    "run that rounds differently from a float64 one)")
        text = f"{MARGIN:g} × the drift of autograd in {name} against autograd in float64"
        if self.waiting:
            return text + "; the manual run never left it, so the rounding twins were not needed"
        return (text + f", or against {TWINS} rounding twins (autograd with its gradient moved by up to "
                f"{name}'s epsilon in each element), whichever is wider")


def _distance(a: _Run, b: _Run, loss_scale: float, param_scale: float) -> float | None:
    la, lb = a.losses[-1], b.losses[-1]
    if la is None or lb is None or not (math.isfinite(la) and math.isfinite(lb)):
        return None
    loss = abs(la - lb) / loss_scale if loss_scale > 0 else 0.0
    return max(loss, _gap(a, b) / param_scale)


def _watch(result: TrainResult, runs: Mapping[str, _Run], step: int, start_loss: float | None) -> None:
    """Non-finite losses, autograd's blow-up, and the manual run's parting, at this step."""
    for key in ("manual", "autograd"):
        value = runs[key].losses[-1]
        if value is not None and not math.isfinite(value) and result.nonfinite_at[key] is None:
            result.nonfinite_at[key] = step
    if result.diverged_at is None:
        for key in ("autograd", "float64"):
            value = runs[key].losses[-1] if key in runs else None
            if value is not None and (not math.isfinite(value) or (
                    start_loss is not None and abs(value) > BLOWUP * max(abs(start_loss), 1e-300))):
                result.diverged_at = step
                break
    if result.parted_at is None:
        manual, auto = runs["manual"].losses[-1], runs["autograd"].losses[-1]
        distance = result.distance[-1]
        if manual is not None and not math.isfinite(manual) and auto is not None and math.isfinite(auto):
            result.parted_at = step
        elif distance is not None and distance > result.envelope[-1]:
            result.parted_at = step


def _verdict(result: TrainResult) -> None:
    m, a = result.losses["manual"], result.losses["autograd"]

    def loss(values: list, step: int) -> str:
        v = values[step - 1] if step - 1 < len(values) else None
        return "not run" if v is None else f"{v:.6g}"

    first, ref = a[0] if a else None, result.losses["float64"][0] if result.losses["float64"] else None
    if a and (first is None or not math.isfinite(first)) and ref is not None and math.isfinite(ref):
        result.verdict = ERROR
        result.message = (f"{result.name}: the loss is {first} in {result.dtype} from the start, where float64 gives "
                          f"{ref:.6g}: it does not fit {result.dtype} here; train in a wider dtype, at a smaller "
                          "--scale or at smaller --dims")
        return
    if result.diverged_at is not None:
        t = result.diverged_at
        result.verdict = BOTH
        result.message = (f"{result.name}: the learning rate or the model, not your gradient: autograd diverges too "
                          f"at step {t} (loss {loss(a, t)}, from {loss(a, 1)} at step 1); lower --lr to compare "
                          "the gradients")
        if result.parted_at is not None and result.parted_at < t:
            result.notes.append(f"the manual run had parted from autograd at step {result.parted_at}, before "
                                "autograd diverged: train again with a lower learning rate to tell a wrong "
                                "gradient from an unstable one")
        return
    if result.parted_at is not None:
        s = result.parted_at
        result.verdict = MANUAL
        distance, last = result.distance[s - 1], max((i + 1 for i, v in enumerate(m) if v is not None), default=s)
        if distance is None:
            how = f"its loss is {loss(m, s)} where autograd's is {loss(a, s)}"
        else:
            how = (f"the runs are {distance:.2g} apart (relative), where two correct gradients drift at most "
                   f"{result.envelope[s - 1] / MARGIN:.2g} by then; loss {loss(m, s)} against autograd's "
                   f"{loss(a, s)}")
            if last > s:
                how += f"; at step {last}, loss {loss(m, last)} against {loss(a, last)}"
        result.message = f"{result.name}: the manual gradient trains differently from autograd from step {s}: {how}"
        return
    result.verdict = SAME
    done = len(m)
    result.message = (f"{result.name}: trains like autograd for {done} steps; final loss {loss(m, done)} "
                      f"against autograd's {loss(a, done)}")


def _probe(model: Bound, start: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], s: dict,
           opts: Options) -> tuple[object, float]:
    """The loss to train on and the learning rate, from one float64 forward at the start
    where the settings leave either open.

    The loss: ``"sum"`` for a scalar output, else a :class:`Target` drawn from the seed.
    The learning rate: Adam's is torch's default; SGD's is the step that lowers the first
    loss by ``FIRST_STEP`` to first order, ``FIRST_STEP * |L| / |grad L|^2`` (a tenth of that
    with momentum, whose steps add up to about ten times one)."""
    from ..verdict.oracles import differentiated
    loss, lr = s["loss"], s["lr"]
    if lr is None and s["optimizer"] == "adam":
        lr = ADAM_LR
    if loss is not None and lr is not None:
        return loss, lr
    run = _Run("probe", model, start, torch.float64, opts.device, "sgd", 1.0, manual=False)
    leaves = {n: t.requires_grad_(lr is None) for n, t in run.params.items()}
    what = "reference" if model.reference else "forward"
    with torch.set_grad_enabled(lr is None):
        out = _user(differentiated, what, model, Tensors(leaves.items()), run.cast(batch))
        if not isinstance(out, torch.Tensor):
            raise TrainError(f"the {what}'s output is {type(out).__name__}, not a tensor")
        if loss is None:
            loss = "sum" if out.numel() == 1 else _target(out.detach(), opts.seed)
        if lr is not None:
            return loss, lr
        total = _loss_fn(loss, out)(out)
        value = float(total.detach())
        grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    squared = sum(float(gr.double().pow(2).sum()) for gr in grads if gr is not None)
    if not (math.isfinite(value) and math.isfinite(squared)) or squared == 0 or value == 0:
        return loss, 1e-3
    lr = FIRST_STEP * abs(value) / squared
    return loss, lr / 10 if s["optimizer"] == "momentum" else lr
