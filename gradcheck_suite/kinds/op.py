"""An op as it ships, shared by two kinds: an ``autograd.Function`` (``function.py``) and a
``torch.library`` custom op (``custom_op.py``), or any callable with a hand-written autograd
formula inside.  :func:`op_model` returns an ordinary :class:`~gradcheck_suite.Model`; a model
file assigns it to a top-level name like any other record.

``op_model(MyFunction, ...)``
    The manual gradient is ``torch.autograd.grad`` through the user's op, exactly as
    training runs it.  The autograd oracle is ``reference``, a plain-torch function of
    the same arguments.  The op may be a wrapper (``lambda x, w: Fn.apply(x, (4,), w)``):
    every message speaks of the wrapper's arguments.  On top of the usual contract the
    checker calls the op's backward with its own ``ctx``, as the engine does: tensors saved
    on ``ctx`` must come back unchanged, and with each input frozen in turn the backward
    must still work and give the others the same gradients.  A gradient for a non-tensor
    argument is an error (torch raises); one for a tensor that needs none is a note (torch
    drops it: ``needs_input_grad`` is an optimisation), and so is one of another shape that
    the engine sums down to the input's (torch allows it; the values decide).
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..record.blame import ours, where
from ..record.errors import ContractError, RunNote
from ..verdict import rules
from ..verdict.tolerance import bound
from ..verdict.oracles import backward_into, refuses_grad
from ..record.spec import Dim, Hyper, Model, SpecError, Tensors
from . import common, kind_holding

__all__ = ["op_model", "OpCall", "same_values", "with_opcheck"]


@dataclasses.dataclass(frozen=True)
class OpCall:
    """How to call the user's op from a case's tensors: the argument order, which
    arguments are differentiable inputs, data tensors or hyperparameters, and which go by
    keyword (a custom op's keyword-only arguments)."""

    call: Callable[..., Any]
    args: tuple[str, ...]
    inputs: tuple[str, ...]
    registration: Callable[..., tuple[str | None, str | None]] | None = None   # opcheck's test
    keywords: frozenset[str] = frozenset()
    direct: bool = True      # the op itself, not a wrapper: its positions are ``args``
    in_place: bool | None = None   # marks an input dirty (ctx.mark_dirty): called on clones; None: found by calling
    opcheck: bool | None = None   # the record's choice; None: the profile's
    by_profile: bool = False      # the profile runs opcheck where the record leaves it open (``with_opcheck``)
    found: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)   # what a first call showed

    def arguments(self, p: Mapping, d: Mapping, h: Mapping | None) -> list:
        values = [p[n] if n in p else d[n] if n in d else common.own(h[n]) for n in self.args]
        sparse = getattr(h, "sparse", None)
        if sparse:            # a sparse COO input, held dense by the case: rebuilt at its pattern
            values = [sparse_at(v, sparse[n]) if n in sparse and isinstance(v, torch.Tensor) else v
                      for n, v in zip(self.args, values)]
        if self.marks_dirty(values):     # each call on its own copies, as training passes it fresh activations:
            # the case's tensors stay intact, and a leaf that requires grad reaches the op as a
            # differentiable non-leaf, which torch lets a Function change (mark_dirty)
            values = [v.clone() if isinstance(v, torch.Tensor) else v for v in values]
        return values

    def marks_dirty(self, values: list) -> bool:
        """Whether the op changes an input in place and says so (``ctx.mark_dirty``), as a
        first call on copies shows: torch then returns that input itself as the output.  It
        is how the op behaves, not what its source says (a comment, a helper function, a
        wrapper).  An op that changes an input without marking it is left to the forward
        stage, which reports the changed input."""
        if self.in_place is not None:
            return self.in_place
        key = repr([v for v in values if not isinstance(v, torch.Tensor)])   # a hyperparameter may decide it
        if key not in self.found:
            copies = [v.detach().clone().requires_grad_(v.requires_grad).clone() if isinstance(v, torch.Tensor)
                      else v for v in values]          # differentiable non-leaves, which torch lets a Function change
            try:
                with torch.enable_grad():
                    outs = self.call(*[v for n, v in zip(self.args, copies) if n not in self.keywords],
                                     **{n: v for n, v in zip(self.args, copies) if n in self.keywords})
            except Exception:       # the checks call it again, and report what it raises
                outs = ()
            outs = outs if isinstance(outs, (tuple, list)) else (outs,)
            self.found[key] = any(o is c for o in outs for c in copies if isinstance(c, torch.Tensor))
        return self.found[key]

    def invoke(self, p: Mapping, d: Mapping, h: Mapping | None):
        values = self.arguments(p, d, h)
        positional = [v for n, v in zip(self.args, values) if n not in self.keywords]
        return self.call(*positional, **{n: v for n, v in zip(self.args, values) if n in self.keywords})

    def gradients(self, p: Tensors, d: Tensors, h, g, absent: int | None = None) -> dict[str, torch.Tensor]:
        """The manual gradient: autograd through the user's op, as in training. Called
        with grad mode on and inputs that require grad, it keeps the graph (double backward).
        ``absent``: the position of an output left out of the loss, whose gradient the
        engine then passes to the backward as it does for an unused output."""
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            leaves = {n: p[n] if create and p[n].requires_grad else p[n].detach().requires_grad_(True)
                      for n in self.inputs}
            outs = _outputs(self.invoke(leaves, d, h))
            gs = g if isinstance(g, tuple) else (g,)
            if len(gs) != len(outs):
                raise ContractError(f"the op returned {len(outs)} outputs, its forward {len(gs)}")
            pairs = [(o, gg) for k, (o, gg) in enumerate(zip(outs, gs)) if o.requires_grad and k != absent]
            if not pairs:
                return {n: torch.zeros_like(leaves[n]) for n in self.inputs}
            try:
                grads = torch.autograd.grad([o for o, _ in pairs], [leaves[n] for n in self.inputs],
                                            grad_outputs=[gg for _, gg in pairs], allow_unused=True,
                                            create_graph=create)
            except RuntimeError as e:
                if refuses_grad(e) and not create:
                    return self._through_backward(p, d, h, gs, absent)
                hint = self._position_hint(str(e))
                if hint is None:
                    raise
                raise ContractError(hint) from None
        return {n: torch.zeros_like(leaves[n]) if gr is None else _dense(gr if create else gr.detach())
                for n, gr in zip(self.inputs, grads)}

    def _through_backward(self, p: Tensors, d: Tensors, h, gs: tuple, absent: int | None = None
                          ) -> dict[str, torch.Tensor]:
        """The manual gradient where ``torch.autograd.grad`` is refused (a reentrant
        checkpoint): the op runs again on fresh leaf copies and ``.backward()`` takes the
        gradients, exactly as training does."""
        with torch.enable_grad():
            leaves = {n: p[n].detach().requires_grad_(True) for n in self.inputs}
            pairs = [(o, gg) for k, (o, gg) in enumerate(zip(_outputs(self.invoke(leaves, d, h)), gs))
                     if o.requires_grad and k != absent]
            try:
                return backward_into([o for o, _ in pairs], [gg for _, gg in pairs], leaves)
            except RuntimeError as e:
                hint = self._position_hint(str(e))
                if hint is None:
                    raise
                raise ContractError(hint) from None

    def _position_hint(self, message: str) -> str | None:
        """Torch's own refusal of a gradient (for a non-tensor argument, or of the wrong
        shape), in the user's names."""
        shape = re.search(r"returned an invalid gradient at index (\d+) - got \[([\d, ]*)\] but expected shape "
                          r"compatible with \[([\d, ]*)\]", message)
        if shape is not None:
            i = int(shape.group(1))
            got, want = (tuple(int(v) for v in g.split(",") if v.strip()) for g in shape.group(2, 3))
            from ..record.errors import shape_hint
            return (f"{self._position_name(i)}: gradient shape {got}, expected {want}{shape_hint(got, want)} "
                    f"(torch raises: \"{shape.group(0)}\")")
        count = re.search(r"returned an incorrect number of gradients \(expected (\d+), got (\d+)\)", message)
        if count is not None:
            want, got = int(count.group(1)), int(count.group(2))
            return (f"backward returned {got} gradient{'s' * (got != 1)} where torch expects {want}, one per argument "
                    "of the Function's forward: return a tuple with one entry per argument, None for one that "
                    "needs no gradient" + ("; a list or a lone tensor counts as one" if got == 1 else "")
                    + f" (torch raises: \"{count.group(0)}\")")
        found = re.search(r"returned a gradient different than None at position (\d+), but the corresponding "
                          r"forward input was not a Variable", message)
        if found is None:
            return None
        i = int(found.group(1)) - 1
        which = (f"{self.args[i]} (argument {i + 1}, not a tensor)" if self.direct and i < len(self.args)
                 else f"argument {i + 1} of the Function's forward, which is not a tensor")
        return (f"backward returned a gradient for {which}; torch raises there in training "
                f"(\"{found.group(0)}\"): return None in that position")

    def contract_problem(self, p: Tensors, d: Tensors, h, g) -> tuple[str | None, list[str], bool]:
        """Call the op's backward with its own ctx, as the autograd engine would: the
        tensors it saved must come back unchanged; then again with each input frozen in
        turn, where it must still work and give the other inputs the same gradients.
        A gradient returned where ``ctx.needs_input_grad`` is False is valid torch (the
        engine drops it) and only a note.  With a ``registration`` test (a custom op's
        torch.library.opcheck) that the record or the profile asks for, that runs first.
        Returns (the error or None, notes, whether the error is a frozen-input finding:
        those are judged after the values, which may explain them)."""
        notes: list[str] = []
        if self.registration is not None and (self.opcheck or (self.opcheck is None and self.by_profile)):
            text, note = self._registration_problem(p, d, h)
            if text:
                return text + ("" if self.opcheck else " (the nightly profile runs opcheck: reproduce with "
                               "--profile nightly, or give the record opcheck=True)"), [], False
            if note:
                notes.append(RunNote(note, key="opcheck"))
        gs = g if isinstance(g, tuple) else (g,)
        full = self._direct_backward(p, d, h, gs, None)
        if full is None:
            return None, notes, False   # not an autograd.Function node: the gradient checks still apply
        needs, raw, problem, shapes = full
        if problem:
            return problem, [], False
        frozen_runs = {}                  # input -> (its positions in the Function's arguments, what backward gave)
        for n in (self.inputs if len(self.inputs) > 1 else ()):
            frozen = self._direct_backward(p, d, h, gs, n)
            if frozen is None:
                continue
            needs_n, raw_n, problem, _ = frozen
            if problem:
                return problem, [], True      # it raised with an input frozen
            frozen_runs[n] = ([i for i, (a, b) in enumerate(zip(needs, needs_n)) if a and not b], needs_n, raw_n)
        named = {i: n for n, (mine, _, _) in frozen_runs.items() for i in mine}   # position -> the user's name

        def name(i: int) -> str:
            return named.get(i) or self._position_name(i)

        unasked = [name(i) for i, r in enumerate(raw) if r is not None and i < len(needs) and not needs[i]]
        for n, (mine, needs_n, raw_n) in frozen_runs.items():
            unasked += [n for i in mine if i < len(raw_n) and raw_n[i] is not None]
            for i, (a, b) in enumerate(zip(raw, raw_n)):
                if i in mine or not (i < len(needs_n) and needs_n[i]):
                    continue
                if not isinstance(b, torch.Tensor) or (isinstance(a, torch.Tensor) and not _close(a, b)):
                    again = self._direct_backward(p, d, h, gs, None)   # the repeated call first
                    if isinstance(b, torch.Tensor) and again is not None and not (
                            i < len(again[1]) and isinstance(again[1][i], torch.Tensor)
                            and _close(again[1][i], a)):
                        return (f"backward gives another gradient for {name(i)} when called again with the same "
                                "inputs: it is not deterministic (random numbers, or state kept between calls), "
                                "so which inputs need a gradient cannot be judged"), [], True
                    got = "no gradient" if b is None else "another gradient"
                    return (f"backward gives {got} for {name(i)} when {n} needs no gradient "
                            f"(ctx.needs_input_grad[{', '.join(map(str, mine)) or '?'}] is False): a gradient "
                            "must not depend on which other inputs need one"), [], True
        for i, (r, want) in enumerate(zip(raw, shapes)):
            if isinstance(r, torch.Tensor) and want is not None and tuple(r.shape) != want \
                    and _sums_to(tuple(r.shape), want):
                notes.append(RunNote(
                    f"{name(i)}: backward returns a gradient of shape {tuple(r.shape)} for an input of shape {want}; "
                    "torch sums it down to the input's shape without a word (it allows a gradient the input "
                    "broadcasts to), so this is no error by itself and the values decide; a .squeeze() or a "
                    "reduction without keepdim that broadcast further than meant?", key=f"broadcast {name(i)}"))
        if unasked:
            names = ", ".join(dict.fromkeys(unasked))
            notes.append(f"backward computes a gradient nobody asked for: for {names} while ctx.needs_input_grad "
                         "is False there (a data tensor, or an input frozen); torch drops it, and skipping that "
                         "work would save time")
        return None, notes, False

    def _position_name(self, i: int) -> str:
        return self.args[i] if self.direct and i < len(self.args) else f"argument {i + 1} of the Function's forward"

    def _registration_problem(self, p, d, h) -> tuple[str | None, str | None]:
        leaves = {n: p[n].detach().clone().requires_grad_(True) for n in self.inputs}
        values = self.arguments(leaves, d, h)
        positional = tuple(v for n, v in zip(self.args, values) if n not in self.keywords)
        keywords = {n: v for n, v in zip(self.args, values) if n in self.keywords}
        return self.registration(self.call, positional, keywords, self.opcheck is True)

    def _direct_backward(self, p, d, h, gs, frozen: str | None):
        """``(ctx.needs_input_grad, what backward returned, a problem or None, the shape
        the engine expects at each position)`` for the op's node called directly, with
        ``frozen`` needing no gradient; None where the op is not an autograd.Function node.
        An expected shape is None where no gradient flows."""
        with torch.enable_grad():
            leaves = {n: p[n].detach().clone().requires_grad_(n != frozen) for n in self.inputs}
            args = self.arguments(leaves, d, h)
            outs = _outputs(self.invoke(leaves, d, h))
        node = next((o.grad_fn for o in outs if o.grad_fn is not None), None)
        if not isinstance(node, torch.autograd.function.BackwardCFunction):
            return None
        needs = tuple(getattr(node, "needs_input_grad", ()))
        shapes = _expected_shapes(node, args if self.direct else None)
        # saved tensors that reading would use up (clear_saved_tensors_on_access) stay unread
        readable = not getattr(getattr(node, "_forward_cls", None), "clear_saved_tensors_on_access", False)
        saved = list(node.saved_tensors) if frozen is None and readable else []
        before = [None if t is None else t.clone() for t in saved]
        attrs = {k: v for k, v in vars(node).items() if isinstance(v, torch.Tensor)} if frozen is None else {}
        attrs_before = {k: v.clone() for k, v in attrs.items()}
        try:
            with torch.no_grad():
                raw = node.apply(*_node_grads(node, outs, gs))
        except Exception as e:
            if frozen is None or ours(e):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return (needs, (), f"backward raised {type(e).__name__}: {first} when {frozen} needs no gradient{where(e)}",
                    shapes)
        raw = raw if isinstance(raw, tuple) else (raw,)
        for i, (t, b) in enumerate(zip(saved, before)):
            if t is not None and not same_values(t, b):
                return needs, raw, (f"backward changed a tensor saved on ctx in place "
                                    f"({_saved_name(t, i, args, self.args, outs)}); a second backward through the "
                                    "same graph would read the changed values"), shapes
        for k, t in attrs.items():
            if not same_values(t, attrs_before[k]):
                return (needs, raw, f"backward changed ctx.{k} in place; a second backward would read the changed values",
                        shapes)
        return needs, raw, None, shapes


class Masked(Hyper):
    """A case's hyperparameters, and the pattern of each sparse COO input of an op
    (``sparse``: name -> the indices of its specified elements), held dense by the case.

    gradcheck's ``masked=True`` semantics: the specified values are the variables.  The
    case holds the input dense (the values where specified, zeros elsewhere), and every call
    of the op or the reference gets a sparse COO tensor rebuilt from the dense tensor's
    values at the same indices (:func:`sparse_at`), so that autograd, the manual gradient
    and finite differences all reach the values through it: a gradient is read at the
    specified elements only (torch's own backward of the sparse tensor's construction
    gathers them there), and is 0 elsewhere, where moving the dense tensor changes nothing."""

    __slots__ = ("sparse",)

    def __init__(self, values: Mapping, sparse: Mapping[str, torch.Tensor]):
        super().__init__(values)
        object.__setattr__(self, "sparse", dict(sparse))


def sparse_at(dense: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The sparse COO tensor of ``dense``'s values at ``indices`` (those of a coalesced
    tensor: sorted, each once), differentiable in ``dense``."""
    indices = indices.to(dense.device)
    return torch.sparse_coo_tensor(indices, dense[tuple(indices)], tuple(dense.shape), is_coalesced=True,
                                   check_invariants=False)


def _dense(gr: torch.Tensor) -> torch.Tensor:
    """A gradient as the case compares it: a sparse gradient of a dense tensor (torch takes
    one from a Function's backward) densified; the values are the same."""
    return gr.to_dense() if gr.layout == torch.sparse_coo else gr


def with_opcheck(model: Model) -> Model:
    """``model`` with ``torch.library.opcheck`` on, where it holds a custom op whose record
    left the choice to the profile (``opcheck`` not given): what the nightly profile runs.
    Any other model is returned as it is; a record's own ``opcheck=False`` wins."""
    info = model.op
    if not isinstance(info, OpCall) or info.registration is None or info.opcheck is not None:
        return model
    return dataclasses.replace(model, op=dataclasses.replace(info, by_profile=True))


def _expected_shapes(node, args: list | None) -> tuple:
    """Per position of the Function's forward, the shape the engine checks a gradient
    against (the metadata of the next edge it validates with), or None where no gradient
    flows.  The node's edges are its tensor arguments only: ``args`` (the op called
    directly) says which positions those are; for a wrapper, only where every argument is
    a tensor is the order known."""
    edges = list(node.next_functions)
    if args is not None:
        tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    elif len(edges) == len(getattr(node, "needs_input_grad", ())):
        tensors = list(range(len(edges)))
    else:
        return ()
    if len(tensors) != len(edges):
        return ()
    shapes: list = [None] * (max(tensors) + 1 if tensors else 0)
    for i, (fn, nr) in zip(tensors, edges):
        meta = getattr(fn, "_input_metadata", None) if fn is not None else None
        if meta is not None and nr < len(meta):
            shapes[i] = tuple(meta[nr].shape)
    return tuple(shapes)


def _sums_to(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """Whether torch's engine takes a gradient of shape ``got`` for an input of shape
    ``want`` by summing it down (``want`` broadcasts to ``got``) rather than raising."""
    if len(want) > len(got):
        return False
    return all(w == g or w == 1 for w, g in zip(want[::-1], got[::-1]))


def _node_grads(node, outs, gs) -> list[torch.Tensor]:
    """One upstream gradient for each of the Function's own outputs: the case's where the
    op (a wrapper, maybe) returns that output, zeros where it keeps it to itself, as the
    engine hands them."""
    given = {o.output_nr: g for o, g in zip(outs, gs) if o.grad_fn is node}
    meta = getattr(node, "_input_metadata", None)
    if meta is None:
        return list(gs[:len(outs)])
    return [given[i] if i in given else torch.zeros(tuple(m.shape), dtype=m.dtype, device=m.device)
            for i, m in enumerate(meta)]



def _outputs(out) -> tuple[torch.Tensor, ...]:
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    for i, o in enumerate(outs):
        if not isinstance(o, torch.Tensor):
            raise ContractError(f"the op's output {i} is {type(o).__name__}, expected a tensor")
    return outs


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal in shape and in every value, NaN where the other has NaN: a tensor unchanged."""
    a, b = _dense(a), _dense(b)
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal within the dtype's tolerance: the same gradient, computed in another order."""
    a, b = _dense(a), _dense(b)
    if a.shape != b.shape:
        return False
    if same_values(a, b):
        return True
    gap = (a.detach().to("cpu", torch.float64) - b.detach().to("cpu", torch.float64)).abs()
    return bool((gap <= bound(a, str(a.dtype).removeprefix("torch."))).all())


def _saved_name(t: torch.Tensor, i: int, args: list, names: tuple[str, ...], outs) -> str:
    for name, arg in zip(names, args):
        if isinstance(arg, torch.Tensor) and arg.data_ptr() == t.data_ptr() and arg.shape == t.shape:
            return f"saved_tensors[{i}], the input {name}"
    if any(o.data_ptr() == t.data_ptr() for o in outs):
        return f"saved_tensors[{i}], the output"
    return f"saved_tensors[{i}]"

def _keyword_only(fn: Any, names: tuple[str, ...]) -> frozenset[str]:
    """The names among ``names`` that ``fn`` takes by keyword only (``def op(x, *, c)``)."""
    target = fn.forward if isinstance(fn, type) else getattr(fn, "_init_fn", fn)
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    return frozenset(q.name for q in params if q.kind is inspect.Parameter.KEYWORD_ONLY and q.name in names)


def op_model(op: Any, *, name: str, dims: Mapping[str, Dim], inputs: Mapping[str, tuple],
             reference: Callable[..., Any] | None, data: Mapping[str, tuple] | None = None,
             hyper: Mapping[str, Any] | None = None, args: common.Args | None = None, backward_runs: int | None = None,
             opcheck: bool | None = None, **fields: Any) -> Model:
    """A record for an ``autograd.Function`` subclass or a ``torch.library`` custom op.

    inputs     ``{name: shape}``: the tensors that get gradients, in call order
    reference  plain torch with the op's arguments; autograd runs on it
    data       ``{name: shape}``: tensors passed without ``requires_grad`` (indices, masks)
    hyper      ``{name: Dim(...) or (choice, ...)}``: non-tensor arguments, drawn like dims
    args       the op's positional order by name (default: inputs, data, hyper)
    opcheck    also run ``torch.library.opcheck`` on each case (custom ops only): True always,
               False never, None (the default) in the nightly profile only
    Any other :class:`Model` field (dtype, factories, scales, where, double_backward, doc,
    ...) passes through.
    """
    kind = kind_holding(op, "op_model")
    if kind is None:
        raise SpecError(str(name), "op", f"must be an autograd.Function subclass or a custom op, got {op!r}")
    if not callable(reference):
        raise SpecError(str(name), "reference", "an op hides its backward from autograd: give a plain-torch "
                                                "function of the same arguments as the oracle")
    if opcheck is not None and not isinstance(opcheck, bool):
        raise SpecError(str(name), "opcheck", f"must be True, False or left out (the profile decides), got {opcheck!r}")
    if opcheck and (kind.registration_check is None or not hasattr(torch.library, "opcheck")):
        raise SpecError(str(name), "opcheck", "torch.library.opcheck tests torch.library custom ops only")
    data, hyper = dict(data or {}), dict(hyper or {})
    order = common.order(str(name), args, {"inputs": inputs, "data": data, "hyper": hyper})
    call = op.apply if isinstance(op, type) and issubclass(op, torch.autograd.Function) else op
    registration = kind.registration_check if opcheck is not False and hasattr(torch.library, "opcheck") else None
    info = OpCall(call, order, tuple(inputs), registration,
                  _keyword_only(op, order), direct=isinstance(op, type) or kind.called_directly,
                  opcheck=opcheck)
    by_name = _keyword_only(reference, order)

    def forward(p, d, h=None):
        with torch.no_grad():
            return info.invoke(p, d, h), None

    def backward(p, d, cache, g, h=None):
        return info.gradients(p, d, h, g)

    def ref(p, d, h=None):
        values = info.arguments(p, d, h)
        return reference(*[v for n, v in zip(order, values) if n not in by_name],
                         **{n: v for n, v in zip(order, values) if n in by_name})

    return Model(name=name, dims=dims, params=dict(inputs), data=data, hyper=hyper, forward=forward,
                 backward=backward, reference=ref, kind=kind.name, op=info,
                 backward_runs=rules.OP_BACKWARD_RUNS if backward_runs is None else backward_runs,
                 **common.record_fields(str(name), fields))

