"""Where a wrong value went wrong, when that is not the line that assigns it: walked back by
value through lines that only rearrange (a slice, a flip), to a rearranged parameter, to the
write that never reaches some elements, or to a mask the backward recomputes differently."""
from __future__ import annotations

import dataclasses
import math

import torch

from ..check.case import Case
from ..record.spec import Tensors
from ..verdict import rules
from ..verdict.tolerance import bound as tolerance
from .result import Location
from .source import at, code_at, enclosing_loop, names_in, read_as_is, writes_to
from .trace import Assigned, Tracer
from .truth import Truth, matches


def origin(wrong: Assigned, want: torch.Tensor, floats: list[Assigned], truth: Truth, p: Tensors,
           d: Tensors, case: Case) -> tuple[Assigned, list[Assigned]] | None:
    """The line where a wrong value first goes wrong, where that is before the line that
    assigns it.  Two steps, by value only:

    - a line that only rearranges one value that nothing confirms (a slice, a flip, a
      transpose: every element it holds is one of that value's) cannot go wrong unless that
      value already holds the right gradient as a block; so the walk moves up to that value
      (``gw = gw.flip(-1)`` before ``gw = gw[:, :, 1:]``);
    - a line that computes with a value that is a rearrangement of a known one (a parameter,
      a value of the forward) and that nothing confirms: that rearrangement goes wrong first
      (a kernel that is not flipped, before the convolution and the slice that use it).

    Returns (that line, the lines between); None where the wrong line is its own origin."""
    known = [v.to(torch.float64) for v in (*getattr(truth, "forward_values", {}).values(),
                                           *(x for x, _ in getattr(truth, "named", {}).values()),
                                           *(t.detach().to("cpu") for t in (*p.values(), *d.values())
                                             if isinstance(t, torch.Tensor)))
             if isinstance(v, torch.Tensor) and v.is_floating_point()]
    named = getattr(truth, "named", {})

    def confirmed(r: Assigned) -> bool:
        v = r.value
        if r.argument or _holds(v, want, case) or any(
                tuple(t.shape) == tuple(v.shape) and matches(v, t, case, None) for t in truth.values()):
            return True
        return r.name in named and tuple(named[r.name][0].shape) == tuple(v.shape) and matches(
            v, named[r.name][0].to(torch.float64), case, None)

    def inputs(r: Assigned) -> list[Assigned]:
        found = []
        for name in dict.fromkeys(names_in(code_at(r.file, r.line))):
            prior = [x for x in floats if x.name == name and x.file == r.file and x.order < r.order]
            if prior:
                found.append(prior[-1])
        return found

    here, between = wrong, []
    for _ in range(rules.ORIGIN_STEPS):
        up = [x for x in inputs(here) if not confirmed(x) and _rearranged(here.value, x.value)]
        if len(up) != 1:
            break
        between.append(here)
        here = up[0]
    given = [t.detach().to("cpu", torch.float64) for t in (*p.values(), *d.values())
             if isinstance(t, torch.Tensor) and t.is_floating_point()]
    for x in inputs(here):
        if confirmed(x) or x.argument:
            continue
        # a parameter taken through a call that leaves it as it is at this size (a transpose of
        # 1 x 1 dims, a flip left out) counts too: the same call rearranges it at other sizes
        computed = not read_as_is(code_at(x.file, x.line))
        if any(_rearranged(x.value, k) for k in known) or (computed and any(
                tuple(k.shape) == tuple(x.value.shape) and torch.equal(k, x.value) for k in given)):
            between.append(here)
            here = x
            break
    if here is wrong:
        return None
    return here, sorted((x for x in between if x is not wrong), key=lambda x: x.order)


def _rearranged(value: torch.Tensor, source: torch.Tensor) -> bool:
    """Every element of ``value`` is one of ``source``'s, bit for bit, and ``value`` is not
    ``source`` itself: a slice, flip, transpose or permutation of it.  A constant proves
    nothing (zeros are in most tensors)."""
    if not value.is_floating_point() or value.numel() < 2 or source.numel() < 2:
        return False
    flat = value.reshape(-1)
    if bool((flat == flat[0]).all()):
        return False
    if tuple(value.shape) == tuple(source.shape) and torch.equal(value, source.to(value.dtype)):
        return False
    return bool(torch.isin(flat, source.to(value.dtype).reshape(-1)).all())


def _holds(value: torch.Tensor, want: torch.Tensor, case: Case) -> bool:
    """``value`` holds ``want`` as a block (a padded gradient, before the slice that takes it)."""
    if value.dim() != want.dim() or value.dim() == 0 or tuple(value.shape) == tuple(want.shape) or any(
            v < w for v, w in zip(value.shape, want.shape)):
        return False
    count = math.prod(v - w + 1 for v, w in zip(value.shape, want.shape)) * want.numel()
    if count > rules.HOLDS_WINDOW_ELEMENTS:
        return False
    windows = value
    for axis, size in enumerate(want.shape):
        windows = windows.unfold(axis, size, 1)
    windows = windows.reshape(-1, *want.shape)
    allowed = tolerance(want, case.dtype)
    return bool(((windows - want).abs() <= allowed).flatten(1).all(1).any())


def from_origin(found: tuple[Assigned, list[Assigned]], wrong: Assigned, expected: str) -> Location:
    """The location of an :func:`origin`: its line, with the sentence that leads from the
    wrong value back to it."""
    first, between = found
    through = f", through {', '.join(f'{x.name} ({at(x.file, x.line)})' for x in between)}" if between else ""
    why = (f"{wrong.name} ({at(wrong.file, wrong.line)}) is not {expected}; it comes from {first.name}, "
           f"set here{through}: a rearrangement that nothing confirms, the first line that can be wrong")
    return Location(first.file, first.line, first.name, code_at(first.file, first.line), expected, why=why)


def never_written(states: list[Assigned], first: Assigned, want: torch.Tensor, case: Case,
                  target: str, ran: set) -> Location | None:
    """A tensor made once (``zeros_like``) and then written in place, whose wrong elements all
    keep the value it was made with: the mistake is a write that never reaches them (a loop
    that starts one step late, a slice one short), not the line that made it.  The loop
    around the writes, or the write itself where there is no loop.  Where no write ran at
    all (the loop's one step skipped at size 1), the writes the code holds for it."""
    if first is not states[0]:
        return None
    start, final = states[0].value, states[-1].value
    if tuple(start.shape) != tuple(want.shape):
        return None
    wrong = (final - want).abs() > tolerance(want, case.dtype)
    if not bool(wrong.any()) or bool(start[wrong].any()):
        return None         # made with values of its own (ones, not zeros): the line that made it
    if len(states) > 1:
        if bool(wrong.all()) or any(not torch.equal(s.value[wrong], start[wrong]) for s in states[1:]):
            return None         # a write reached them: its line is the one that went wrong
        write = states[1]
        file, line = write.file, write.line
    else:
        file = states[0].file
        line = next((w for w in writes_to(file, states[0].line, states[0].name) if (file, w) not in ran), None)
        if line is None:
            return None
    write = dataclasses.replace(states[0], file=file, line=line)
    loop = enclosing_loop(write.file, write.line)
    if len(states) == 1 and loop is None:
        return None
    shown = rules.DIAGNOSIS_SHOWN_ELEMENTS
    where = [tuple(i) for i in wrong.nonzero().tolist()[:shown]]
    ran_at_all = "" if len(states) > 1 else ", which never ran"
    why = (f"{write.name} is not the gradient of {target} at {', '.join(map(str, where))}"
           f"{' ...' if int(wrong.sum()) > shown else ''}: those elements keep the value it was made with "
           f"({at(states[0].file, states[0].line)}); no write reaches them ({at(write.file, write.line)}"
           f"{ran_at_all})")
    line = loop or write.line
    return Location(write.file, line, write.name, code_at(write.file, line), f"the gradient of {target}", why=why)


def first_with_final_error(states: list[Assigned], want: torch.Tensor, case: Case, scalar_g) -> Assigned:
    """Of the successive values of one object (``dW = ...``, ``dW += reg * W``, ``dW *= dout``),
    the first of the run at the end whose error is already the final one (up to a scalar
    ``g``): where it went wrong."""
    def error(value: torch.Tensor) -> list[torch.Tensor]:
        errs = [value - want]
        if scalar_g not in (None, 0.0):
            errs.append(value * scalar_g - want)
        return errs

    final = states[-1].value - want
    allowed = tolerance(want, case.dtype)
    first = states[-1]
    for state in reversed(states):       # the run of values at the end that already carry the final error
        if not (tuple(state.value.shape) == tuple(want.shape) and any(
                bool(((e - final).abs() <= allowed).all()) for e in error(state.value))):
            break
        first = state
    return first


def recomputed(tracer: Tracer, wrong: Assigned, code: str, truth: Truth) -> Location | None:
    """An input of the wrong line that the backward recomputes from the forward (a mask, a
    causal pattern) and that differs from the forward's own value of that name."""
    forward = getattr(truth, "named", {})
    for name in names_in(code):
        if name == wrong.name or name not in forward:
            continue
        mine = [r for r in tracer.records if r.name == name and r.file == wrong.file and r.order < wrong.order]
        if not mine:
            continue
        rec, theirs = mine[-1], forward[name]
        if tuple(rec.value.shape) == tuple(theirs[0].shape) and not torch.allclose(
                rec.value.double(), theirs[0].double(), rtol=rules.FORWARD_SAME_RTOL, atol=rules.FORWARD_SAME_ATOL):
            return Location(rec.file, rec.line, name, code_at(rec.file, rec.line),
                            f"the forward's {name} (at {at(*theirs[1])}), which it recomputes",
                            f"{wrong.name} ({at(wrong.file, wrong.line)}) goes wrong with it")
    return None
