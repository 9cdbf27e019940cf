"""How a case is judged: the tuned numbers (:mod:`.rules`), the tolerance of a comparison
(:mod:`.tolerance`), and the autograd and finite-difference oracles (:mod:`.oracles`)."""
