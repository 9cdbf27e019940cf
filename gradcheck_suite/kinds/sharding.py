"""A sharded Function as it ships, checked on N ranks against the unsharded computation:
:func:`sharded_model` makes it a :class:`~gradcheck_suite.Model`.

The record is an ordinary Model whose tensors are the *unsharded* ones and whose world size
is one more drawn value (the hyperparameter ``world_size``, from ``world_sizes``).  Its
forward and backward run on a pool of rank processes (``ranks.py``): each rank gets its
shard of the case's values as the placements say (``torch.distributed.tensor``'s
``Shard(dim)``, ``Replicate()``, ``Partial()``), calls the user's op there, and the ranks'
outputs and gradients are put back together, so that every stage of the check judges the
assembled gradient against float64 autograd of ``reference`` and finite differences of it,
with the usual bounds and shrinking.  What each rank held and returned stays on the
gradients (:class:`RankGrads`), for the messages that name a rank and its shard
(``check/stages/ranks.py``).

A rank finds the record the way the registry does: it imports the module that defined it,
or loads its model file by path, and takes the record of that name defined at its top level.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.distributed.tensor import Partial, Replicate, Shard

from ..record import dimexpr
from ..record.errors import ContractError, Unsupported
from ..record.spec import Dim, Hyper, Model, SpecError, Tensors
from ..verdict import rules
from ..verdict.tolerance import bound
from . import common, ranks
from .op import OpCall, op_model
from .sharded import WORLD_SIZE

__all__ = ["sharded_model", "ShardedCall", "RankGrads", "shard_of", "index_of", "assemble", "rank_task", "WORLD_SIZE",
           "rank_payloads", "rank_record"]

#: the task each rank runs for a case (``ranks.RankPool.run``)
TASK = f"{__name__}:rank_task"


def _placement_problem(p: object, ndim: int | None) -> str | None:
    """Why ``p`` is not a placement the harness takes for a tensor of ``ndim`` dims (None: unknown)."""
    if isinstance(p, Shard):
        if ndim is not None and not -ndim <= p.dim < max(ndim, 1) or ndim == 0:
            return f"Shard({p.dim}) names no dim of a tensor of {ndim} dims"
        return None
    if isinstance(p, Partial):
        if getattr(p, "reduce_op", "sum") != "sum":
            return f"Partial({p.reduce_op!r}): only Partial() (a sum over ranks) is checked"
        return None
    if isinstance(p, Replicate):
        return None
    return (f"must be a placement of torch.distributed.tensor (Shard(dim), Replicate() or Partial()), "
            f"got {p!r}")


def _dim(p: Shard, ndim: int) -> int:
    return p.dim % ndim if ndim else 0


@dataclasses.dataclass(frozen=True)
class ShardedCall:
    """How a sharded record runs: the user's op (an :class:`~.op.OpCall`), the placements,
    and where a rank finds the record again."""

    call: OpCall
    inputs: Mapping[str, object]        # input name -> its placement
    data: Mapping[str, object]          # data name -> its placement
    output: tuple                       # one placement per output
    grad: tuple                         # how each output's upstream gradient reaches the ranks
    input_grads: Mapping[str, object]   # input name -> its gradient's placement
    uneven: bool
    module: str                         # the module that defined the record, and its file
    path: str | None
    group: Any = None

    def placement_of(self, name: str) -> object:
        return self.inputs[name] if name in self.inputs else self.data[name]


class RankGrads(dict):
    """The assembled gradients (name -> tensor), with what each rank returned:
    ``ranks[name]`` is ``(placement, [gradient on rank r], [index of rank r's part])``."""

    __slots__ = ("ranks", "world_size")


def shard_of(x: torch.Tensor, placement, world_size: int, key: int = 0) -> list[torch.Tensor]:
    """``x`` as the ranks hold it: views of its chunks for ``Shard(d)`` (its layout kept),
    ``x`` itself on every rank for ``Replicate()``, random shares that sum to ``x`` for
    ``Partial()`` (positive weights, so no share cancels another; drawn from ``x``'s own values
    and ``key``, so the same values always split the same way)."""
    if isinstance(placement, Shard):
        return list(torch.tensor_split(x, world_size, _dim(placement, x.dim())))
    if isinstance(placement, Replicate) or world_size == 1:
        return [x] * world_size
    gen = torch.Generator().manual_seed(_digest(x) ^ key)
    weights = torch.rand((world_size, *x.shape), generator=gen, dtype=torch.float64) + 0.5
    weights = weights / weights.sum(0)
    return [_like((x.to(torch.float64) * w).to(x.dtype), x) for w in weights]


def index_of(shape: tuple[int, ...], placement, world_size: int, rank: int) -> tuple:
    """The index of rank ``rank``'s part of a tensor of ``shape`` (a tuple of slices): its
    chunk for ``Shard(d)``, all of it otherwise."""
    full = [slice(0, n) for n in shape]
    if isinstance(placement, Shard) and shape:
        d = _dim(placement, len(shape))
        sizes = [len(c) for c in torch.tensor_split(torch.empty(shape[d], 0), world_size)]
        start = sum(sizes[:rank])
        full[d] = slice(start, start + sizes[rank])
    return tuple(full)


def _digest(x: torch.Tensor) -> int:
    return zlib.crc32(x.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())


def _like(values: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """``values`` in the memory order of ``layout`` where that is a permutation of dims (a
    transposed or channels-last tensor); contiguous for any other layout (an expanded one:
    random shares are not one value)."""
    if layout.is_contiguous() or 0 in layout.stride() or layout.dim() < 2:
        return values.contiguous()
    order = sorted(range(layout.dim()), key=lambda i: -layout.stride(i))
    back = [order.index(i) for i in range(layout.dim())]
    return values.permute(order).contiguous().permute(back)


def assemble(parts: Sequence[torch.Tensor], placement, what: str) -> torch.Tensor:
    """The unsharded tensor from the ranks' parts: concatenated for ``Shard(d)``, summed for
    ``Partial()``, rank 0's for ``Replicate()`` (the other copies are judged by the stage
    ``ranks``)."""
    if isinstance(placement, Shard):
        ndim = parts[0].dim()
        if any(t.dim() != ndim for t in parts) or ndim == 0:
            raise ContractError(f"{what}: the ranks' parts have {[t.dim() for t in parts]} dims; "
                                f"{placement} concatenates them along a dim of each")
        d = _dim(placement, ndim)
        others = {tuple(s for i, s in enumerate(t.shape) if i != d) for t in parts}
        if len(others) > 1:
            raise ContractError(f"{what}: the ranks' parts have shapes {[tuple(t.shape) for t in parts]}, which "
                                f"{placement} cannot concatenate along dim {d}")
        return torch.cat(list(parts), d)
    if isinstance(placement, Partial):
        shapes = {tuple(t.shape) for t in parts}
        if len(shapes) > 1:
            raise ContractError(f"{what}: the ranks' parts have shapes {sorted(shapes)}; Partial() sums them")
        return torch.stack([t.to(torch.float64) for t in parts]).sum(0).to(parts[0].dtype)
    return parts[0]


# -- the rank's side ----------------------------------------------------------------------

_LOADED: dict[tuple, Model] = {}


def rank_task(payload: dict, rank: int, world_size: int):
    """What a rank does for a case: the op's outputs (``forward``), or its gradients by
    autograd through the op as training runs it (``backward``)."""
    record = _record(payload["module"], payload["path"], payload["name"])
    info: ShardedCall = record.sharded
    p, d = Tensors(payload["p"]), Tensors(payload["d"])
    h = Hyper(payload["h"])
    if payload["what"] == "forward":
        with torch.no_grad():
            out = info.call.invoke(p, d, h)
        outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        for i, o in enumerate(outs):
            if not isinstance(o, torch.Tensor):
                raise ContractError(f"the op's output {i} is {type(o).__name__}, expected a tensor")
        return tuple(o.detach() for o in outs), isinstance(out, (tuple, list))
    with torch.no_grad():
        grads = info.call.gradients(p, d, h, payload["g"])
    return {n: g.detach() for n, g in grads.items()}


def rank_record(payload: Mapping) -> Model:
    """In a rank: the record a payload of :func:`rank_payloads` names (loaded once per rank)."""
    return _record(payload["module"], payload["path"], payload["name"])


def _record(module: str, path: str | None, name: str) -> Model:
    key = (module, path, name)
    if key in _LOADED:
        return _LOADED[key]
    loaded = None
    if module not in ("__main__", "__mp_main__") and not module.startswith("gradcheck_suite_user_"):
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            loaded = None
        if loaded is not None and path and os.path.realpath(getattr(loaded, "__file__", "") or "") \
                != os.path.realpath(path):
            loaded = None       # another module of that name: load the file itself
    if loaded is None:
        if not path:
            raise ContractError(f"the ranks cannot find the module {module!r} that defines {name!r}: define "
                                "the record in a model file or an importable module")
        stem = "gradcheck_suite_user_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(path))
        loaded = sys.modules.get(stem)
        if loaded is None:
            spec = importlib.util.spec_from_file_location(stem, path)
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[stem] = loaded
            folder = os.path.dirname(os.path.abspath(path))
            if folder not in sys.path:
                sys.path.insert(0, folder)
            spec.loader.exec_module(loaded)
    found = [m for m in _models_of(loaded) if m.name == name and m.sharded is not None]
    if not found:
        raise ContractError(f"the ranks found no sharded record {name!r} at the top level of "
                            f"{path or module}: the ranks load it from there, so define it at the top level "
                            "(not inside a function or a test)")
    _LOADED[key] = found[0]
    return found[0]


def _models_of(module) -> list[Model]:
    found = []
    for value in vars(module).values():
        if isinstance(value, Model):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found += [v for v in value if isinstance(v, Model)]
    factory = getattr(module, "gradcheck_models", None)
    if callable(factory):
        found += [m for m in factory() if isinstance(m, Model)]
    return found


# -- the parent's side --------------------------------------------------------------------

def _world_size(h) -> int:
    return int(h[WORLD_SIZE])


def _payloads(info: ShardedCall, name: str, p: Mapping, d: Mapping, h, world_size: int) -> list[dict]:
    user_h = {k: v for k, v in (h or {}).items() if k != WORLD_SIZE}
    split = {n: shard_of(t, info.placement_of(n), world_size, key=i + 1)
             for i, (n, t) in enumerate([*p.items(), *d.items()]) if isinstance(t, torch.Tensor)}
    return [{"module": info.module, "path": info.path, "name": name, "h": user_h,
             "p": {n: split[n][r] for n in p}, "d": {n: split[n][r] if n in split else d[n] for n in d}}
            for r in range(world_size)]


def rank_payloads(model: Model, p: Mapping, d: Mapping, h, g=None) -> list[dict]:
    """What each rank gets for a case of the sharded ``model`` (its shards of ``p`` and
    ``d``, the user's hyperparameters, and with ``g`` its share of the upstream gradient), as
    the check sends them: for code that runs its own task in the ranks (the benchmarks)."""
    info: ShardedCall = model.sharded
    world_size = _world_size(h)
    payloads = _payloads(info, model.name, p, d, h, world_size)
    if g is not None:
        for payload, gr in zip(payloads, _grad_shares(info, g, info.output, world_size)):
            payload["g"] = gr
    return payloads


def _outputs(info: ShardedCall, name: str, p, d, h, timeout: float | None = None):
    world_size = _world_size(h)
    answers = ranks.pool(world_size, ranks.collective_timeout(timeout)).run(TASK, [dict(x, what="forward") for x in _payloads(info, name, p, d, h,
                                                                                           world_size)])
    counts = {len(outs) for outs, _ in answers}
    if len(counts) > 1:
        raise ContractError(f"the ranks return different numbers of outputs: {[len(o) for o, _ in answers]}")
    n_out = counts.pop()
    placements = info.output if len(info.output) == n_out else info.output[:1] * n_out \
        if len(info.output) == 1 else None
    if placements is None:
        raise ContractError(f"the op returns {n_out} outputs, the record's output names {len(info.output)} "
                            "placements")
    joined = []
    for k, placement in enumerate(placements):
        parts = [outs[k] for outs, _ in answers]
        what = f"output {k}" if n_out > 1 else "the output"
        if isinstance(placement, Replicate):
            for r, t in enumerate(parts[1:], 1):
                if t.shape != parts[0].shape or not _close(t, parts[0]):
                    raise ContractError(f"{what} differs between rank 0 and rank {r} of {world_size}, where the "
                                        "record says Replicate() (every rank holds the whole output)")
        joined.append(assemble(parts, placement, what))
    return (tuple(joined) if answers[0][1] else joined[0]), placements


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if torch.equal(a, b):
        return True
    gap = (a.to(torch.float64) - b.to(torch.float64)).abs()
    return bool((gap <= bound(a, str(a.dtype).removeprefix("torch."))).all())


def _grad_shares(info: ShardedCall, g, placements: tuple, world_size: int) -> list:
    gs = g if isinstance(g, tuple) else (g,)
    grads = info.grad if len(info.grad) == len(gs) else info.grad[:1] * len(gs)
    per_output = [None if gg is None else shard_of(gg, pl, world_size, key=rules.SALT_UPSTREAM)
                  for gg, pl in zip(gs, grads)]
    return [tuple(None if s is None else s[r] for s in per_output) if isinstance(g, tuple)
            else per_output[0][r] for r in range(world_size)]


def _gradients(info: ShardedCall, name: str, p, d, g, h, timeout: float | None = None) -> RankGrads:
    world_size = _world_size(h)
    payloads = _payloads(info, name, p, d, h, world_size)
    for payload, gr in zip(payloads, _grad_shares(info, g, info.output, world_size)):
        payload.update(what="backward", g=gr)
    answers = ranks.pool(world_size, ranks.collective_timeout(timeout)).run(TASK, payloads)
    out = RankGrads()
    out.ranks, out.world_size = {}, world_size
    for n in info.inputs:
        placement = info.input_grads[n]
        parts = [a[n] for a in answers]
        got = assemble(parts, placement, f"the gradient of {n}")
        out[n] = got
        shape = tuple(p[n].shape)
        out.ranks[n] = (placement, parts, [index_of(shape, placement, world_size, r) for r in range(world_size)])
    return out


def _caller() -> tuple[str, str | None]:
    """The module that called :func:`sharded_model` (two frames up), and its file."""
    frame = sys._getframe(2)
    module = frame.f_globals.get("__name__", "__main__")
    path = frame.f_globals.get("__file__")
    return module, os.path.abspath(path) if path else None


def sharded_model(op: Any, *, name: str, dims: Mapping[str, Dim], inputs: Mapping[str, tuple],
                  reference: Callable[..., Any], output=None, grad=None,
                  input_grads: Mapping[str, object] | None = None, data: Mapping[str, tuple] | None = None,
                  hyper: Mapping[str, Any] | None = None, args: common.Args | None = None,
                  world_sizes: Sequence[int] | None = None, uneven: bool = False, group: Any = None,
                  **fields: Any) -> Model:
    """A record for a Function (or a custom op, or any callable) that runs on each of N ranks.

    inputs       ``{name: (shape, placement)}``: the unsharded tensors that get gradients, in call order
    reference    the unsharded computation in plain torch; autograd runs on it
    output       how the ranks' outputs make the unsharded output (a tuple for several)
    grad         how the upstream gradient reaches the ranks (a tuple for several outputs)
    input_grads  ``{name: placement}`` of each input's gradient (default: the input's own)
    data         ``{name: shape or (shape, placement)}``: tensors without grad (default Replicate())
    hyper, args  as for :func:`~gradcheck_suite.op_model`; ``world_size`` is the harness's own
    world_sizes  the world sizes the cases draw from (default ``rules.SHARDED_WORLD_SIZES``)
    uneven       also draw sizes that the world size does not divide
    group        None: the op uses the default group (``dist.group.WORLD``), the check's ranks
    Any other :class:`Model` field (dtype, scales, doc, ...) passes through.
    """
    where_from = _caller()
    name_s = str(name)
    if group is not None:
        raise SpecError(name_s, "group", "the ranks run the op in the default group (dist.group.WORLD); give "
                                         "group=None and let the op use the default group")
    if fields.get("double_backward"):
        raise SpecError(name_s, "double_backward", "is not checked for a sharded record yet")
    if "sharded" in fields:
        raise SpecError(name_s, "sharded", "is set by the harness for this kind of model; leave it out")
    hyper = dict(hyper or {})
    if WORLD_SIZE in hyper:
        raise SpecError(name_s, f"hyper.{WORLD_SIZE}", "is the harness's own (drawn from world_sizes); give "
                                                        "world_sizes=(...) instead")
    sizes = tuple(rules.SHARDED_WORLD_SIZES if world_sizes is None else world_sizes) \
        if isinstance(world_sizes, (tuple, list, type(None))) else None
    if not sizes or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in sizes):
        raise SpecError(name_s, "world_sizes", f"must be a non-empty tuple of whole numbers >= 1, got {world_sizes!r}")
    if len(set(sizes)) != len(sizes):
        raise SpecError(name_s, "world_sizes", f"names a world size twice: {sizes!r}")
    if not isinstance(uneven, bool):
        raise SpecError(name_s, "uneven", f"must be True or False, got {uneven!r}")
    if not isinstance(inputs, Mapping) or not inputs:
        raise SpecError(name_s, "inputs", "must map each input's name to (shape, placement), e.g. "
                                          "{'x': (('n', 'h'), Shard(0))}")
    shapes, places = _split_specs(name_s, "inputs", inputs, required=True)
    data_shapes, data_places = _split_specs(name_s, "data", data or {}, required=False)
    outs = _as_tuple(output)
    grads = _as_tuple(grad)
    for field, value in (("output", outs), ("grad", grads)):
        if not value:
            raise SpecError(name_s, field, "give a placement (Shard(dim), Replicate() or Partial()), or a tuple "
                                           "of them for several outputs")
        for p in value:
            text = _placement_problem(p, None)
            if text:
                raise SpecError(name_s, field, text)
    if len(grads) not in (1, len(outs)):
        raise SpecError(name_s, "grad", f"names {len(grads)} placements for {len(outs)} outputs")
    in_grads = dict(places)
    for n, p in dict(input_grads or {}).items():
        if n not in shapes:
            raise SpecError(name_s, f"input_grads.{n}", f"names no input ({', '.join(shapes)})")
        text = _placement_problem(p, len(shapes[n]))
        if text:
            raise SpecError(name_s, f"input_grads.{n}", text)
        in_grads[n] = p
    record_fields = common.record_fields(name_s, dict(fields))
    user_where = record_fields.pop("where", None)
    inner = op_model(op, name=name, dims=dims, inputs=shapes, reference=reference, data=data_shapes, hyper=hyper,
                     args=args)
    info = ShardedCall(inner.op, places, data_places, outs, grads, in_grads, uneven, where_from[0], where_from[1])

    timeout = record_fields.get("collective_timeout")

    def forward(p, d, h):
        complex_ = [n for n, t in (*p.items(), *d.items()) if isinstance(t, torch.Tensor) and t.is_complex()]
        if complex_:
            raise Unsupported(f"{', '.join(complex_)} complex: a sharded record is checked in real dtypes "
                              "(float64, float32, float16, bfloat16) only; check the Function's complex code on "
                              "one rank with op_model")
        out, _ = _outputs(info, name_s, p, d, h, timeout)
        return out, None

    def backward(p, d, cache, g, h):
        return _gradients(info, name_s, p, d, g, h, timeout)

    evenly = _divides(name_s, info, shapes, data_shapes, inner.reference, hyper) if not uneven else None
    where = _both(evenly, user_where, dims, hyper)
    return Model(name=name, dims=dims, params=shapes, data=data_shapes, hyper={**hyper, WORLD_SIZE: sizes},
                 forward=forward, backward=backward, reference=inner.reference, kind="sharded", sharded=info,
                 where=where, **record_fields)


def _as_tuple(value) -> tuple:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _split_specs(model: str, field: str, specs: Mapping, required: bool) -> tuple[dict, dict]:
    """``{name: (shape, placement)}`` as ``({name: shape}, {name: placement})``; for data a
    shape alone is ``Replicate()``."""
    if not isinstance(specs, Mapping):
        raise SpecError(model, field, f"must map names to (shape, placement), got {type(specs).__name__}")
    shapes, places = {}, {}
    for n, spec in specs.items():
        pair = isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], tuple) \
            and not isinstance(spec[1], (str, int, tuple))
        if not pair:
            if required:
                raise SpecError(model, f"{field}.{n}", f"must be (shape, placement), e.g. (('n', 'h'), Shard(0)); "
                                                       f"got {spec!r}")
            shapes[n], places[n] = spec, Replicate()
            continue
        shape, placement = spec
        text = _placement_problem(placement, len(shape))
        if text:
            raise SpecError(model, f"{field}.{n}", text)
        shapes[n], places[n] = shape, placement
    return shapes, places


def _divides(model: str, info: ShardedCall, shapes: Mapping, data_shapes: Mapping, reference, hyper) -> Callable:
    """The constraint of a record without ``uneven``: the world size divides every size that
    a placement splits (inputs, data, and the outputs, whose shapes the reference gives on
    the meta device)."""
    sharded = {n: p for n, p in {**info.inputs, **info.data}.items() if isinstance(p, Shard)}
    sharded_grads = {n: p for n, p in info.input_grads.items() if isinstance(p, Shard)}
    out_dims = [p for p in (*info.output, *info.grad) if isinstance(p, Shard)]

    def sizes_of(shape, values):
        return tuple(dimexpr.size(s, values) for s in shape)

    def ok(values: Mapping[str, Any]) -> bool:
        w = int(values[WORLD_SIZE])
        if w == 1:
            return True
        every = {**shapes, **data_shapes}
        for n, p in [*sharded.items(), *sharded_grads.items()]:
            shape = sizes_of(every[n], values)
            if shape and shape[_dim(p, len(shape))] % w:
                return False
        if out_dims:
            for shape in _output_shapes(shapes, data_shapes, reference, values, hyper):
                for p in out_dims:
                    if shape and shape[_dim(p, len(shape))] % w:
                        return False
        return True

    return ok


def _output_shapes(shapes, data_shapes, reference, values, hyper) -> list[tuple]:
    """The reference's output shapes at ``values``: run on the meta device (nothing computed),
    or where it cannot run there, on zeros; [] where it cannot run at all (the sizes of the
    outputs are then not held to the world size)."""
    for device in ("meta", "cpu"):
        try:
            p, d = (Tensors((n, torch.zeros(tuple(dimexpr.size(s, values) for s in sh), device=device,
                                            dtype=torch.float64)) for n, sh in group.items())
                    for group in (shapes, data_shapes))
            out = reference(p, d, Hyper({k: values[k] for k in hyper}))
        except Exception:
            continue
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [tuple(o.shape) for o in outs if isinstance(o, torch.Tensor)]
    return []


def _both(evenly, user_where, dims, hyper):
    """The record's ``where`` and the even-sizes constraint, both."""
    if evenly is None:
        return user_where
    if user_where is None:
        return evenly
    if isinstance(user_where, str):
        return lambda v: evenly(v) and bool(dimexpr.evaluate(user_where, v))
    return lambda v: evenly(v) and user_where({k: x for k, x in v.items() if k != WORLD_SIZE})
