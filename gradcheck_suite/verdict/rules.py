"""Every tuned number of the verdicts, the runs, training and the benchmark gate, on one page.

Each is named once, here, with a ``#:`` comment giving its reason; the code reads it as
``rules.NAME`` (so that a test can patch it in one place).  ``docs/rules.md`` tables them, and
``tests/test_rules.py`` checks that table against this module.
"""
from __future__ import annotations

# --- tolerance: how close two gradients must be (verdict/tolerance.py) ---

# --- oracles: autograd and finite differences (verdict/oracles.py) ---

# --- the check's stages (check/) ---

# --- drawing cases, running, shrinking and limits (run/) ---

# --- diagnosis (diagnose/) ---

# --- training (train/) ---
#: the manual run parts from autograd's where their distance leaves this many times the drift
#: of correct runs (never less than this many times the envelope dtype's epsilon).  Chosen on
#: correct models: over 126 correct runs (a tenth of the stable step to several times it, SGD,
#: momentum and Adam, float32 and float64) a margin of 1 parted 3, each within 1.5x the drift;
#: 10 parted none, and the closest of 210 came within 2.6x (docs/train.md has the sweep)
TRAIN_MARGIN = 10.0
#: rounding twins in float32 and lower: in a chaotic regime the drift of one pair of correct
#: runs spreads over an order of magnitude with the direction of their first difference
#: (tanh net, Adam at lr 1.8, step 7: 2e-6 to 8e-5 over eight twins), so the envelope takes
#: the widest of several.  Correct backwards that round otherwise came within 51x the float64
#: line alone, 5.8x or 1.6x of one twin (two draws), 1.6x of two (docs/train.md has the sweep)
TRAIN_TWINS = 2
#: a twin's gradient moves by up to this many times the dtype's epsilon x the tensor's largest
#: gradient, uniformly at random in each nonzero element: a correct backward that sums in
#: another order differs from autograd by about one such unit (measured: 0.4-1.3 on the tanh
#: net's w1, whose 1 - h*h cancels); exact zeros stay zero, as a mask or an unused row does
TRAIN_TWIN_ROUNDING = 1.0
#: seed salt of the rounding twins' moves (twin i draws from this + i): a replay draws the same
TRAIN_TWIN_SALT = 0x7417
#: a finite loss of autograd's run this many times its start has blown up: "both diverge"
TRAIN_BLOWUP = 1e4
#: optimiser steps of a run where neither the options nor the record's ``train`` dict say
TRAIN_STEPS = 100
#: the default SGD step lowers the first loss by this fraction, to first order:
#: lr = TRAIN_FIRST_STEP * |L| / |grad L|^2
TRAIN_FIRST_STEP = 0.05
#: momentum's steps add up to about this many times one (1 / (1 - TRAIN_MOMENTUM)), so its
#: default learning rate is SGD's divided by this
TRAIN_MOMENTUM_STEPS = 10
#: the ``momentum`` optimiser: torch.optim.SGD with this momentum
TRAIN_MOMENTUM = 0.9
#: Adam's default learning rate: torch's own default
TRAIN_ADAM_LR = 1e-3
#: SGD's learning rate where the first-order step cannot be computed (the first loss or its
#: gradient is zero or not finite)
TRAIN_FALLBACK_LR = 1e-3
#: seed salt of the default loss's random target (drawn from the run's seed ^ this)
TRAIN_TARGET_SALT = 0x7A46E7
#: the smallest scale a distance or a blow-up is measured against (a parameter norm, a start
#: loss), so that none divides by zero; also the floor of the plot's log axis
TRAIN_TINY = 1e-300

# --- the benchmark gate (bench/) ---
