"""A run split across machines: ``check --shard K/N`` and pytest's ``--gradcheck-shard K/N``
run the K-th of N parts of the selected models, each model (with all its dtypes and devices)
in exactly one part.

The split is a function of the selected records alone: the models are sorted by name (Python's
string order, the same everywhere), each is given an integer estimate of its cost, and the
parts are filled largest first, each model going to the part with the least cost so far (the
lowest-numbered on a tie).  Nothing read from the machine, the files' order on disk, a hash
seed or the clock enters it, so the N jobs of a CI matrix agree on it without talking to each
other, and the command line and the pytest plugin split alike.

The estimate (:func:`cost`) is what a case of the record handles: the elements of its
parameters and data with every dim and hyperparameter at the top of its range (hypothesis
draws the ends often), plus ``rules.SHARD_CASE_ELEMENTS`` for what a case costs whatever its
size.  Every model runs the same number of cases (the profile's, or ``--examples``), so the
case count does not change the balance.  Where a record's size cannot be told without running
it (its shapes raise at those values), every model counts the same: the parts are balanced by
count.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..record.spec import Model
from ..verdict import rules
from .limits import largest


def cost(model: Model) -> int | None:
    """What one case of ``model`` costs, as elements handled; None where its shapes cannot be
    told from the record."""
    try:
        top = largest(model, {}, {})
        elements = sum(math.prod(model.shape(n, top)) for n in (*model.params, *model.data))
    except Exception:      # a shape the record cannot give at these values: the check will say so
        return None
    return int(elements) + rules.SHARD_CASE_ELEMENTS


def split(models: Sequence[Model], count: int) -> list[list[Model]]:
    """The ``count`` parts of ``models``: each model in exactly one, each part in the order of
    ``models``; the same parts for the same records in any order."""
    costs = {m.name: cost(m) for m in models}
    if any(c is None for c in costs.values()):
        costs = dict.fromkeys(costs, 1)          # balanced by count
    order = sorted(models, key=lambda m: (-costs[m.name], m.name))
    loads = [0] * count
    where: dict[str, int] = {}
    for m in order:
        i = min(range(count), key=lambda j: (loads[j], j))
        where[m.name] = i
        loads[i] += costs[m.name]
    return [[m for m in models if where[m.name] == i] for i in range(count)]


def part(models: Sequence[Model], index: int, count: int) -> list[Model]:
    """The ``index``-th (from 1) of ``count`` parts of ``models``."""
    return split(models, count)[index - 1]
