"""An entry of the parallel bank: one public parallel Function (or a callable around one), its
label, and the sharded record that describes how it runs across ranks.

The record is written against the harness's ``sharded_model`` API (docs: the sharded record);
``sharded_model`` here keeps the arguments as given (a :class:`ShardedSpec`), so the bank and its
brute-force check (``verify.py``) need no harness code.  ``ShardedSpec.build()`` turns it into the
harness's own record where ``gradcheck_suite.sharded_model`` exists.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from gradcheck_suite import Dim

__all__ = ["Dim", "ParallelEntry", "ShardedSpec", "sharded_model", "harness_has_sharded_model", "gradcheck_models"]


@dataclasses.dataclass(frozen=True)
class ShardedSpec:
    """The arguments of one ``sharded_model(...)`` call, exactly as the entry wrote them."""

    op: Any
    name: str
    dims: Mapping[str, Dim]
    inputs: Mapping[str, tuple]                  # name -> (unsharded shape, placement)
    reference: Callable[..., Any]
    output: Any                                  # a placement, or a tuple of them
    grad: Any
    input_grads: Mapping[str, Any] | None = None
    data: Mapping[str, tuple] | None = None      # name -> shape, as op_model (every rank holds the whole tensor)
    hyper: Mapping[str, Any] | None = None       # name -> (choice, ...)
    args: tuple[str, ...] | None = None
    world_sizes: tuple[int, ...] = (1, 2, 3, 4)
    uneven: bool = False
    group: Any = None
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the original call."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("op", "fields")}
        out.update(self.fields)
        return out

    def order(self) -> tuple[str, ...]:
        return tuple(self.args) if self.args is not None else (*self.inputs, *(self.data or {}), *(self.hyper or {}))

    def input_grad_placement(self, name: str) -> Any:
        return (self.input_grads or {}).get(name, self.inputs[name][1])

    def build(self) -> Any:
        """The harness's record for this spec (needs ``gradcheck_suite.sharded_model``)."""
        import gradcheck_suite

        return gradcheck_suite.sharded_model(self.op, **self.kwargs())


def sharded_model(op: Any, *, name: str, dims: Mapping[str, Dim], inputs: Mapping[str, tuple],
                  reference: Callable[..., Any], output: Any, grad: Any, input_grads: Mapping[str, Any] | None = None,
                  data: Mapping[str, tuple] | None = None, hyper: Mapping[str, Any] | None = None,
                  args: tuple[str, ...] | None = None, world_sizes: tuple[int, ...] = (1, 2, 3, 4),
                  uneven: bool = False, group: Any = None, **fields: Any) -> ShardedSpec:
    """The harness's ``sharded_model`` signature; returns the arguments (see the module doc)."""
    return ShardedSpec(op, name, dims, dict(inputs), reference, output, grad, input_grads, data, hyper,
                       tuple(args) if args is not None else None, tuple(world_sizes), uneven, group, dict(fields))


def gradcheck_models() -> list:
    """Every entry's record, as the harness builds it: a rank finds a sharded record by name at
    the top level of the module that called ``sharded_model``, which for the bank is this one
    (``ShardedSpec.build``), through this function (the registry's ``gradcheck_models``)."""
    from . import entries

    return [e.record.build() for e in entries()]


def harness_has_sharded_model() -> bool:
    import gradcheck_suite

    return hasattr(gradcheck_suite, "sharded_model")


@dataclasses.dataclass(frozen=True)
class ParallelEntry:
    code: str                          # the entry's name
    source: str                        # repository, path, commit, license, and what was changed
    expected: str                      # correct or wrong
    reason: str
    record: ShardedSpec
    bug_world_sizes: tuple[int, ...] = ()    # where the bug shows (empty for a correct entry)

    def __post_init__(self) -> None:
        if self.expected not in ("correct", "wrong"):
            raise ValueError(f"{self.code}: expected is 'correct' or 'wrong', not {self.expected!r}")
        if (self.expected == "correct") != (not self.bug_world_sizes):
            raise ValueError(f"{self.code}: a correct entry has no bug world sizes, a wrong one has some")

    @property
    def name(self) -> str:
        return self.code
