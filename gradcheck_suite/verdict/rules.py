"""Every tuned number of the verdicts, the runs, training and the benchmark gate, on one page.

Each is named once, here, with a ``#:`` comment giving its reason; the code reads it as
``rules.NAME`` (so that a test can patch it in one place).  ``docs/rules.md`` tables them, and
``tests/test_rules.py`` checks that table against this module.
"""
from __future__ import annotations

# --- tolerance: how close two gradients must be (verdict/tolerance.py) ---

# --- oracles: autograd and finite differences (verdict/oracles.py) ---

# --- the check's stages (check/) ---

#: Tensors with at most this many elements get a finite difference for every element.
SMALL_TENSOR = 16

#: Random directions per case (every element is compared with autograd anyway).
PROBES = 1

#: Mismatched elements examined with finite differences, per tensor; also the elements drawn
#: at random where a direction sees a kink, and the worst elements probed of a tensor that
#: passed only thanks to the measured jitter.
EXAMINE = 5

#: A finite-difference estimate this close (relative) needs no other step.
PRECISE = 1e-6

#: Relative size of the jitter that measures rounding in float64: large enough to move the
#: rounding of a sigmoid saturated to 1e-13.
JITTER = 1e-4

#: Elements per tensor probed one by one where finite differences are the only oracle (numpy
#: code without a reference); the rest are judged together along one random direction.
FD_ONLY_ELEMENTS = 24

#: The default tensor factory keeps values this many scales inside a domain bound.
FACTORY_MARGIN = 0.1

#: A scalar output's upstream gradient is +-(UPSTREAM_LOW + UPSTREAM_WIDTH * u), u uniform on
#: [0, 1): never close to 1, so a backward that ignores its upstream gradient fails.
UPSTREAM_LOW = 1.5
#: See ``UPSTREAM_LOW``.
UPSTREAM_WIDTH = 1.5

#: The one value of an expanded upstream gradient (layouts) where the case's has no finite,
#: nonzero root mean square to take instead.
LAYOUT_FILL = 1.5

#: A finite-difference estimate agrees with a gradient within this many times its own error,
#: plus the tolerance (``oracles.Estimate.agrees``); the figure reported for a probe
#: (``measure.fd_ratio``) and the allowance of a probed element where finite differences are
#: the only oracle (``stages/fd_only.py``) use the same allowance, so that what they report is
#: what the estimate was judged with.
ESTIMATE_ERRORS = 8.0

# Seed salts: each stage that draws random numbers from a case's seed mixes in its own salt,
# so that its draws are independent of the others' and the same on every run.  Changing a
# salt changes which values (and so which cases) are drawn: every verdict on record may move.
#: The upstream gradient ``g`` of a case (``check/case.py``, ``upstream``).
SALT_UPSTREAM = 0x5EED
#: Which elements of a mismatched tensor finite differences examine beyond the worst ones,
#: and which they probe where a random direction sees a kink.
SALT_EXAMINE = 0xF1D
#: The random directions of the finite-difference probes: direction ``k`` of a case is drawn
#: from ``seed * SALT_PROBES + k`` (a prime multiplier, not an exclusive-or).
SALT_PROBES = 7919
#: The random signs of the small moves that measure the jitter (``check/floor.py``).
SALT_JITTER = 0x717
#: The probes of a check by finite differences alone, without a reference.
SALT_FD_ONLY = 0x2FD
#: The double-backward check's weights ``u`` ...
SALT_DOUBLE = 0xDB
#: ... and its random direction.
SALT_DOUBLE_DIRECTION = 0xDB2

# --- drawing cases, running, shrinking and limits (run/) ---

# --- diagnosis (diagnose/) ---

# --- training (train/) ---

# --- the benchmark gate (bench/) ---
