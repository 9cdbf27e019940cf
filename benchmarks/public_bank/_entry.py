"""An entry of the bank: one piece of public code as a harness record, its label, and
what the brute-force label check and ``torch.autograd.gradcheck`` need to call it.

The record is built lazily (``Entry.record()``): a factory that refuses it today makes
that one row an error, not the import of the whole bank.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from gradcheck_suite import Dim, Model
from gradcheck_suite.kinds import kind_holding

#: the paths an entry may name (``Entry.paths``), and what each means for the label check
#: (verify.py) and gradcheck's flags (public_bank.py)
PATHS = {
    "jvp": "a Function with a jvp staticmethod (forward mode)",
    "vmap": "a Function with a vmap staticmethod",
    "generate_vmap_rule": "a Function with generate_vmap_rule = True",
    "materialize_grads": "a Function that calls ctx.set_materialize_grads(False)",
    "mark_dirty": "an in-place Function (ctx.mark_dirty)",
    "indices": "a forward that returns (values, indices)",
    "custom_op_fake": "a torch.library.custom_op with register_fake and register_autograd",
    "complex": "a Function on complex tensors",
}

Factory = Callable[[Mapping[str, int], torch.Generator, torch.dtype, float], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Spec:
    """The op's arguments by name, and how training calls it."""

    dims: Mapping[str, Dim]
    inputs: Mapping[str, tuple]                  # tensors that get gradients
    data: Mapping[str, tuple]                    # tensors that do not (labels)
    hyper: Mapping[str, Any]                     # {name: (choice, ...)} or Dim
    order: tuple[str, ...]                       # positional order of the op and the reference
    reference: Callable[..., Any]                # plain torch, positional in ``order``
    factories: Mapping[str, Factory] = dataclasses.field(default_factory=dict)
    call: Callable[[Mapping[str, Any]], Any] | None = None           # function / custom op
    numpy: tuple[Callable[..., Any], Callable[..., Any]] | None = None  # (forward, backward)
    where: Callable[[Mapping[str, Any]], bool] | None = None
    dtype: str = "float64"                       # the record's own dtype (float32 for float32-only code)
    needs_contiguous: bool = False               # the record takes contiguous tensors only
    op: Any = None                               # the Function or custom op itself (op_entry)

    def hyper_choices(self) -> list[dict[str, Any]]:
        """Every combination of the hyperparameters' choices (a Dim: its low and high)."""
        combos: list[dict[str, Any]] = [{}]
        for name, spec in self.hyper.items():
            values = sorted({spec.low, spec.high}) if isinstance(spec, Dim) else list(spec)
            combos = [{**c, name: v} for c in combos for v in values]
        return combos

    def bench_hyper(self) -> dict[str, Any]:
        return {k: (h.bench if isinstance(h, Dim) else h[0]) for k, h in self.hyper.items()}

    def shape(self, name: str, dims: Mapping[str, Any]) -> tuple[int, ...]:
        spec = self.inputs[name] if name in self.inputs else self.data[name]
        return tuple(s if isinstance(s, int) else int(eval(s, {}, dict(dims))) for s in spec)


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    kind: str                      # function, custom op or numpy
    expected: str                  # correct or wrong
    reason: str
    source: str                    # repository and path, or URL
    build: Callable[[], Model]
    spec: Spec
    #: the torch paths the entry exercises beyond eager reverse mode (``PATHS``); empty for the
    #: original bank.  The first is the one its row is counted under.
    paths: tuple[str, ...] = ()
    license: str = ""              # the source's license line

    def record(self) -> Model:
        return self.build()

    def gradcheck_call(self) -> tuple[Callable[..., Any], tuple[torch.Tensor, ...]] | None:
        """``(fn, inputs)`` as a user would pass them to gradcheck: float64, contiguous,
        fresh, requiring grad, at the benchmark dims; None for numpy layers."""
        if self.kind == "numpy":
            return None
        s = self.spec
        dims, hyper = {k: d.bench for k, d in s.dims.items()}, s.bench_hyper()
        gen = torch.Generator().manual_seed(0)
        data = {n: make_tensor(s, n, {**dims, **hyper}, gen) for n in s.data}
        inputs = tuple(make_tensor(s, n, {**dims, **hyper}, gen).requires_grad_(True) for n in s.inputs)
        names = tuple(s.inputs)

        def fn(*tensors: torch.Tensor):
            return s.call({**dict(zip(names, tensors)), **data, **copy.deepcopy(hyper)})

        return fn, inputs

    def op_args(self) -> tuple[Any, ...]:
        """The op's positional arguments at the benchmark dims, seed 0, as ``gradcheck_call``
        draws them (inputs requiring grad, then data and hyperparameters), for opcheck."""
        s = self.spec
        dims, hyper = {k: d.bench for k, d in s.dims.items()}, s.bench_hyper()
        gen = torch.Generator().manual_seed(0)
        data = {n: make_tensor(s, n, {**dims, **hyper}, gen) for n in s.data}
        inputs = {n: make_tensor(s, n, {**dims, **hyper}, gen).requires_grad_(True) for n in s.inputs}
        values = {**inputs, **data, **copy.deepcopy(hyper)}
        return tuple(values[n] for n in s.order)


def make_tensor(spec: Spec, name: str, values: Mapping[str, Any], gen: torch.Generator) -> torch.Tensor:
    """A float64 tensor of standard normal values, or the record's factory for it."""
    if name in spec.factories:
        return spec.factories[name](values, gen, torch.float64, 1.0)
    return torch.randn(spec.shape(name, values), generator=gen, dtype=torch.float64)


def _callable(op: Any) -> Callable[..., Any]:
    return op.apply if isinstance(op, type) and issubclass(op, torch.autograd.Function) else op


def _kind(op: Any) -> str:
    return kind_holding(op, "op_model").name     # "function" or "custom op", as op_model tells them apart


def op_entry(op: Any, *, name: str, expected: str, reason: str, source: str, dims: Mapping[str, Dim],
             inputs: Mapping[str, tuple], reference: Callable[..., Any], data: Mapping[str, tuple] | None = None,
             hyper: Mapping[str, Any] | None = None, args: Sequence[str] | None = None,
             keyword_only: Sequence[str] = (), paths: Sequence[str] = (), license: str = "",
             **fields: Any) -> Entry:
    """An ``autograd.Function`` (or a lambda around one) or a custom op, recorded with
    ``op_model`` exactly as a user would write it.  ``keyword_only`` names the arguments
    training passes by name (the record itself leaves that to the harness).  ``paths`` tags
    the entry with the torch paths it exercises (``PATHS``), ``license`` is its source's."""
    from gradcheck_suite import op_model

    data, hyper = dict(data or {}), dict(hyper or {})
    order = tuple(args) if args is not None else (*inputs, *data, *hyper)
    fn = _callable(op)

    def call(v: Mapping[str, Any]) -> Any:
        return fn(*[v[n] for n in order if n not in keyword_only], **{k: v[k] for k in keyword_only})

    extra = {"args": tuple(args)} if args is not None else {}
    if data:
        extra["data"] = data
    if hyper:
        extra["hyper"] = hyper

    def build() -> Model:
        return op_model(op, name=name, dims=dims, inputs=inputs, reference=reference, **extra, **fields)

    spec = Spec(dims=dims, inputs=dict(inputs), data=data, hyper=hyper, order=order, reference=reference,
                factories=fields.get("factories", {}), call=call, where=fields.get("where"),
                dtype=fields.get("dtype", "float64"), needs_contiguous=fields.get("needs_contiguous", False), op=op)
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        raise ValueError(f"{name}: unknown path {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    return Entry(name, _kind(op), expected, reason, source, build, spec, tuple(paths), license)


def numpy_entry(forward: Callable[..., Any], backward: Callable[..., Any], *, name: str, expected: str,
                reason: str, source: str, dims: Mapping[str, Dim], inputs: Mapping[str, tuple],
                reference: Callable[..., Any], data: Mapping[str, tuple] | None = None,
                hyper: Mapping[str, Any] | None = None, args: Sequence[str] | None = None,
                **fields: Any) -> Entry:
    """Course-style numpy layers, recorded with ``numpy_model``."""
    from gradcheck_suite import numpy_model

    data, hyper = dict(data or {}), dict(hyper or {})
    order = tuple(args) if args is not None else (*inputs, *data, *hyper)
    extra = {"args": tuple(args)} if args is not None else {}
    if data:
        extra["data"] = data
    if hyper:
        extra["hyper"] = hyper

    def build() -> Model:
        return numpy_model(forward, backward, name=name, dims=dims, inputs=inputs, reference=reference,
                           **extra, **fields)

    spec = Spec(dims=dims, inputs=dict(inputs), data=data, hyper=hyper, order=order, reference=reference,
                factories=fields.get("factories", {}), numpy=(forward, backward), where=fields.get("where"))
    return Entry(name, "numpy", expected, reason, source, build, spec)


def labels(n_classes: str, n_rows: str) -> Factory:
    """Class indices in ``[0, dims[n_classes])``, one per row."""
    def factory(dims: Mapping[str, int], gen: torch.Generator, dtype: torch.dtype, scale: float) -> torch.Tensor:
        return torch.randint(0, dims[n_classes], (dims[n_rows],), generator=gen)
    return factory
