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

# --- the benchmark gate (bench/) ---
