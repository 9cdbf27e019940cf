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
  leaves that line, autograd against ``rules.TRAIN_TWINS`` **rounding twins**: autograd's
  run in the dtype with its gradient moved, every step, by a random amount of up to the
  dtype's epsilon times the tensor's largest gradient in each nonzero element (what another
  correct summation order gives).  In a chaotic regime (Adam at a large rate) the drift of
  two runs depends on the direction of their first difference as much as on its size, so
  one pair alone can be lucky: the envelope is the widest of several;
- in float64: autograd in float32 against float64 (the nearest run that rounds differently).

The manual run **parts** at the first step where its distance from the autograd run
exceeds ``rules.TRAIN_MARGIN`` times the envelope.  A large learning rate, where any rounding
grows, widens the envelope with it, so it is not blamed on the gradient.

Steps count from 1.  Step s computes the loss and the gradient at the parameters that
s - 1 steps made, then updates them; ``losses[s - 1]`` is its loss.  The distance between
two runs at step s is the larger of the difference of their step-s losses, over the largest
loss of the float64 run so far, and the difference of their parameters after the update,
over the norm of the float64 run's (all parameters as one vector).

Verdicts: ``same``; ``manual diverges`` (parts at step s); ``both diverge`` (autograd's own
loss becomes non-finite or grows ``rules.TRAIN_BLOWUP`` times its start: the learning rate or
the model, not the gradient); ``error`` (a broken contract or an exception, in one line).

The modules, in the order a run meets them: ``result`` (options, verdict names, the result),
``setup`` (settings, case, start, batches, the probe for the loss and learning rate), ``runs``
(one trajectory, its loss and its distance from another), ``envelope`` (the drift of correct
runs and the rounding twins), ``outcome`` (the per-step watch and the verdict), ``loop`` (the
steps), ``plot`` (``train.png``).  The tuned numbers are the Training section of
``verdict/rules.py``.
"""
from .loop import train
from .result import BOTH, ERROR, MANUAL, SAME, Options, TrainError, TrainResult
from .setup import settings

__all__ = ["train", "settings", "Options", "TrainResult", "TrainError", "SAME", "MANUAL", "BOTH", "ERROR"]
