"""Where: the first assignment of the user's backward that is not the gradient it stands for.

The forward (or the reference, where autograd runs on one) and the backward run again under
``sys.settrace`` (:mod:`.trace`), and autograd gives the gradient of every tensor the forward
computed (:mod:`.truth`).  The backward's assignments are walked in order: a value that is the
gradient of a forward intermediate (by name: ``grad_h``, ``h_grad``, ``dh``, ``gh`` for ``h``; or
by value) is right; one that is named as such a gradient and is not, is wrong.  The first wrong
one is reported, with what it should have been, or the line before it where it went wrong
(:mod:`.origin`); where nothing matches, the report says so and guesses nothing."""
from __future__ import annotations

import torch

from ..check.case import Bound, Case
from ..record.spec import Tensors
from .origin import first_with_final_error, from_origin, never_written, origin, recomputed
from .result import Location
from .source import UPSTREAM_NAMES, at, code_at, gradient_of, names_in
from .trace import Assigned, Tracer
from .truth import Truth, forward_gradients, matches


def locate(model: Bound, case: Case, p: Tensors, d: Tensors, g, manual, auto,
           failing: list[str]) -> tuple[Location | None, str | None]:
    """The first assignment of the backward that is not the gradient it stands for, and a
    note where there is none."""
    truth = forward_gradients(model, p, d, g)
    for n in model.differentiable:
        truth.setdefault(n, auto[n].detach().to("cpu", torch.float64))
    tracer = Tracer(every_tensor=True)
    with torch.no_grad():
        out, cache = model.forward(p, d)
        tracer.run(model.backward, p, d, cache, g)
    scalar_g = float(g) if g.dim() == 0 else None
    floats = [r for r in tracer.records if r.value.is_floating_point()]
    # what the backward returns as each failing tensor's gradient is that gradient, whatever its name
    returned = {}
    for n in failing:
        final = manual[n].detach().to("cpu", torch.float64)
        hit = [r for r in floats if tuple(r.value.shape) == tuple(final.shape) and torch.equal(r.value, final)]
        if hit:
            returned[(hit[-1].file, hit[-1].name)] = n
    history: dict[tuple[str, str, int], list[Assigned]] = {}     # one object's successive values
    last: dict[tuple[str, str], int] = {}
    for r in floats:
        history.setdefault((r.file, r.name, r.ident), []).append(r)
        last[(r.file, r.name)] = r.order
    misreturned: list[tuple[Assigned, str, str]] = []
    status: dict[str, tuple[bool, int]] = {}
    computed = set()            # names the backward itself assigned (not its arguments as they came)
    without_g: list = []        # assignments right only for an upstream gradient of 1
    for rec in floats:
        value = rec.value
        if not rec.argument:
            computed.add(rec.name)
        claimed = [x for x in gradient_of(rec.name) if x in truth and tuple(truth[x].shape) == tuple(value.shape)]
        if rec.name in UPSTREAM_NAMES and "output" in truth:
            claimed.append("output")
        as_returned = returned.get((rec.file, rec.name))
        if claimed and as_returned and as_returned != claimed[0] and last[(rec.file, rec.name)] == rec.order \
                and matches(value, truth[claimed[0]], case, scalar_g):
            misreturned.append((rec, claimed[0], as_returned))     # right, and returned in another's place
        elif as_returned:
            claimed.insert(0, as_returned)
        line = None if rec.argument else rec.line
        if not claimed:
            if any(matches(value, t, case, None) for t in truth.values() if tuple(t.shape) == tuple(value.shape)):
                status[rec.name] = (True, line)
            continue
        target = claimed[0]
        if matches(value, truth[target], case, None):
            status[rec.name] = (True, line)
            without_g = [(r, t) for r, t in without_g if r.name != rec.name]    # g came in after all
            continue
        if matches(value, truth[target], case, scalar_g):
            status[rec.name] = (True, line)      # right for g = 1: g may come in later
            without_g.append((rec, target))
            continue
        if last[(rec.file, rec.name)] > rec.order:
            continue        # changed again later (grad_h = ...clone(); grad_h[h < 0] = 0): judged as it ends up
        states = history[(rec.file, rec.name, rec.ident)]
        rec = first_with_final_error(states, truth[target], case, scalar_g)
        missed = never_written(states, rec, truth[target], case, target, tracer.ran)
        if missed is not None:
            return missed, None
        code = code_at(rec.file, rec.line)
        inputs = [w for w in names_in(code) if w != rec.name and w in status]
        if any(not status[w][0] for w in inputs):
            continue        # an input is already wrong: that line was reported first
        helper = recomputed(tracer, rec, code, truth)
        if helper is not None:
            return helper, None
        what = "the gradient of the output" if target == "output" else f"the gradient of {target}"
        found = origin(rec, truth[target], floats, truth, p, d, case)
        if found is not None:
            return from_origin(found, rec, what + _defined(target, truth)), None
        right = next((f"{_input(w, status, rec.file)} is right" for w in inputs if status[w][0]), "")
        return Location(rec.file, rec.line, rec.name, code, what + _defined(target, truth), right), None
    if without_g and not any(matches(manual[n].detach().to("cpu", torch.float64), auto[n].detach().to(
            "cpu", torch.float64), case, None) for n in failing):
        rec, target = without_g[0]
        return Location(rec.file, rec.line, rec.name, code_at(rec.file, rec.line),
                        f"the gradient of {target}{_defined(target, truth)}: it is that for g = 1, "
                        "and g is never multiplied in"), None
    if misreturned and tracer.returns:
        rec, target, n = misreturned[0]
        file, line, slot = _built(tracer, n, manual[n], *tracer.returns[-1])
        return Location(file, line, slot, code_at(file, line), f"the gradient of {n}",
                        f"it returns {rec.name} ({at(rec.file, rec.line)}), which is the gradient of {target}"), None
    if any(n in computed for n in status) and all(ok for ok, _ in status.values()) and tracer.returns:
        # every gradient it computed on the way is right: the mistake is in what it returns,
        # or in the line that put it where it returns it from
        n = failing[0]
        file, line, slot = _built(tracer, n, manual[n], *tracer.returns[-1])
        code = code_at(file, line)
        right = next((f"{_input(w, status, file)} is right" for w in names_in(code) if w in status), "")
        return Location(file, line, slot, code, f"the gradient of {n}", right), None
    return None, ("could not localise: no assignment of the backward names a gradient of the forward's "
                  "steps, or matches one by value")


def _built(tracer: Tracer, n: str, final: torch.Tensor, file: str, line: int) -> tuple[str, int, str]:
    """Where the returned gradient of ``n`` was put in the dict, tuple or list that the
    backward returns (``grads = {...}`` a line before ``return grads``): that line and the
    slot; else the return line itself."""
    returned = [name for name in names_in(code_at(file, line)) if name != "return"]
    final = final.detach().to("cpu", torch.float64)
    hits = [c for c in tracer.containers if c[0] == file and c[2] in returned and c[1] < line]
    for cfile, cline, name, slots in reversed(hits):
        for key, value in slots.items():
            if tuple(value.shape) == tuple(final.shape) and torch.equal(value, final):
                return cfile, cline, f"{name}[{key!r}]"
    return file, line, n


def _defined(target: str, truth: Truth) -> str:
    """``, defined at examples/wrong.py:11``: where the forward assigned ``target``."""
    where = getattr(truth, "lines", {}).get(target)
    return f", defined at {at(*where)}" if where else ""


def _input(name: str, status: dict, rec_file: str) -> str:
    """``gy (examples/wrong.py:18)``, or ``g (as passed in)`` for an argument of the backward."""
    line = status[name][1]
    return f"{name} (as passed in)" if line is None else f"{name} ({at(rec_file, line)})"
