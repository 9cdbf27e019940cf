"""Brute-force check of a label: the manual gradient, called the way training calls it,
against float64 autograd of the entry's plain-torch reference.

For every entry: several dims (all at their low end, which is mostly size 1; all high;
the benchmark dims; each dim alone at its low or high end; random draws), every
hyperparameter choice, two seeds, and a random upstream gradient.  A Function or custom
op is called through autograd (``.backward()`` with that gradient, as training calls it) in
these training-style variants:

    plain          contiguous inputs, all requiring grad
    frozen NAME    one input needs no grad (a data tensor, a frozen weight)
    g transposed   the same upstream values with transposed strides (``f(x).t() @ w``)
    g expanded     a stride-0 upstream gradient, as ``f(x).sum()`` hands it
    g shared       the upstream tensor also feeds another branch (``f(x) + 3 * z``)
    views          the inputs as non-contiguous views

(the last four but "g shared" are left out for a record that declares ``needs_contiguous``)

A numpy layer's backward gets a copy of the upstream gradient, C-ordered and then
Fortran-ordered.  A "correct" label holds when every call agrees with autograd
(``torch.allclose(rtol=1e-7, atol=1e-9)``), a "wrong" one when at least one call differs
or raises.

An entry tagged with torch paths (``Entry.paths``) gets more calls, each against float64
autograd of the reference (complex128 for complex entries, torch's conjugate-Wirtinger
convention):

    output K unused    every floating output left out of the loss in turn: the engine passes
                       None (set_materialize_grads(False)) or zeros, as training does
    dirty saved        (mark_dirty) the input is an activation another op saved for its backward;
                       torch refusing that ("modified by an inplace operation") is torch's
                       documented safety, not a mismatch; a silently wrong gradient is
    jvp                (jvp) torch.func.jvp with random tangents against the reference's
    vmap               (vmap, generate_vmap_rule) torch.vmap over a batch of inputs: outputs and
                       per-sample vjps against a loop of single reference calls, and
                       autograd.grad(..., is_grads_batched=True) against a loop
    opcheck            (custom_op_fake) torch.library.opcheck on the op: a failing test (a wrong
                       register_fake) is wrong, as torch.compile then is

An entry whose record runs in another dtype (float32-only code, which makes its
buffers in torch's default dtype) is checked in float64 with the default dtype set to float64.
"""
from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from gradcheck_suite import Dim

from ._entry import Entry, Spec, make_tensor

RTOL, ATOL = 1e-7, 1e-9
SEEDS = (0, 1)
RANDOM_DIMS = 4


class ReferenceError_(Exception):
    """The reference itself failed: a mistake in the bank, not in the code under test."""


@dataclasses.dataclass
class LabelCheck:
    entry: Entry
    calls: int = 0
    mismatches: list[str] = dataclasses.field(default_factory=list)
    broken: str | None = None          # the bank's own mistake (a reference that raised)

    @property
    def holds(self) -> bool:
        if self.broken:
            return False
        return bool(self.mismatches) == (self.entry.expected == "wrong")

    def evidence(self) -> str:
        if self.broken:
            return f"BANK ERROR: {self.broken}"
        if self.mismatches:
            return f"{len(self.mismatches)} of {self.calls} calls differ; first: {self.mismatches[0]}"
        return f"all {self.calls} calls agree"


def check_label(entry: Entry) -> LabelCheck:
    if entry.spec.dtype == "float64":
        return _check_label(entry)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _check_label(entry)
    finally:
        torch.set_default_dtype(previous)


def _check_label(entry: Entry) -> LabelCheck:
    result = LabelCheck(entry)
    spec = entry.spec
    variants = _numpy_variants() if entry.kind == "numpy" else _op_variants(spec)
    if entry.paths:
        variants = variants + _path_variants(entry)
    dirty = "mark_dirty" in entry.paths
    try:
        for dims in dim_cases(spec, entry.name):
            for hyper in spec.hyper_choices():
                values = {**dims, **hyper}
                if spec.where is not None and not spec.where(values):
                    continue
                for seed in SEEDS:
                    for variant in variants:
                        result.calls += 1
                        where = f"{_show(dims)}{_show(hyper, ' ')} seed {seed} [{variant}]"
                        problem = (_numpy_call(spec, values, hyper, seed, variant) if entry.kind == "numpy"
                                   else _path_call(entry, values, hyper, seed, variant) if variant in _PATH_CALLS
                                   else _op_call(spec, values, hyper, seed, variant, dirty))
                        if problem:
                            result.mismatches.append(f"{where}: {problem}")
    except ReferenceError_ as e:
        result.broken = str(e)
    return result


def dim_cases(spec: Spec, name: str) -> list[dict[str, int]]:
    dims: Mapping[str, Dim] = spec.dims
    low = {k: d.low for k, d in dims.items()}
    high = {k: d.high for k, d in dims.items()}
    cases = [low, high, {k: d.bench for k, d in dims.items()}]
    for k in dims:
        cases += [{**high, k: low[k]}, {**low, k: high[k]}]
    draw = random.Random(name)
    cases += [{k: draw.randint(d.low, d.high) for k, d in dims.items()} for _ in range(RANDOM_DIMS)]
    unique = []
    for c in cases:
        if c not in unique:
            unique.append(c)
    return unique


def _show(values: Mapping[str, Any], lead: str = "") -> str:
    return lead + ",".join(f"{k}={v}" for k, v in values.items()) if values else ""


# --- Functions and custom ops -----------------------------------------------------------------

def _op_variants(spec: Spec) -> list[str]:
    frozen = [f"frozen {n}" for n in spec.inputs] if len(spec.inputs) > 1 else []
    if spec.needs_contiguous:
        return ["plain", *frozen, "g shared"]
    return ["plain", *frozen, "g transposed", "g expanded", "g shared", "views"]


def _tensors(spec: Spec, values: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: make_tensor(spec, n, values, gen) for n in (*spec.inputs, *spec.data)}


def _other_strides(t: torch.Tensor) -> torch.Tensor:
    """The same values with other strides, differentiably: transposed for 2-D and up,
    every other element of a buffer for 1-D."""
    if t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return torch.stack([t, torch.zeros_like(t)], dim=-1)[..., 0]


def _outputs(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _op_call(spec: Spec, values: Mapping[str, Any], hyper: Mapping[str, Any], seed: int,
             variant: str, dirty: bool = False) -> str | None:
    base = _tensors(spec, values, seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    frozen = variant[len("frozen "):] if variant.startswith("frozen ") else None

    def run(manual: bool, upstream: list[torch.Tensor] | None, aux_value: torch.Tensor | None = None):
        leaves = {n: base[n].clone().requires_grad_(n != frozen) for n in spec.inputs}
        args = {n: (t.clone() if dirty else t) for n, t in leaves.items()}   # in place: an activation, not a leaf
        args = {n: (_other_strides(t) if variant == "views" else t) for n, t in args.items()}
        data = {n: base[n].clone() for n in spec.data}
        aux = z = None
        if aux_value is not None:
            aux = aux_value.clone().requires_grad_(True)
            z = aux * 3.0                                   # made first: its backward runs after the op's
        values_now = {**args, **data, **copy.deepcopy(dict(hyper))}
        if manual:
            outs = _outputs(spec.call(values_now))
        else:
            try:
                outs = _outputs(spec.reference(*[values_now[n] for n in spec.order]))
            except Exception as e:  # the bank's reference, not the code under test
                raise ReferenceError_(f"reference raised {type(e).__name__}: {e}") from e
        if upstream is None:
            return outs
        if z is not None:
            outs = (outs[0] + z, *outs[1:])
        wanted = [n for n in spec.inputs if n != frozen]
        unused = int(variant.split()[1]) if variant.startswith("output ") else None
        pairs = [(o, g) for k, (o, g) in enumerate(zip(outs, upstream)) if o.requires_grad and k != unused]
        targets = [leaves[n] for n in wanted] + ([aux] if aux is not None else [])
        # as training takes them: .backward() into the leaves (reentrant checkpointing refuses .grad())
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        grads = [t.grad for t in targets]
        names = wanted + (["(shared branch)"] if aux is not None else [])
        return {n: (torch.zeros_like(t) if gr is None else gr) for n, t, gr in zip(names, targets, grads)}

    with torch.no_grad():
        reference_outs = run(False, None)
    shapes = [o.shape for o in reference_outs]
    kinds = [o.dtype if o.is_complex() else torch.float64 for o in reference_outs]   # a complex output takes a complex g
    aux_value = torch.randn(shapes[0], generator=gen, dtype=torch.float64) if variant == "g shared" else None
    if variant == "g expanded":
        scalars = [torch.randn((), generator=gen, dtype=k) for k in kinds]
        upstream = [v.expand(s).contiguous() for v, s in zip(scalars, shapes)]
        given = [v.clone().expand(s) for v, s in zip(scalars, shapes)]          # stride 0, as y.sum() gives it
    else:
        upstream = [torch.randn(s, generator=gen, dtype=k) for s, k in zip(shapes, kinds)]
        given = [_other_strides(g.clone()) if variant == "g transposed" else g.clone() for g in upstream]
    want = run(False, [g.clone() for g in upstream], aux_value)
    try:
        got = run(True, given, aux_value)
    except Exception as e:  # training would crash here
        return f"raised {type(e).__name__}: {_first_line(e)}"
    return _compare(got, want)


def _compare(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor]) -> str | None:
    for name, w in want.items():
        g = got.get(name)
        if g is None:
            return f"no gradient for {name}"
        g = torch.as_tensor(g, dtype=w.dtype if w.is_complex() else torch.float64)
        if tuple(g.shape) != tuple(w.shape):
            return f"{name} has shape {tuple(g.shape)}, autograd {tuple(w.shape)}"
        if not torch.allclose(g, w, rtol=RTOL, atol=ATOL):
            err = (g - w).abs().max().item()
            return f"{name} differs from autograd by up to {err:.3g}"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else ""


# --- the torch paths of issue 26 (Entry.paths) ----------------------------------------------

BATCH = 3                       # samples in a vmap check
#: torch's refusal of a backward under is_grads_batched (the older batching it runs on): a
#: limit of torch's, where torch.func's per-sample gradients above work
_BATCHING_REFUSED = ("Batching rule not implemented",)
_PATH_CALLS = ("dirty saved", "jvp", "vmap", "opcheck")


def _path_variants(entry: Entry) -> list[str]:
    spec, paths = entry.spec, set(entry.paths)
    found = []
    with torch.no_grad():
        t = _tensors(spec, {k: d.low for k, d in spec.dims.items()} | spec.bench_hyper(), 0)
        t = {n: (v.clone() if "mark_dirty" in paths else v) for n, v in t.items()}
        outs = _outputs(spec.reference(*[{**t, **copy.deepcopy(spec.bench_hyper())}[n] for n in spec.order]))
    floating = [k for k, o in enumerate(outs) if o.is_floating_point() or o.is_complex()]
    if len(floating) > 1:
        found += [f"output {k} unused" for k in floating]
    if "mark_dirty" in paths:
        found.append("dirty saved")
    if "jvp" in paths:
        found.append("jvp")
    if paths & {"vmap", "generate_vmap_rule"}:
        found.append("vmap")
    if "custom_op_fake" in paths:
        found.append("opcheck")
    return found


def _path_call(entry: Entry, values: Mapping[str, Any], hyper: Mapping[str, Any], seed: int,
               variant: str) -> str | None:
    try:
        if variant == "dirty saved":
            return _dirty_saved(entry.spec, values, hyper, seed)
        if variant == "jvp":
            return _jvp(entry, values, hyper, seed)
        if variant == "vmap":
            return _vmap(entry, values, hyper, seed)
        return _opcheck(entry.spec, values, hyper, seed)
    except ReferenceError_:
        raise
    except Exception as e:  # the code under test raised on this path: training would crash there
        return f"raised {type(e).__name__}: {_first_line(e)}"


def _floating(outs: tuple) -> tuple:
    return tuple(o for o in outs if o.is_floating_point() or o.is_complex())


def _reference(spec: Spec, v: Mapping[str, Any]):
    try:
        return _outputs(spec.reference(*[v[n] for n in spec.order]))
    except Exception as e:
        raise ReferenceError_(f"reference raised {type(e).__name__}: {e}") from e


def _dirty_saved(spec: Spec, values, hyper, seed) -> str | None:
    """The in-place op's input is an activation that another op (``a * w``) saved."""
    base = _tensors(spec, values, seed)
    gen = torch.Generator().manual_seed(3000 + seed)
    name = next(iter(spec.inputs))
    w0 = torch.randn(base[name].shape, generator=gen, dtype=torch.float64)

    def run(manual: bool):
        x = base[name].clone().requires_grad_(True)
        w = w0.clone().requires_grad_(True)
        a = x * 1.0
        b = a * w                                     # saves a for w's gradient
        v = {**{n: base[n].clone() for n in spec.inputs if n != name}, name: a,
             **{n: base[n].clone() for n in spec.data}, **copy.deepcopy(dict(hyper))}
        outs = _floating(_outputs(spec.call(v)) if manual else _reference(spec, v))
        g = torch.Generator().manual_seed(4000 + seed)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs) + (b * b).sum()
        loss.backward()
        return {name: x.grad, "w (saved the input)": w.grad}

    want = run(False)
    try:
        got = run(True)
    except RuntimeError as e:
        if "modified by an inplace operation" in str(e):
            return None                               # torch refuses the graph: its documented safety
        return f"raised RuntimeError: {_first_line(e)}"
    return _compare(got, want)


def _jvp(entry: Entry, values, hyper, seed) -> str | None:
    spec = entry.spec
    base = _tensors(spec, values, seed)
    gen = torch.Generator().manual_seed(5000 + seed)
    names = list(spec.inputs)
    primals = tuple(base[n] for n in names)
    tangents = tuple(torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in primals)

    def f(manual: bool, *ts):
        if "mark_dirty" in entry.paths:
            ts = tuple(t.clone() for t in ts)
        v = {**dict(zip(names, ts)), **{n: base[n].clone() for n in spec.data}, **copy.deepcopy(dict(hyper))}
        return _floating(_outputs(spec.call(v)) if manual else _reference(spec, v))

    _, want = torch.func.jvp(lambda *ts: f(False, *ts), primals, tangents)
    _, got = torch.func.jvp(lambda *ts: f(True, *ts), primals, tangents)
    return _compare({f"tangent of output {k}": g for k, g in enumerate(got)},
                    {f"tangent of output {k}": w for k, w in enumerate(want)})


def _vmap(entry: Entry, values, hyper, seed) -> str | None:
    """torch.vmap of the op over BATCH samples (the inputs batched at dim 0, data shared):
    outputs and per-sample vjps against single reference calls, outputs again with the batch
    at each input's last dim; then the backward under
    is_grads_batched=True (gradcheck's check_batched_grad) against a loop."""
    spec = entry.spec
    names = list(spec.inputs)
    samples = [_tensors(spec, values, seed * 100 + b) for b in range(BATCH)]
    data = {n: samples[0][n] for n in spec.data}
    stacked = tuple(torch.stack([s[n] for s in samples]) for n in names)
    dirty = "mark_dirty" in entry.paths
    gen = torch.Generator().manual_seed(6000 + seed)

    def f(manual: bool, *ts):
        if dirty:
            ts = tuple(t.clone() for t in ts)
        v = {**dict(zip(names, ts)), **{n: d.clone() for n, d in data.items()}, **copy.deepcopy(dict(hyper))}
        return _floating(_outputs(spec.call(v)) if manual else _reference(spec, v))

    single = [f(False, *[s[n] for n in names]) for s in samples]
    gs = [tuple(torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs) for outs in single]
    want_out = {f"output {k}": torch.stack([outs[k] for outs in single]) for k in range(len(single[0]))}
    got_out = torch.vmap(lambda *ts: f(True, *ts))(*stacked)
    problem = _compare({f"output {k}": o for k, o in enumerate(got_out)}, want_out)
    if problem:
        return f"under vmap: {problem}"
    # the batch at each input's last dim, as jacrev, nested vmap and torch.func put it
    last = tuple(torch.stack([s[n] for s in samples], dim=-1) for n in names)
    try:
        got_last = torch.vmap(lambda *ts: f(True, *ts), in_dims=-1)(*last)
    except Exception as e:       # the rule raising where torch would run it
        return f"under vmap with the batch at the last dim: {type(e).__name__}: {str(e).splitlines()[0]}"
    problem = _compare({f"output {k}": o for k, o in enumerate(got_last)}, want_out)
    if problem:
        return f"under vmap with the batch at the last dim: {problem}"

    def want_vjp(sample, g):
        leaves = [sample[n].clone().requires_grad_(True) for n in names]
        outs = f(False, *leaves)
        return torch.autograd.grad(outs, leaves, g, allow_unused=True, materialize_grads=True)

    wants = [want_vjp(s, g) for s, g in zip(samples, gs)]
    want_g = {f"per-sample grad of {n}": torch.stack([w[i] for w in wants]) for i, n in enumerate(names)}
    stacked_g = tuple(torch.stack([g[k] for g in gs]) for k in range(len(gs[0])))
    got_g = torch.vmap(lambda ts, g: torch.func.vjp(lambda *xs: f(True, *xs), *ts)[1](g))(stacked, stacked_g)
    problem = _compare({f"per-sample grad of {n}": t for n, t in zip(names, got_g)}, want_g)
    if problem:
        return f"under vmap: {problem}"

    # is_grads_batched: one sample's graph, BATCH upstream gradients
    leaves = [samples[0][n].clone().requires_grad_(True) for n in names]
    outs = f(True, *leaves)
    try:
        got_b = torch.autograd.grad(outs, leaves, stacked_g, is_grads_batched=True, allow_unused=True,
                                    materialize_grads=True)
    except RuntimeError as e:
        if any(text in str(e) for text in _BATCHING_REFUSED):
            return None        # torch's own limit of is_grads_batched (its docs: a prototype), not wrong code
        raise
    loop = [want_vjp(samples[0], g) for g in gs]
    want_b = {f"is_grads_batched grad of {n}": torch.stack([w[i] for w in loop]) for i, n in enumerate(names)}
    return _compare({f"is_grads_batched grad of {n}": t for n, t in zip(names, got_b)}, want_b)


def _opcheck(spec: Spec, values, hyper, seed) -> str | None:
    if seed != SEEDS[0]:
        return None                                   # one call per dims: opcheck costs a second or two
    base = _tensors(spec, values, seed)
    v = {**{n: base[n].clone().requires_grad_(True) for n in spec.inputs},
         **{n: base[n].clone() for n in spec.data}, **copy.deepcopy(dict(hyper))}
    report = torch.library.opcheck(spec.op, tuple(v[n] for n in spec.order), raise_exception=False)
    failed = [f"{test} ({_first_line(RuntimeError(str(r)))})" for test, r in report.items() if r != "SUCCESS"]
    return "opcheck: " + "; ".join(failed) if failed else None


# --- numpy layers -----------------------------------------------------------------------------

def _numpy_variants() -> list[str]:
    return ["plain", "dout Fortran-ordered"]


def _numpy_call(spec: Spec, values: Mapping[str, Any], hyper: Mapping[str, Any], seed: int,
                variant: str) -> str | None:
    forward, backward = spec.numpy
    base = _tensors(spec, values, seed)
    gen = torch.Generator().manual_seed(1000 + seed)

    def arguments(tensor_like):
        return [tensor_like(n) if n in base else copy.deepcopy(hyper[n]) for n in spec.order]

    leaves = {n: base[n].clone().requires_grad_(n in spec.inputs) for n in base}
    try:
        ref = _outputs(spec.reference(*arguments(lambda n: leaves[n])))
    except Exception as e:
        raise ReferenceError_(f"reference raised {type(e).__name__}: {e}") from e
    upstream = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in ref]
    grads = torch.autograd.grad(ref, [leaves[n] for n in spec.inputs], upstream, allow_unused=True)
    want = {n: (torch.zeros_like(leaves[n]) if g is None else g) for n, g in zip(spec.inputs, grads)}

    try:
        returned = forward(*arguments(lambda n: base[n].numpy().copy()))
        outs, cache = returned[:-1], returned[-1]
        if len(outs) != len(upstream):
            return f"forward returned {len(outs)} outputs, the reference {len(upstream)}"
        douts = [u.numpy().copy() for u in upstream]
        if variant == "dout Fortran-ordered":
            douts = [np.asfortranarray(d) if d.ndim else d for d in douts]
        got = backward(*douts, cache)
    except Exception as e:  # training would crash here
        return f"raised {type(e).__name__}: {_first_line(e)}"
    got = got if isinstance(got, (tuple, list)) else (got,)
    if len(got) != len(spec.inputs):
        return f"backward returned {len(got)} gradients for {len(spec.inputs)} inputs"
    return _compare({n: torch.from_numpy(np.array(g, dtype=np.float64)) for n, g in zip(spec.inputs, got)}, want)
