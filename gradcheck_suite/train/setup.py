"""A training run's problem, set up before its first step: the settings (options over the
record's ``train`` dict over the defaults), the case and the start, the data of each step,
and the loss and learning rate where the settings leave them open (from one float64 probe).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..check.case import Bound, Case, build, torch_dtype

from ..record.errors import ContractError, FactoryError, Unsupported
from ..record.spec import Model, Tensors, train_problem
from ..verdict import rules
from .result import Options, TrainError, TrainResult
from .runs import Run, call_user, loss_function, make_target


def settings(model: Model, opts: Options) -> dict[str, Any]:
    """The run's settings: the options, over the record's ``train`` dict, over the defaults."""
    own = dict(model.train or {})
    return {
        "steps": opts.steps or own.get("steps") or rules.TRAIN_STEPS,
        "lr": opts.lr or own.get("lr"),
        "optimizer": opts.optimizer or own.get("optimizer") or "sgd",
        "batch": opts.batch or own.get("batch") or "fixed",
        "dims": {**model.bench_dims, **dict(own.get("dims") or {}), **dict(opts.dims or {})},
        "dtype": opts.dtype or model.dtype,
        "loss": own.get("loss"),
        "data": own.get("data"),
        "start": own.get("start"),
    }


class Batches:
    """The data of each step: one batch (``fixed``), or the case of seed S + s at step s
    (``fresh``), or the record's own ``data(step, dims, gen, dtype)``."""

    def __init__(self, model: Model, case: Case, batch: str, data: Callable | None, first: Tensors):
        self.model, self.case, self.batch, self.data, self.first = model, case, batch, data, dict(first)

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        if self.data is not None:
            gen = torch.Generator().manual_seed(self.case.seed + step)
            made = call_user(self.data, "train data", step, dict(self.case.values), gen, torch.float64)
            missing = [n for n in self.model.data if not isinstance(made, Mapping) or n not in made]
            if missing:
                raise TrainError(f"train data gave no {', '.join(missing)} at step {step}")
            return {n: torch.as_tensor(made[n]) for n in self.model.data}
        if self.batch == "fixed" or step == 0:
            return self.first
        case = dataclasses.replace(self.case, seed=(self.case.seed + step) % 2**32)
        try:
            return dict(build(self.model, case)[1])
        except (FactoryError, ContractError, Unsupported) as e:
            raise TrainError(str(e)) from e


@dataclasses.dataclass
class Problem:
    """What the steps need, set up once: the model bound to its float64 case, the start, the
    batches, the dtype to train in, the settings (the loss decided) and the learning rate."""

    bound: Bound
    start: dict
    batches: Batches
    dtype: torch.dtype
    s: dict
    lr: float


def set_up(model: Model, opts: Options, s: dict, result: TrainResult) -> Problem:
    """The problem of one run, or a :class:`TrainError` saying why it cannot train; notes on
    ``result`` what it chose (the learning rate)."""
    text = train_problem({k: s[k] for k in ("lr", "steps", "optimizer", "batch")})
    if text:
        raise TrainError(text)
    if model.two_way:
        raise TrainError("numpy code without a reference has no autograd to train against: give the record a "
                         "`reference` in torch")
    if not model.params:
        raise TrainError("nothing to train: the record has no params (its gradients are for data only)")
    if torch_dtype(s["dtype"]).is_complex:
        raise TrainError(f"{s['dtype']}: training runs in real dtypes only; `gradcheck-suite check` checks a complex "
                         "backward (train it with --dtype float64 where its code takes real tensors)")
    problem_ = model.check_dims(s["dims"])
    if problem_:
        raise TrainError(problem_)
    hyper = model.bench_hyper
    case = Case(model.name, dict(s["dims"]), "float64", opts.device, opts.seed, opts.scale, hyper)
    bound = Bound(model, case)
    try:
        p, d = build(bound, case)
    except (FactoryError, ContractError, Unsupported) as e:
        raise TrainError(str(e)) from e
    if getattr(bound.h, "sparse", None):
        raise TrainError(f"{', '.join(bound.h.sparse)}: a sparse COO input is checked on its specified elements "
                         "(gradcheck-suite check), but training runs dense tensors only")
    start = dict(p)
    if s["start"] is not None:
        gen = torch.Generator().manual_seed(opts.seed)
        made = call_user(s["start"], "train start", dict(case.values), gen, torch.float64)
        start.update({n: torch.as_tensor(made[n], dtype=torch.float64) for n in model.params
                      if isinstance(made, Mapping) and n in made})
    batches = Batches(model, case, s["batch"], s["data"], d)
    dtype = torch_dtype(s["dtype"])
    loss, lr = probe(bound, start, batches(0), s, opts)
    s = {**s, "loss": loss}
    if s["lr"] is None:
        result.notes.append(f"learning rate {lr:.3g}: " + (
            "torch's Adam default" if s["optimizer"] == "adam" else
            f"the step that lowers the first loss by {rules.TRAIN_FIRST_STEP:.0%} to first order "
            "(--lr to choose one)"))
    result.lr = lr
    return Problem(bound, start, batches, dtype, s, lr)


def probe(model: Bound, start: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], s: dict,
          opts: Options) -> tuple[object, float]:
    """The loss to train on and the learning rate, from one float64 forward at the start
    where the settings leave either open.

    The loss: ``"sum"`` for a scalar output, else a :class:`~.runs.Target` drawn from the seed.
    The learning rate: Adam's is torch's default; SGD's is the step that lowers the first
    loss by ``rules.TRAIN_FIRST_STEP`` to first order, ``TRAIN_FIRST_STEP * |L| / |grad L|^2``
    (divided by ``rules.TRAIN_MOMENTUM_STEPS`` with momentum, whose steps add up to about that
    many times one)."""
    from ..verdict.oracles import differentiated
    loss, lr = s["loss"], s["lr"]
    if lr is None and s["optimizer"] == "adam":
        lr = rules.TRAIN_ADAM_LR
    if loss is not None and lr is not None:
        return loss, lr
    run = Run("probe", model, start, torch.float64, opts.device, "sgd", 1.0, manual=False)
    leaves = {n: t.requires_grad_(lr is None) for n, t in run.params.items()}
    what = "reference" if model.reference else "forward"
    with torch.set_grad_enabled(lr is None):
        out = call_user(differentiated, what, model, Tensors(leaves.items()), run.cast(batch))
        if not isinstance(out, torch.Tensor):
            raise TrainError(f"the {what}'s output is {type(out).__name__}, not a tensor")
        if loss is None:
            loss = "sum" if out.numel() == 1 else make_target(out.detach(), opts.seed)
        if lr is not None:
            return loss, lr
        total = loss_function(loss, out)(out)
        value = float(total.detach())
        grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    squared = sum(float(gr.double().pow(2).sum()) for gr in grads if gr is not None)
    if not (math.isfinite(value) and math.isfinite(squared)) or squared == 0 or value == 0:
        return loss, rules.TRAIN_FALLBACK_LR
    lr = rules.TRAIN_FIRST_STEP * abs(value) / squared
    return loss, lr / rules.TRAIN_MOMENTUM_STEPS if s["optimizer"] == "momentum" else lr
