"""Helpers that the factories of more than one kind share: the positional order of the
user's arguments by name, a call's own copy of a hyperparameter, and the record fields a
factory sets itself."""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from ..record.spec import SpecError

#: the names of the user's arguments, in the order their code takes them
Args = Sequence[str]

#: the record fields that a factory sets itself, never its caller
SET_BY_FACTORY = ("params", "grad_data", "kind", "op", "forward", "backward")


def own(value: object) -> object:
    """A call's own copy of a dict or list hyperparameter: course layers write into
    ``bn_param`` (its running mean), which must not leak into the next call."""
    return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


def order(name: str, args: Args | None, groups: Mapping[str, Mapping]) -> tuple[str, ...]:
    """The op's positional arguments by name; by default inputs, then data, then hyperparameters."""
    every = [n for group in groups.values() for n in group]
    seen = set()
    for n in every:
        if n in seen:
            raise SpecError(name, "args", f"{n!r} is named twice among {', '.join(groups)}")
        seen.add(n)
    if args is None:
        return tuple(every)
    args = tuple(args)
    unknown = [a for a in args if a not in seen]
    if unknown:
        raise SpecError(name, "args", f"{unknown[0]!r} is not one of {', '.join(every)}")
    missing = [n for n in every if n not in args]
    if missing or len(set(args)) != len(args):
        raise SpecError(name, "args", f"must name each of {', '.join(every)} once, got {', '.join(args)}")
    return args


def record_fields(name: str, fields: dict) -> dict:
    """The caller's other :class:`Model` fields, passed through; one the factory sets itself
    (``SET_BY_FACTORY``) is refused."""
    for key in SET_BY_FACTORY:
        if key in fields:
            raise SpecError(name, key, "is set by the harness for this kind of model; leave it out")
    return fields

