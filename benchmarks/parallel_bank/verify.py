"""Brute-force check of the parallel bank's labels, with no harness code: every entry runs on real
gloo ranks at each world size of its record (1 to 4), and the assembled result is compared with
float64 autograd of the entry's unsharded reference.

For each world size W, W processes are spawned once (``torch.multiprocessing``, a ``file://``
rendezvous in a temporary folder) and run every entry's cases in the same order.  A case: dims
(all at their low end, all high, three random draws; for an even record each dim is a multiple of
W, so every shard has the same size), every hyperparameter choice, two seeds, and two layouts of
the upstream gradient:

    plain          contiguous
    g transposed   the same values with the last two dims' strides swapped (a gradient that
                   comes back through ``x.t()`` or ``x.transpose(-1, -2)``), for outputs of 2+ dims
    x transposed   the same for every input of 2+ dims (an input that arrives as a transposed
                   view: the harness hands the op such inputs too), with a contiguous gradient

Rank r gets its shard of the same float64 values, as SHARDED_API.md says: ``Shard(d)`` its chunk
(``torch.chunk``, or ``torch.tensor_split`` for uneven records), ``Replicate()`` the whole tensor,
``Partial()`` a random part (the parts sum to the tensor).  The upstream gradient G of the
unsharded output reaches the ranks by the record's ``grad`` placement.  Each rank runs the forward
and ``torch.autograd.backward``; the parent assembles the outputs (``output``) and the input
gradients (``input_grads``, default the input's placement: ``Shard`` concatenates, ``Replicate``
needs every rank to hold the whole gradient, ``Partial`` sums) and compares them with the
reference (``torch.allclose``, rtol 1e-7, atol 1e-9 of the largest reference value; 1e-4 and 1e-5
for records of float32-only code, ``dtype="float32"``).  A case that raises on a rank counts as
wrong at that world size (the ranks stop that entry there).  The entry is wrong at W when any case
at W is.

A rank that raises inside a collective leaves the others waiting: every collective has a timeout
(``TIMEOUT_S``), the ranks compare their status after each entry, and when they differ (one rank raised
where another did not) the pool is started again from the next entry.
"""
from __future__ import annotations

import datetime
import itertools
import os
import random
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

import torch

TIMEOUT_S = 30.0
WORLD_SIZES = (1, 2, 3, 4)
SEEDS = (0, 1)
RANDOM_DRAWS = 3
BANK = ("parallel_bank", "entries")     # where the ranks find the entries by name


# ---------------------------------------------------------------- cases (same in every process)

def _placement_kind(p: Any) -> tuple[str, int | None]:
    from torch.distributed.tensor import Partial, Replicate, Shard

    if isinstance(p, Shard):
        return "shard", p.dim
    if isinstance(p, Replicate):
        return "replicate", None
    if isinstance(p, Partial):
        return "partial", None
    raise TypeError(f"unknown placement {p!r}")


def dims_draws(spec, world: int) -> list[dict[str, int]]:
    """The dims of the cases at this world size."""
    rng = random.Random(f"{spec.name}/{world}")
    names = list(spec.dims)
    if spec.uneven or world == 1:
        lows = {n: spec.dims[n].low for n in names}
        highs = {n: spec.dims[n].high for n in names}
        draws = [lows, highs] + [{n: rng.randint(lows[n], highs[n]) for n in names} for _ in range(RANDOM_DRAWS)]
    else:   # every dim a multiple of the world size
        top = {n: max(1, spec.dims[n].high // world) for n in names}
        draws = [{n: world for n in names}, {n: world * top[n] for n in names}]
        draws += [{n: world * rng.randint(1, top[n]) for n in names} for _ in range(RANDOM_DRAWS)]
    unique = []
    for d in draws:
        if d not in unique:
            unique.append(d)
    return unique


def hyper_choices(spec) -> list[dict[str, Any]]:
    hyper = spec.hyper or {}
    names = list(hyper)
    return [dict(zip(names, combo)) for combo in itertools.product(*(tuple(hyper[n]) for n in names))]


def cases(spec, world: int) -> list[tuple[dict, dict, int]]:
    return [(d, h, s) for d in dims_draws(spec, world) for h in hyper_choices(spec) for s in SEEDS]


def _shape(shape: tuple, dims: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(s if isinstance(s, int) else int(eval(str(s), {}, dict(dims))) for s in shape)


def _chunks(t: torch.Tensor, world: int, dim: int, uneven: bool) -> list[torch.Tensor]:
    parts = torch.tensor_split(t, world, dim) if uneven else torch.chunk(t, world, dim)
    parts = list(parts)
    if len(parts) != world:    # torch.chunk gives fewer chunks when the dim is too small
        raise ValueError(f"dim {dim} of size {t.shape[dim]} does not split into {world} even chunks")
    return parts


def _partial_parts(t: torch.Tensor, world: int, gen: torch.Generator) -> list[torch.Tensor]:
    parts = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for _ in range(world - 1)]
    return parts + [t - sum(parts, torch.zeros_like(t))]


def _distribute(t: torch.Tensor, placement: Any, world: int, gen: torch.Generator, uneven: bool) -> list[torch.Tensor]:
    kind, dim = _placement_kind(placement)
    if kind == "shard":
        return _chunks(t, world, dim, uneven)
    if kind == "replicate":
        return [t] * world
    return _partial_parts(t, world, gen)


def data_placements(spec) -> dict[str, tuple]:
    """``data`` as op_model writes it ({name: shape}): replicated on every rank; (shape, placement) also taken."""
    out = {}
    for name, shape in (spec.data or {}).items():
        if len(shape) == 2 and isinstance(shape[0], tuple) and not isinstance(shape[1], (str, int)):
            out[name] = shape
        else:
            from torch.distributed.tensor import Replicate
            out[name] = (tuple(shape), Replicate())
    return out


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def build_case(spec, world: int, dims: dict, hyper: dict, seed: int) -> dict[str, Any]:
    """The unsharded float64 values of a case and every rank's share of them."""
    gen = torch.Generator().manual_seed(seed * 1000 + world)
    factories = spec.fields.get("factories", {})
    full, shares = {}, {}
    for name, (shape, placement) in {**spec.inputs, **data_placements(spec)}.items():
        if name in factories:
            t = factories[name]({**dims, **hyper}, gen, torch.float64, 1.0)
        else:
            t = torch.randn(_shape(shape, {**dims, **hyper}), generator=gen, dtype=torch.float64)
        full[name] = t
        shares[name] = _distribute(t, placement, world, gen, spec.uneven)
    values = {**full, **hyper}
    with torch.no_grad():
        ref_out = _as_tuple(spec.reference(*(values[n] for n in spec.order())))
    grads = tuple(torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in ref_out)
    grad_places = _as_tuple(spec.grad) if isinstance(spec.grad, tuple) else (spec.grad,) * len(grads)
    grad_shares = [_distribute(g, p, world, gen, spec.uneven) for g, p in zip(grads, grad_places)]
    return {"full": full, "shares": shares, "hyper": hyper, "grads": grads, "grad_shares": grad_shares}


def _layout(g: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "g transposed" and g.dim() >= 2:
        return g.transpose(-1, -2).contiguous().transpose(-1, -2)
    return g.clone(memory_format=torch.contiguous_format)   # a fresh tensor: a backward may reduce it in place


def _input_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "x transposed" and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return t.clone()


LAYOUTS = ("plain", "g transposed", "x transposed")


def layouts(spec) -> tuple[str, ...]:
    """The layouts of an entry's cases: contiguous only where the record says ``needs_contiguous``
    (as the harness then skips its layout variants)."""
    return ("plain",) if spec.fields.get("needs_contiguous") else LAYOUTS


# ---------------------------------------------------------------- one rank

def run_rank_case(spec, rank: int, world: int, case: dict, layout: str) -> dict[str, Any]:
    order = spec.order()
    local = {}
    for name in spec.inputs:
        local[name] = _input_layout(case["shares"][name][rank], layout).requires_grad_(True)
    for name in spec.data or {}:
        local[name] = case["shares"][name][rank].clone()
    values = {**local, **case["hyper"]}
    op = spec.op
    fn = op.apply if isinstance(op, type) and issubclass(op, torch.autograd.Function) else op
    outs = _as_tuple(fn(*(values[n] for n in order)))
    gs = [_layout(share[rank], layout) for share in case["grad_shares"]]
    pairs = [(o, g) for o, g in zip(outs, gs) if isinstance(o, torch.Tensor) and o.requires_grad]
    if pairs:
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
    return {"outs": [o.detach().clone() for o in outs],
            "grads": {n: (None if local[n].grad is None else local[n].grad.detach().clone()) for n in spec.inputs}}


def rank_main(rank: int, world: int, folder: str, names: list[str], bank_dir: str,
              source: tuple[str, str] = BANK, timeout_s: float = TIMEOUT_S) -> None:
    import torch.distributed as dist

    if bank_dir not in sys.path:
        sys.path.insert(0, bank_dir)
    torch.set_num_threads(1)
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning)   # torch's deprecation notes on the collectives
    import importlib

    module, attribute = source
    bank = {e.code: e for e in getattr(importlib.import_module(module), attribute)()}
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(folder, f'rdzv{world}-{names[0]}')}",
                            rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        for name in names:
            spec = bank[name].record
            results, status = [], "ok"
            try:
                for dims, hyper, seed in cases(spec, world):
                    case = build_case(spec, world, dims, hyper, seed)
                    for layout in layouts(spec):
                        results.append(run_rank_case(spec, rank, world, case, layout))
            except Exception as e:   # the entry's error: the label check counts it; its other cases are left out
                text = str(e).strip()
                results.append({"error": f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"})
                status = f"raised in run {len(results)}: {results[-1]['error']}"
            torch.save(results, os.path.join(folder, f"{world}-{name}-{rank}.pt"))
            statuses = [None] * world
            dist.all_gather_object(statuses, status)   # raises when a rank is stuck or gone
            if len(set(statuses)) > 1:   # a rank raised where the others did not: their collectives are out of step
                raise RuntimeError(f"ranks out of step after {name}: {statuses}")
    finally:
        try:
            dist.destroy_process_group()
        except Exception:
            pass


# ---------------------------------------------------------------- the parent: assemble and compare

def _tolerance(spec) -> tuple[float, float]:
    return (1e-4, 1e-5) if str(spec.fields.get("dtype", "float64")) in ("float32", "torch.float32") else (1e-7, 1e-9)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    if a.shape != b.shape:
        return False
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    return bool(torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol * scale, equal_nan=False))


def _assemble_check(parts: list[torch.Tensor | None], placement: Any, ref: torch.Tensor, uneven: bool,
                    rtol: float, atol: float) -> str | None:
    """None when the ranks' pieces make ``ref`` under ``placement``, else what is wrong."""
    kind, dim = _placement_kind(placement)
    if any(p is None for p in parts):
        return "no gradient on some rank" if ref.abs().max() > 0 else None
    if kind == "shard":
        whole = torch.cat(parts, dim)
    elif kind == "partial":
        whole = sum(parts[1:], parts[0].clone())
    else:
        bad = [r for r, p in enumerate(parts) if not _close(p, ref, rtol, atol)]
        return None if not bad else f"ranks {bad} of {len(parts)} differ from the reference, rank {bad[0]}: {_how(parts[bad[0]], ref)}"
    if _close(whole, ref, rtol, atol):
        return None
    return f"assembled over the ranks: {_how(whole, ref)}"


def _how(got: torch.Tensor, ref: torch.Tensor) -> str:
    """How far ``got`` is from ``ref``: the largest error, and got's projection on ref (2 means twice as large)."""
    if got.shape != ref.shape:
        return f"shape {tuple(got.shape)}, the reference's {tuple(ref.shape)}"
    err = (got.double() - ref).abs().max().item()
    ratio = (got.double().flatten() @ ref.flatten() / max(float(ref.flatten() @ ref.flatten()), 1e-300)).item()
    return f"max error {err:.3g}, {ratio:.3g}x the reference along it"


def reference_case(spec, case: dict) -> tuple[tuple, dict]:
    full = {n: t.clone().requires_grad_(n in spec.inputs) for n, t in case["full"].items()}
    values = {**full, **case["hyper"]}
    outs = _as_tuple(spec.reference(*(values[n] for n in spec.order())))
    pairs = [(o, g) for o, g in zip(outs, case["grads"]) if o.requires_grad]
    grads = torch.autograd.grad([o for o, _ in pairs], [full[n] for n in spec.inputs], [g for _, g in pairs],
                                allow_unused=True)
    grads = {n: (torch.zeros_like(full[n]) if g is None else g) for n, g in zip(spec.inputs, grads)}
    return tuple(o.detach() for o in outs), grads


def judge_world(spec, world: int, per_rank: list[list[dict]]) -> list[str]:
    """The problems found at this world size (empty: every case agrees with the reference)."""
    rtol, atol = _tolerance(spec)
    problems = []
    outs_places = _as_tuple(spec.output) if isinstance(spec.output, tuple) else None
    i = 0
    for dims, hyper, seed in cases(spec, world):
        case = build_case(spec, world, dims, hyper, seed)
        ref_outs, ref_grads = reference_case(spec, case)
        for layout in layouts(spec):
            where = f"W={world} dims={dims}{' ' + str(hyper) if hyper else ''} seed={seed} {layout}"
            got = [per_rank[r][i] if i < len(per_rank[r]) else {"error": "missing"} for r in range(world)]
            i += 1
            errors = [f"rank {r}: {g['error']}" for r, g in enumerate(got) if "error" in g]
            if errors:   # the ranks stop an entry at its first error
                real = [e for e in errors if not e.endswith(": missing")]
                problems.append(f"{where}: raised: {(real or errors)[0]}")
                return problems
            places = outs_places or (spec.output,) * len(ref_outs)
            for k, (ref, place) in enumerate(zip(ref_outs, places)):
                bad = _assemble_check([g["outs"][k] for g in got], place, ref, spec.uneven, rtol, atol)
                if bad:
                    problems.append(f"{where}: output {k}: {bad}")
            for name in spec.inputs:
                bad = _assemble_check([g["grads"][name] for g in got], spec.input_grad_placement(name),
                                      ref_grads[name], spec.uneven, rtol, atol)
                if bad:
                    problems.append(f"{where}: gradient of {name}: {bad}")
    return problems


def _bank_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_world(bank: list, world: int, log=print, source: tuple[str, str] = BANK,
              timeout_s: float = TIMEOUT_S) -> dict[str, list[str]]:
    """Every entry's problems at this world size (entries whose record leaves W out are skipped).
    The ranks find the entries by name in ``source``: (module, function returning the entries)."""
    import torch.multiprocessing as mp

    todo = [e.code for e in bank if world in e.record.world_sizes]
    specs = {e.code: e.record for e in bank}
    found: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="parallel_bank_") as folder:
        while todo:
            try:
                mp.start_processes(rank_main, args=(world, folder, todo, _bank_dir(), source, timeout_s), nprocs=world,
                                   join=True, start_method="spawn")
            except Exception as e:   # a rank failed: keep what finished, skip the entry that broke the pool
                log(f"  W={world}: pool stopped ({type(e).__name__}: {str(e).strip().splitlines()[-1][:160]})")
            done = [n for n in todo if all(os.path.exists(os.path.join(folder, f"{world}-{n}-{r}.pt"))
                                           for r in range(world)) and n not in found]
            for name in done:
                per_rank = [torch.load(os.path.join(folder, f"{world}-{name}-{r}.pt"), weights_only=False)
                            for r in range(world)]
                try:
                    found[name] = judge_world(specs[name], world, per_rank)
                except Exception as e:
                    found[name] = [f"W={world}: judging failed: {type(e).__name__}: {e}"]
            rest = [n for n in todo if n not in done]
            if rest and not done:   # no entry finished: the first one stopped the pool (a hang or a crash)
                found[rest[0]] = [f"W={world}: the ranks did not finish (a hang or a crash inside a collective)"]
                rest = rest[1:]
            todo = rest
    return found


def check_bank(bank: list, worlds=WORLD_SIZES, log=print,
               source: tuple[str, str] = BANK, timeout_s: float = TIMEOUT_S) -> dict[str, dict[int, list[str]]]:
    """{entry: {world size: problems}} for every entry and world size."""
    out: dict[str, dict[int, list[str]]] = {e.code: {} for e in bank}
    for world in worlds:
        for name, problems in run_world(bank, world, log, source, timeout_s).items():
            out[name][world] = problems
    return out


def label_holds(entry, by_world: Mapping[int, list[str]]) -> tuple[bool, tuple[int, ...]]:
    """Does the brute force agree with ``expected`` and ``bug_world_sizes``?  And where it found a bug."""
    wrong_at = tuple(sorted(w for w, p in by_world.items() if p))
    expected_at = tuple(sorted(w for w in entry.bug_world_sizes if w in by_world))
    if entry.expected == "correct":
        return not wrong_at, wrong_at
    return wrong_at == expected_at and bool(wrong_at), wrong_at


if __name__ == "__main__":
    sys.path.insert(0, _bank_dir())
    from parallel_bank import entries

    bank = entries()
    result = check_bank(bank)
    bad = 0
    for e in bank:
        holds, at = label_holds(e, result[e.code])
        bad += not holds
        print(f"{'ok  ' if holds else 'FAIL'} {e.code:40s} {e.expected:8s} wrong at {at or '-'}")
    sys.exit(1 if bad else 0)
