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

#: The mistake ``permuted``: axis orders are tried on tensors (and on the upstream gradient and
#: inputs) of at most this many axes: a rank r has r! - 1 orders to try.
PERMUTED_RANK = 4

#: The mistake ``ignores_upstream``: the backward is called again with another upstream gradient,
#: g plus standard normals drawn from the case's seed XOR this salt (another draw than g's own,
#: the same at every run of the case).
IGNORES_UPSTREAM_SALT = 0xD1A

#: The mistake ``ignores_upstream`` for a scalar g: the other upstream gradient is g times this.
SCALAR_UPSTREAM_FACTOR = 2.0

#: The mistake ``scale``: a least-squares factor k (manual = k · autograd) within this of 1 is no
#: factor.
FACTOR_NOT_ONE = 1e-9

#: A factor within this relative distance of a dim's size, or of its inverse, is named after
#: that dim (``×N (N = 8): a mean taken as a sum?``); the text and what must match across sizes
#: use the same test.
FACTOR_DIM_RTOL = 1e-6

#: A factor within this relative distance of a simple fraction is shown as that fraction.
FACTOR_FRACTION_RTOL = 1e-9

#: A simple fraction: denominator at most this (``1/2``, ``3/8``) ...
FACTOR_MAX_DENOMINATOR = 8

#: ... and, for its meaning to be named (``×1/2: a missing ½?``), numerator at most this.
FACTOR_MAX_NUMERATOR = 8

#: Rows or columns a ``partial`` mistake lists before ``...``.
DIAGNOSIS_SHOWN_INDICES = 6

#: Wrong elements a ``partial`` mistake or a never-written location lists as examples, not all
#: of them: millions at a wide layer.
DIAGNOSIS_SHOWN_ELEMENTS = 3

#: Tracing the backward: a dict, tuple or list that holds more tensors than this is not followed
#: slot by slot (each change copies every slot).
TRACED_CONTAINER_SLOTS = 64

#: Tracing: a numpy array of at most this many elements is stamped by a hash of its bytes, so that
#: an in-place change shows; a larger one by its size only.
TRACED_HASH_ELEMENTS = 100_000

#: The line that first goes wrong: at most this many steps back through lines that only
#: rearrange a value (a slice, a flip).
ORIGIN_STEPS = 32

#: Whether a value holds the right gradient as a block (a padded gradient): every window
#: position is compared, and past this many elements compared it is not tried.
HOLDS_WINDOW_ELEMENTS = 4_000_000

#: A local of a numpy forward or a Function is named after the reference's tensor, and a mask the
#: backward recomputes is the forward's own, where they agree within this relative tolerance ...
FORWARD_SAME_RTOL = 1e-9

#: ... and this absolute one.
FORWARD_SAME_ATOL = 1e-12

# --- training (train/) ---

# --- the benchmark gate (bench/) ---
