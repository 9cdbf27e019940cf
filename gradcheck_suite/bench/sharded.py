"""A sharded record's row: the Function against autograd, timed inside the ranks.

A sharded record (``sharded_model``) runs its op on N ranks of a ``torch.distributed``
process group (``kinds/ranks.py``).  Timing the calls from the parent would time the round
trips to the ranks; here each rank times its own part of one step, with the methodology of
every row (:class:`~gradcheck_suite.bench.timing.Interleaved`: warm-up, blocks, rotating
order, the garbage collector off inside a round), and the ranks agree on the block sizes and
the number of rounds so that their collectives stay in step.

The two sides, on rank r with its shards of the case's values and its share of the upstream
gradient (as the check sends them):

* **manual**: the op's forward and autograd through it, as training runs it (its backward is
  the hand-written code with its collectives); the backward phase calls the backward alone
  on a graph built once;
* **autograd**: the record's unsharded ``reference`` run on rank r's shards and
  differentiated by autograd, then, for each input whose gradient the placements make a sum
  over ranks (a ``Replicate()`` or ``Partial()`` input whose Function gradient is the sum of
  the ranks' local ones), the same all-reduce a hand-written backward must run.

Which of those the autograd side is follows from the values, decided by every rank together
before timing: the reference on the rank's shards must give the op's own output on that rank
(the computation is local), and the local autograd gradient, as is or summed over the
ranks, must give the op's gradient (within ``rules.SHARDED_BENCH_MATCH``).  Where not (a
forward that is itself a collective, a gather, a reduce), there is no local computation for
autograd to time: the row times the manual side alone and says ``n/a`` with the reason.

Both sides clone the upstream gradient on every call (a backward may all-reduce it in place).
A step of a collective computation ends when the last rank's does: the row's sample of each
round is the slowest rank's, and every rank's own samples come along (``per_rank``).  Memory per rank: the peak of
torch's CPU allocator in each rank (:func:`~gradcheck_suite.bench.memory.peak`), the largest
rank's in the row.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..kinds import ranks
from ..kinds.sharded import WORLD_SIZE
from ..kinds.sharding import rank_payloads, rank_record
from ..verdict import rules
from . import memory
from .timing import BACKWARD, Interleaved, Region

#: the task each rank runs (``ranks.RankPool.run``)
TASK = f"{__name__}:rank_bench"
#: what the autograd side of a sharded row is, in the report's words
AUTOGRAD_SIDE = "autograd of the reference on the rank's shards"

_STATE: dict = {}


def world_sizes(model) -> tuple[int, ...]:
    """The world sizes a sharded record runs on."""
    sizes = model.hyper[WORLD_SIZE]
    return tuple(sizes) if isinstance(sizes, (tuple, list)) else (int(sizes),)


def default_world_size(model) -> int:
    """The world size a sharded row runs at without ``--world-size``: the record's largest."""
    return max(world_sizes(model))


def unfit(model, dims: Mapping[str, int], world_size: int) -> str | None:
    """Why the record cannot run at these dims on ``world_size`` ranks (None: it can)."""
    if world_size not in world_sizes(model):
        return (f"{model.name} runs on world sizes {', '.join(map(str, world_sizes(model)))}, "
                f"not {world_size} (--world-size)")
    why = model.allows({**dict(dims), **model.bench_hyper, WORLD_SIZE: world_size})
    return None if why is None else f"{model.name} at its benchmark dims on {world_size} ranks: {why}"


def run(model, dims: Mapping[str, int], phase: str, dtype: str, world_size: int, *, budget: float, low: int,
        high: int, measure_memory: bool, seed: int = 0) -> dict:
    """Time one sharded row in the ranks; what the row's ``extra_info`` holds."""
    import torch

    from ..check.case import Bound, Case, build, upstream

    hyper = {**model.bench_hyper, WORLD_SIZE: world_size}
    case = Case(model.name, dict(dims), dtype, "cpu", seed, 1.0, hyper)
    bound = Bound(model, case)
    p, d = build(bound, case, dense=False)
    with torch.no_grad():
        out, _ = model.forward(p, d, bound.h)
    g = tuple(upstream(o, seed + k) for k, o in enumerate(out)) if isinstance(out, tuple) else upstream(out, seed)
    payloads = rank_payloads(model, p, d, hyper, g)
    pool = ranks.pool(world_size)
    ready = pool.run(TASK, [dict(x, what="prepare", phase=phase, budget=budget, low=low, high=high,
                                 memory=measure_memory) for x in payloads])
    rounds = ready[0]["rounds"]
    for _ in range(rounds):
        pool.run(TASK, [{"what": "round"}] * world_size)
    done = pool.run(TASK, [{"what": "finish"}] * world_size)
    sides = list(done[0]["samples"])
    samples = {s: [max(r["samples"][s][i] for r in done) for i in range(rounds)] for s in sides}
    per_rank = [{s: list(r["samples"][s]) for s in sides} for r in done]
    na = ready[0]["na"]
    info = {"samples": samples, "calls": done[0]["calls"], "world_size": world_size, "per_rank": per_rank,
            "autograd_side": ready[0]["autograd"], "autograd_na": na}
    if measure_memory:
        found = [r["memory"] for r in ready]
        if any(m is None for m in found):
            info["memory"] = {"error": next(r["memory_error"] for r in ready if r["memory"] is None)}
        else:
            info["memory"] = {
                **{side: {"kept": None, "peak": max(m[side] for m in found)} for side in found[0]},
                "peak_method": memory.PEAK_METHOD["cpu"] + ", in each rank; the largest rank's",
                "per_rank": found}
    return info


# -- the rank's side ----------------------------------------------------------------------

def rank_bench(payload: dict, rank: int, world_size: int):
    """What a rank does for a sharded row: ``prepare`` (the sides, the decision what autograd's
    side is, the warm-up and the sizing, memory), ``round`` (one timed round), ``finish``
    (the samples)."""
    what = payload["what"]
    if what == "prepare":
        _STATE.clear()
        return _prepare(payload)
    if what == "round":
        _STATE["timer"].round()
        return None
    timer = _STATE.pop("timer")
    _STATE.clear()
    return {"samples": timer.samples, "calls": timer.calls}


def _tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _grads(outs: tuple, leaves: list, gs: tuple, retain: bool = False) -> list:
    """Autograd's gradients of ``outs`` (with upstream ``gs``, cloned: a backward may write into
    it) for ``leaves``; zeros where an input gets none."""
    import torch

    pairs = [(o, gg) for o, gg in zip(outs, gs) if gg is not None and o.requires_grad]
    if not pairs:
        return [torch.zeros_like(x) for x in leaves]
    got = torch.autograd.grad([o for o, _ in pairs], leaves, [gg.clone() for _, gg in pairs],
                              retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(x) if t is None else t for x, t in zip(leaves, got)]


def _near(a, b) -> bool:
    import torch

    if a is None or b is None or a.shape != b.shape:
        return False
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    scale = max(float(b.abs().max()) if b.numel() else 0.0, float(a.abs().max()) if a.numel() else 0.0)
    return bool(torch.isfinite(a).all()) and (scale == 0.0 or float((a - b).abs().max()) <= rules.SHARDED_BENCH_MATCH
                                               * scale)


def _agree(values: list[float], op=None) -> list[float]:
    """The largest (``op``: the smallest) of each value over the ranks."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op is None else op)
    return t.tolist()


def _prepare(payload: dict) -> dict:
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import Shard

    from ..record.spec import Hyper, Tensors

    record = rank_record(payload)
    info = record.sharded
    call = info.call
    p, d, h = Tensors(payload["p"]), Tensors(payload["d"]), Hyper(payload["h"])
    g = payload["g"]
    gs = _tuple(g)
    names = list(info.inputs)

    def fresh():
        cloned = tuple(None if x is None else x.clone() for x in gs)
        return cloned if isinstance(g, tuple) else cloned[0]

    def leaves() -> dict:
        return {n: p[n].detach().clone().requires_grad_(True) for n in names}

    # the decision, by every rank together: is the computation local, and which gradients are summed
    with torch.no_grad():
        own = _tuple(call.invoke(p, d, h))
        manual = call.gradients(p, d, h, fresh())
    local, why = True, ""
    try:
        with torch.no_grad():
            mine = _tuple(record.reference(p, d, h))
        local = len(mine) == len(own) and all(_near(a, b) for a, b in zip(mine, own))
    except Exception as e:  # a reference that cannot run on a shard
        local, why = False, f" ({type(e).__name__}: {e})"
    summable = [n for n in names if not isinstance(info.inputs[n], Shard)]
    local_grads = {n: torch.zeros_like(p[n]) for n in names}
    if local:
        try:
            with torch.enable_grad():
                lv = leaves()
                local_grads = dict(zip(names, _grads(_tuple(record.reference(Tensors(lv), d, h)), list(lv.values()),
                                                     gs)))
        except Exception as e:
            local, why = False, f" ({type(e).__name__}: {e})"
    as_is = [_near(local_grads[n], manual.get(n)) for n in names]
    summed = {}
    for n in summable:                       # every rank runs these, local or not: the collectives stay in step
        t = local_grads[n].detach().contiguous().clone()
        dist.all_reduce(t)
        summed[n] = _near(t, manual.get(n))
    flags = _agree([float(local), *map(float, as_is), *(float(summed[n]) for n in summable)], dist.ReduceOp.MIN)
    local, as_is = bool(flags[0]), [bool(f) for f in flags[1:1 + len(names)]]
    summed = {n: bool(f) for n, f in zip(summable, flags[1 + len(names):])}
    na = None
    if not local:
        na = ("the reference on a rank's shards does not give that rank's output: the forward communicates "
              "(a collective), so autograd has no local computation to time" + why)
    else:
        wrong = [n for i, n in enumerate(names) if not as_is[i] and not summed.get(n)]
        if wrong:
            na = (f"autograd of the reference on a rank's shards, as is or summed over the ranks, does not give the "
                  f"op's gradient of {', '.join(wrong)}")
    reduce = [i for i, n in enumerate(names) if na is None and not as_is[i] and summed.get(n)]
    side = AUTOGRAD_SIDE + (f", then an all-reduce of the gradient of {', '.join(names[i] for i in reduce)}"
                            if reduce else "")

    def reduced(grads: list) -> list:
        for i in reduce:
            grads[i] = grads[i].contiguous()
            dist.all_reduce(grads[i])
        return grads

    sides = {"manual": _manual(call, p, d, h, gs, fresh, names, payload["phase"])}
    if na is None:
        sides["autograd"] = _autograd(record, p, d, h, gs, names, payload["phase"], reduced)
    found, error = None, None
    if payload.get("memory"):
        try:
            with torch.no_grad():        # as training's backward runs: no graph of the gradients
                found = {"manual": memory.peak(lambda: call.gradients(p, d, h, fresh()), "cpu")}
            if na is None:
                found["autograd"] = memory.peak(lambda: reduced(_fwd_bwd(record, leaves(), d, h, gs, names)), "cpu")
        except Exception as e:
            found, error = None, f"{type(e).__name__}: {e}"
    timer = Interleaved(sides, block_seconds=rules.BLOCK_SECONDS, agree=_agree)
    fewest = rules.MIN_ROTATIONS * len(sides)
    rounds = timer.rounds_for(payload["budget"], max(payload["low"], fewest), max(payload["high"], fewest))
    _STATE["timer"] = timer
    return {"rounds": rounds, "na": na, "autograd": None if na else side, "memory": found, "memory_error": error}


def _fwd_bwd(record, lv: dict, d, h, gs: tuple, names: list) -> list:
    from ..record.spec import Tensors

    return _grads(_tuple(record.reference(Tensors(lv), d, h)), [lv[n] for n in names], gs)


def _manual(call, p, d, h, gs: tuple, fresh, names: list, phase: str) -> Region:
    import torch

    if phase != BACKWARD:
        return Region(lambda: call.gradients(p, d, h, fresh()), False, None, {"impl": "manual"})
    with torch.enable_grad():
        lv = {n: p[n].detach().clone().requires_grad_(True) for n in names}
        outs = _tuple(call.invoke(lv, d, h))
    leaves = [lv[n] for n in names]
    return Region(lambda: _grads(outs, leaves, gs, retain=True), False, None, {"impl": "manual"})


def _autograd(record, p, d, h, gs: tuple, names: list, phase: str, reduced) -> Region:
    import torch

    from ..record.spec import Tensors

    lv = {n: p[n].detach().clone().requires_grad_(True) for n in names}
    leaves = [lv[n] for n in names]
    if phase != BACKWARD:
        return Region(lambda: reduced(_fwd_bwd(record, lv, d, h, gs, names)), True, None, {"impl": "autograd"})
    with torch.enable_grad():
        outs = _tuple(record.reference(Tensors(lv), d, h))
    return Region(lambda: reduced(_grads(outs, leaves, gs, retain=True)), True, None, {"impl": "autograd"})
