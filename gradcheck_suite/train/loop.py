"""The training loop: K steps of the manual run and autograd's (and float64's, below float64),
side by side, with the envelope measured and the parting watched at every step.

Steps count from 1.  Step s computes the loss and the gradient at the parameters that s - 1
steps made, then updates them; ``losses[s - 1]`` is its loss.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ..record.spec import Model
from .envelope import Envelope
from .outcome import decide, watch
from .result import ERROR, Options, TrainError, TrainResult
from .runs import Run, distance_between, params_norm
from .setup import set_up, settings


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
    problem = set_up(model, opts, s, result)
    bound, start, batches, dtype, s, lr = (problem.bound, problem.start, problem.batches, problem.dtype,
                                           problem.s, problem.lr)
    envelope_dtype = torch.float32 if dtype == torch.float64 else dtype
    runs = {
        "manual": Run("manual", bound, start, dtype, opts.device, s["optimizer"], lr, manual=True),
        "autograd": Run("autograd", bound, start, dtype, opts.device, s["optimizer"], lr, manual=False),
    }
    if dtype != torch.float64:
        runs["float64"] = Run("float64", bound, start, torch.float64, opts.device, s["optimizer"], lr, manual=False)
    reference = runs.get("float64", runs["autograd"])
    # a float64 model's envelope run (float32) starts only once the manual run leaves the floor,
    # which no drift can lower; a lower dtype's rounding twins once it leaves the float64 line
    envelope = Envelope(bound, start, envelope_dtype, opts.device, s, lr, batches, runs)
    start_loss = None
    for step in range(1, s["steps"] + 1):
        batch = batches(step - 1)
        for r in runs.values():
            r.advance(batch, s["loss"])
        envelope.advance(step, batch)
        ref_loss = reference.losses[-1]
        envelope.scale(ref_loss, params_norm(reference.params))
        if start_loss is None:
            start_loss = ref_loss if ref_loss is not None and math.isfinite(ref_loss) else None
        distance = distance_between(runs["manual"], runs["autograd"], envelope.loss_scale, envelope.param_scale)
        envelope.measure(step)
        if envelope.waiting and (distance is None or distance > envelope.threshold(step)):
            envelope.catch_up(step)
        result.distance.append(distance)
        result.envelope.append(envelope.threshold(step))
        watch(result, runs, step, start_loss)
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
    decide(result)
