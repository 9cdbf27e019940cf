"""How a case is judged: the tuned numbers (:mod:`.rules`), the tolerance of a comparison
(:mod:`.tolerance`), and the two oracles (:mod:`.oracles`): autograd (:mod:`.autograd_oracle`,
with the rounding a backward carries in :mod:`.rounding`) and finite differences
(:mod:`.finite_differences`)."""
