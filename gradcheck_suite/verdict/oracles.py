"""The two oracles: torch autograd (:mod:`.autograd_oracle`, with the rounding a backward
carries in :mod:`.rounding`), and finite differences of the forward alone
(:mod:`.finite_differences`).  Their names are read here as ``oracles.NAME``; the tuned
numbers they use are in :mod:`.rules`.
"""
from __future__ import annotations

from .autograd_oracle import (EXACT, Traced, autograd, backward_into, decomposed_autograd, differentiated,
                              on_leaves, refuses_grad, tensors_in, traced_autograd, vjp, weighted)
from .finite_differences import (Estimate, Finding, Line, Phi, central, element_direction, estimate, estimates,
                                 judge, jumps, line, moved, random_direction, scale_of)
from .rounding import BOUNDED, UNIT, backward_rounding

__all__ = ["EXACT", "Traced", "autograd", "backward_into", "decomposed_autograd", "differentiated", "on_leaves",
           "refuses_grad", "tensors_in", "traced_autograd", "vjp", "weighted", "Estimate", "Finding", "Line", "Phi",
           "central", "element_direction", "estimate", "estimates", "judge", "jumps", "line", "moved",
           "random_direction", "scale_of", "BOUNDED", "UNIT", "backward_rounding"]

