"""A sharded record's ranks, one by one (``kinds/sharding.py``).

The earlier stages judged the assembled gradient: the ranks' shards concatenated, their
partial gradients summed, and rank 0's copy of a replicated one.  This stage

- judges every other rank's copy of a gradient placed ``Replicate()`` against autograd, with
  the bound the case already has (every rank must hold the whole gradient: a rank that holds
  only its own part, or another rank's, trains another weight on each rank);
- for a failing gradient, names the first rank whose part is wrong, its shard, and what kind
  of wrong it is, in the words of collectives: a gradient summed over ranks once too often
  (the world size times autograd's), divided by the world size, the chunk of another rank (a
  rank offset), or the parts of all ranks summing to autograd's (a missing all-reduce).
"""
from __future__ import annotations

import re

import torch

from ...verdict import rules
from ...verdict.tolerance import compare
from ..result import FAIL
from ..state import CaseState


def applies(state: CaseState) -> bool:
    return getattr(state.model, "sharded", None) is not None and hasattr(state.grads, "ranks")


def run(state: CaseState) -> None:
    res = state.result
    if res.verdict == FAIL:
        found = next((text for n in res.failing if (text := _explain(state, n))), None)
        if found:
            res.summary = found
        return
    for n, (placement, parts, indices) in state.grads.ranks.items():
        if type(placement).__name__ != "Replicate" or n not in res.tensors:
            continue
        for r, part in enumerate(parts[1:], 1):
            c = compare(n, part, state.ag[n], state.case.dtype, state.rounding.get(n))
            if c.ok or _within(part, state.ag[n], res.tensors[n].bound):
                continue
            res.verdict, res.failing = FAIL, [n]
            res.tensors[n] = c
            world = state.grads.world_size
            what = _what(state, n, part, state.ag[n].to(torch.float64), r, parts, indices)
            res.summary = (f"the gradient of {n} (rank {r} of {world}, a replica: every rank holds all of it) "
                           f"{what}; rank 0's is right (the table shows rank {r}'s)")
            return


def _within(got: torch.Tensor, want: torch.Tensor, bound: torch.Tensor) -> bool:
    gap = (got.detach().to(torch.float64) - want.detach().to(torch.float64)).abs()
    return bool((gap <= bound).all())


def _explain(state: CaseState, n: str) -> str | None:
    """The headline for a failing gradient of ``n``, naming the first wrong rank; None
    where it has no per-rank detail."""
    info = state.grads.ranks.get(n)
    if info is None or n not in state.result.tensors:
        return None
    placement, parts, indices = info
    world = state.grads.world_size
    want = state.ag[n].detach().to(torch.float64)
    bound = state.result.tensors[n].bound
    kind = type(placement).__name__
    if kind == "Partial":
        got = state.grads[n].detach().to(torch.float64)
        return (f"the gradient of {n} (the sum of its {world} ranks' partial gradients) "
                f"{_factor_text(got, want, world) or 'differs from autograd'}")
    for r, part in enumerate(parts):
        index = indices[r]
        w = want[index]
        b = bound[index] if bound.shape == want.shape else bound
        if tuple(part.shape) != tuple(w.shape) or _within(part, w, b):
            continue
        where = "a replica: every rank holds all of it" if kind == "Replicate" else \
            f"shard {describe(index, tuple(want.shape))}"
        return f"the gradient of {n} (rank {r} of {world}, {where}) {_what(state, n, part, want, r, parts, indices)}"
    return None


def _what(state: CaseState, n: str, part: torch.Tensor, want: torch.Tensor, r: int, parts, indices) -> str:
    """What rank ``r``'s part of the gradient of ``n`` is, next to autograd's."""
    world = len(parts)
    got = part.detach().to(torch.float64)
    w = want[indices[r]]
    shaped = [p.detach().to(torch.float64) for p in parts if tuple(p.shape) == tuple(parts[0].shape)]
    if world > 1 and len(shaped) == world and tuple(parts[0].shape) == tuple(want.shape) \
            and not all(_near(p, shaped[0]) for p in shaped[1:]) and _near(torch.stack(shaped).sum(0), want):
        # the ranks hold different parts that sum to the gradient: none reduced them
        return ("holds only this rank's part: the ranks' gradients sum to autograd's "
                "(a missing all-reduce?)")
    for other, index in enumerate(indices):
        if other != r and tuple(want[index].shape) == tuple(got.shape) and _near(got, want[index]) \
                and not _near(got, w):
            return (f"holds the part of rank {other} ({describe(index, tuple(want.shape))}): the wrong chunk "
                    "(a rank offset off by one, or a collective that left another rank's chunk here?)")
    text = _factor_text(got, w, world)
    if text:
        return text
    return "differs from autograd's" + _worst(got, w, indices[r], state.result.tensors[n].bound)


def _worst(got: torch.Tensor, want: torch.Tensor, index: tuple, bound) -> str:
    """``: 3 of 12 elements, the worst at [0, 1, 4] (-0.93 where autograd's is 0.07)``, the
    element in the unsharded tensor's coordinates; '' where the shapes differ."""
    if tuple(got.shape) != tuple(want.shape) or not got.numel():
        return ""
    gap = (got - want).abs()
    b = bound[index] if isinstance(bound, torch.Tensor) and bound.dim() and bound.shape != gap.shape else bound
    try:
        out = int((gap > b).sum())
    except RuntimeError:        # a bound that does not fit this part: count none
        out = 0
    at = [int(i) for i in torch.unravel_index(gap.flatten().argmax(), gap.shape)]
    where = ", ".join(str(s.start + i) for s, i in zip(index, at))
    count = f"{out} of {got.numel()} elements, " if out else ""
    return (f": {count}the worst at [{where}] ({float(got[tuple(at)]):.3g} where autograd's is "
            f"{float(want[tuple(at)]):.3g})")


def _near(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal to a few parts in a million: a relation that explains the values, not a pass."""
    scale = float(want.abs().max()) if want.numel() else 0.0
    return bool(((got - want).abs() <= rules.SHARDED_FACTOR_GAP * 1e-4 * max(scale, 1e-300)).all())


def _factor_text(got: torch.Tensor, want: torch.Tensor, world: int) -> str | None:
    """``is 2× autograd's: ...`` where ``got`` is a whole factor of ``want`` (the world size,
    its inverse, or zero), else None."""
    denom = float((want * want).sum())
    if not denom or tuple(got.shape) != tuple(want.shape):
        return None
    k = float((got * want).sum()) / denom
    if not _near(got, k * want):
        return None
    gap = rules.SHARDED_FACTOR_GAP
    if world > 1 and abs(k - world) <= gap * world:
        return (f"is {world}× autograd's: a gradient summed over ranks once too often (an all-reduce of a "
                "gradient every rank already holds whole?)")
    if world > 1 and abs(k - 1 / world) <= gap / world:
        return f"is 1/{world} of autograd's: divided by the world size (an average where a sum belongs?)"
    if abs(k) <= gap:
        return "is zero where autograd's is not: no gradient reaches this part"
    if abs(k + 1) <= gap:
        return "is minus autograd's: a sign error"
    return f"is {k:.3g}× autograd's" if got.numel() > 1 else None


def describe(index: tuple, shape: tuple) -> str:
    """``[50:100, :]``: a rank's part of a tensor of ``shape``."""
    return "[" + ", ".join(":" if (s.start, s.stop) == (0, n) else f"{s.start}:{s.stop}"
                           for s, n in zip(index, shape)) + "]"


def ranks_of(state: CaseState) -> tuple:
    """The names of the sharded record's tensors (inputs and data) that reach the ranks."""
    sharded = getattr(state.model, "sharded", None)
    return (*sharded.inputs, *sharded.data) if sharded is not None else ()


def in_ranks(state: CaseState, text: str) -> str:
    """``text`` (a layout stage's line about "the gradient of x ... at [i, j]") with the rank
    and shard that hold element [i, j] named after the tensor, where its gradient is sharded,
    and where the layout of the upstream gradient or of an input shows it, the collectives' usual cause."""
    view = re.search(r"when (\w+) is an? [\w-]+ (?:view|slice)", text)
    if "the upstream gradient is" in text:
        text += (" On the ranks: a collective handed a non-contiguous tensor (it reads and writes memory "
                 "as contiguous), or a copy such as g.contiguous() reduced while g itself is returned?")
    elif view is not None and view.group(1) in ranks_of(state) and " raised " not in text:
        # an input that arrives as a view: the forward's collective reduced a copy of it
        x = view.group(1)
        stop = "" if text.rstrip().endswith((".", "?", "!")) else "."
        text += (f"{stop} On the ranks: a collective handed a non-contiguous tensor (it reads and writes memory "
                 f"as contiguous), or a copy such as t.contiguous() reduced while t itself is returned (t: {x}, "
                 f"or a gradient that autograd lays out as {x} is laid out)?")
    found = re.search(r"the gradient of (\w+) changes when .* at \[([\d, ]+)\]", text)
    ranks = getattr(state.grads, "ranks", None)
    if found is None or ranks is None or found.group(1) not in ranks:
        return text
    n, at = found.group(1), tuple(int(v) for v in found.group(2).split(","))
    placement, _, indices = ranks[n]
    if type(placement).__name__ != "Shard":
        return text
    shape = tuple(state.grads[n].shape)
    for r, index in enumerate(indices):
        if len(at) == len(index) and all(s.start <= i < s.stop for s, i in zip(index, at)):
            return text.replace(f"the gradient of {n} ", f"the gradient of {n} (rank {r} of {len(indices)}, "
                                                         f"shard {describe(index, shape)}) ", 1)
    return text
