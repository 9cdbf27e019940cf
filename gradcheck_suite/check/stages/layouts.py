"""The backward as training calls it: the same values in other memory layouts.

The case generator hands the backward fresh contiguous tensors; training does not.  The
upstream gradient of ``y.t()`` is a transposed view, that of ``y.sum()`` one value
expanded (stride 0), that of ``y[:, ::2]`` a strided slice; inputs come transposed
(``w.t()``), sliced, or channels-last.  A backward that reads storage as contiguous (a raw
kernel, ``as_strided``, numpy's memory order), calls ``.view`` on ``g`` or writes into it
is right on the generator's tensors, and wrong or raising in training.

:func:`run`, the stage, calls :func:`problem` for a case that otherwise passes.
:func:`problem` runs a judged case's forward and backward again on the same values in
other layouts and compares them with the case's own, within the bound the checker already
computed for each element.  Where every call agrees it costs one forward and one backward
(every tensor in another layout at once: reversed strides from 2 dims up, a strided slice
in 1-D, channels-last for 4-D inputs), and two backwards more where ``g`` has more than one
element (``g`` one value expanded, 4-D inputs permuted meanwhile, and the contiguous twin
of that ``g``).  The first call keeps every storage at least the tensor's size, so a kernel
that reads storage as contiguous reads wrong values there, not past the end of a stride-0
buffer.  Only where a call differs or raises do the layouts run one at a time, to name the
first that shows it.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch

from ...record.blame import ours, where
from ...record.spec import Tensors
from ...verdict import rules
from ...verdict.tolerance import bound, unravel
from ..case import describe, float64, join, split
from ...record.errors import ContractError, FactoryError
from ..floor import widened
from ..state import CaseState
from . import ranks

_PHRASE = {
    "transposed": "a transposed view",
    "permuted": "a permuted view",
    "strided": "a strided slice",
    "channels-last": "a channels-last view",
    "expanded": "an expanded view of one value",
}
_CHANNELS_LAST = (0, 2, 3, 1)     # NCHW stored as NHWC
READS = "does the {who} read storage as contiguous?"
WRITES = "does the backward write into g, or depend on its strides?"


def run(state: CaseState) -> None:
    """The backward as training calls it (:func:`problem`), for a case that otherwise
    passes.  Where a layout crosses the bounds, the bounds with the computation's rounding
    (:func:`..floor.widened`, where they are not the ones already used) decide; a two-way
    check has no others."""
    model, res = state.model, state.result
    if model.needs_contiguous:
        res.notes.append("layouts not checked: the record says needs_contiguous (the backward takes "
                         "contiguous tensors only)")
        return
    args = state.p, state.d, state.g, state.grads
    bounds = {n: res.tensors[n].bound for n in model.differentiable if n in res.tensors}
    with torch.no_grad():
        text = state.call("backward in training layouts", problem, model, *args, bounds, state.out)
    wide = widened(state) if text and not model.two_way else None
    if wide is not None:
        with torch.no_grad():
            text = state.call("backward in training layouts", problem, model, *args, wide, state.out)
    if text and getattr(model, "sharded", None) is not None:
        text = ranks.in_ranks(state, text)       # which rank's shard the element is in
    if text:
        raise state.error(text)


def problem(model, p: Tensors, d: Tensors, g: torch.Tensor, grads: Mapping[str, torch.Tensor],
            bounds: Mapping[str, torch.Tensor], out: torch.Tensor | None = None) -> str | None:
    """None, or the one-line error naming the layout and the tensor.

    ``model`` is a :class:`~gradcheck_suite.check.case.Bound`; ``p``, ``d``, ``g`` the case's
    tensors (left as they are: every layout is a new tensor), ``grads`` its manual
    gradients and ``bounds`` their per-element allowed error.  ``out``, the case's forward
    output (joined, as ``Bound.forward`` returns it), saves a forward call where given.
    Exceptions from the model's code are reported; the harness's own propagate.
    """
    if getattr(model, "needs_contiguous", False):
        return None
    with torch.no_grad():
        return _Layouts(model, p, d, g, grads, bounds, out).problem()


@dataclasses.dataclass(frozen=True)
class _Variant:
    role: str                   # "g" (key: the output's index), "p" or "d" (key: the tensor's name)
    key: object
    layout: str                 # a key of _PHRASE

    def describe(self, several: bool) -> str:
        who = (f"the upstream gradient of output {self.key}" if several else "the upstream gradient") \
            if self.role == "g" else str(self.key)
        return f"{who} is {_PHRASE[self.layout]}"


_NONE = object()     # no cache yet (a forward's cache may well be None)


class _Failed(Exception):
    """A call showed the problem; its message names the layout."""


class _Layouts:
    def __init__(self, model, p, d, g, grads, bounds, out):
        self.model, self.p, self.d, self.grads = model, p, d, grads
        self.bounds = {n: bounds[n] if n in bounds else bound(t, _dtype(t)) for n, t in grads.items()}
        self.record = getattr(model, "model", model)       # a Bound's record, or the record itself
        self.extra = tuple(getattr(model, "extra", ()))
        self.shapes = getattr(model, "layout", None)
        self.parts = list(split(g, self.shapes)) if self.shapes else [g]
        self.out0 = out
        self.fresh = None           # (output, cache) of the forward on the case's own tensors
        self.cache = _NONE          # the cache of the last forward that agreed
        self.twin = None            # the backward's gradients for g one value everywhere, contiguous

    # -- the plan ---------------------------------------------------------------------

    def problem(self) -> str | None:
        first, second, expanded = [], [], []
        for k, t in enumerate(self.parts):
            if t is None:       # an output that is not floating point: no upstream gradient
                continue
            names = _singles(tuple(t.shape), channels_last=False)
            if names:
                first.append(_Variant("g", k, names[0]))
            if t.numel() > 1:
                expanded.append(_Variant("g", k, "expanded"))
        for role, group in (("p", self.p), ("d", self.d)):
            for n, t in group.items():
                names = _singles(tuple(t.shape)) if isinstance(t, torch.Tensor) else []
                if not names:
                    continue
                first.append(_Variant(role, n, names[0]))
                if len(names) > 1:
                    second.append(_Variant(role, n, names[1]))    # 4-D: channels-last first, then permuted
        try:
            if first:
                self._call(first)
            if expanded or second:
                self._expanded(expanded + second)
        except _Failed as e:
            return self._name(e, first if getattr(e, "call", 1) == 1 else expanded + second)
        return None

    def _call(self, variants: list[_Variant], call: int = 1) -> None:
        """The forward (where an input is in another layout) and the backward, on the
        case's values with ``variants`` applied, against the case's results."""
        desc = _describe(variants, self.shapes)
        inputs = [v for v in variants if v.role != "g"]
        try:
            if inputs:
                self._reference_output()
                P, D = self._inputs(inputs)
                out, cache = self._forward(P, D, desc)
                self._same_output(out, desc)
            else:
                P, D, cache = self.p, self.d, self._fresh()[1]
            gs = self._upstream({v.key: v.layout for v in variants if v.role == "g"})
            got = self._backward(P, D, cache, gs, desc)
            hint = READS.format(who="backward")
            for n in self.grads:
                self._same(f"the gradient of {n}", got[n], self.grads[n], self.bounds[n], desc, hint)
        except _Failed as e:
            e.call = call
            raise
        self.cache = cache

    def _expanded(self, variants: list[_Variant]) -> None:
        """The backward with ``g`` a single value expanded (stride 0), against its
        contiguous twin (the same values), 4-D inputs permuted meanwhile."""
        desc = _describe(variants, self.shapes)
        cache = self.cache if self.cache is not _NONE else self._fresh()[1]
        spread = {v.key for v in variants if v.role == "g"}
        try:
            P, D = self._inputs([v for v in variants if v.role != "g"])
            if not spread:
                got = self._backward(P, D, cache, self._upstream({}), desc)
                for n in self.grads:
                    self._same(f"the gradient of {n}", got[n], self.grads[n], self.bounds[n], desc,
                               READS.format(who="backward"))
                return
            twin = self._twin(cache)
            layouts = {**self._filled(), **{k: "expanded" for k in spread}}   # the twin's values everywhere
            got = self._backward(P, D, cache, self._upstream(layouts), desc)
            for n in self.grads:
                self._same(f"the gradient of {n}", got[n], twin[n], lambda: self._twin_bound(n, twin[n]), desc,
                           WRITES)
        except _Failed as e:
            e.call = 2
            raise

    def _twin(self, cache) -> Mapping[str, torch.Tensor]:
        if self.twin is None:
            gs = self._upstream(self._filled())
            self.twin = self._backward(self.p, self.d, cache, gs, "the upstream gradient is one value everywhere "
                                                                  "(contiguous)")
        return self.twin

    def _filled(self) -> dict[int, str]:
        return {k: "filled" for k, t in enumerate(self.parts) if t is not None and t.numel() > 1}

    def _twin_bound(self, n: str, twin: torch.Tensor) -> torch.Tensor:
        """The twin's own tolerance, and at least the rounding the case allowed (its bound's least element)."""
        b = self.bounds[n]
        least = float(b.min()) if b.numel() else 0.0
        return bound(twin, _dtype(twin)).add_(least)

    # -- naming the layout ------------------------------------------------------------

    def _name(self, failed: _Failed, variants: list[_Variant]) -> str | None:
        """The first layout that shows the problem alone; the combined call's message where
        none does; None where the case's own layout no longer reproduces the case."""
        if not self._reproducible():
            return None
        if len(variants) == 1:
            return str(failed)
        for v in variants:
            try:
                if v.layout == "expanded":
                    self._expanded([v])
                else:
                    self.cache = _NONE
                    self._call([v])
            except _Failed as e:
                return str(e)
        return str(failed)

    def _reproducible(self) -> bool:
        """The forward and backward on the case's own layout still give the case's results:
        only then is a difference a matter of layout."""
        try:
            out, cache = self._fresh()
            if self.out0 is not None and out is not self.out0:
                self._same_output(out, "the tensors are the case's own")
            got = self._backward(self.p, self.d, cache, self._upstream({}), "the tensors are the case's own")
            for n in self.grads:
                self._same(n, got[n], self.grads[n], self.bounds[n], "", "")
        except _Failed:
            return False
        return True

    # -- calls ------------------------------------------------------------------------

    def _fresh(self):
        if self.fresh is None:
            self.fresh = self._forward(self.p, self.d, "the tensors are the case's own")
            if self.out0 is None:
                self.out0 = self.fresh[0]
        return self.fresh

    def _inputs(self, variants: list[_Variant]) -> tuple[Tensors, Tensors]:
        P, D = Tensors(self.p), Tensors(self.d)
        for v in variants:
            group = P if v.role == "p" else D
            group[v.key] = _make(group[v.key], v.layout)
        return P, D

    def _upstream(self, layouts: Mapping[int, str]):
        """The upstream gradient for the backward: each output's part in its layout, the
        others as fresh copies of the case's (a tuple where the forward returns one)."""
        parts = []
        for k, t in enumerate(self.parts):
            layout = layouts.get(k)
            if t is None:
                parts.append(None)
            elif layout in ("expanded", "filled"):
                c = _one_value(t)
                parts.append(torch.full((), c, dtype=t.dtype, device=t.device).expand(t.shape) if layout == "expanded"
                             else torch.full(t.shape, c, dtype=t.dtype, device=t.device))
            elif layout is None:
                parts.append(t.clone())
            else:
                parts.append(_make(t, layout))
        return tuple(parts) if self.shapes else parts[0]

    def _forward(self, P, D, desc: str):
        returned = self._user("forward", desc, self.record.forward, P, D, *self.extra)
        if not (isinstance(returned, tuple) and len(returned) == 2):
            raise _Failed(f"forward returned {type(returned).__name__}, not (output, cache), when {desc}")
        try:
            flat, _ = join(returned[0], "forward")
        except ContractError as e:
            raise _Failed(f"{e} when {desc}") from None
        if self.out0 is not None and (not isinstance(flat, torch.Tensor) or flat.shape != self.out0.shape):
            raise _Failed(f"forward returned {describe(flat)} when {desc}, {describe(self.out0)} otherwise")
        return flat, returned[1]

    def _backward(self, P, D, cache, gs, desc: str) -> Mapping[str, torch.Tensor]:
        got = self._user("backward", desc, self.record.backward, P, D, cache, gs, *self.extra)
        if not isinstance(got, Mapping):
            raise _Failed(f"backward returned {type(got).__name__}, not a dict of gradients, when {desc}")
        for n, want in self.grads.items():
            t = got.get(n)
            if not isinstance(t, torch.Tensor) or t.shape != want.shape:
                raise _Failed(f"backward returned {describe(t)} for {n} when {desc}, {describe(want)} otherwise")
        return got

    def _user(self, who: str, desc: str, fn, *args):
        try:
            with torch.no_grad():
                return fn(*args)
        except (ContractError, FactoryError) as e:
            raise _Failed(f"{e} when {desc}") from None
        except Exception as e:
            if ours(e):
                raise
            lines = str(e).strip().splitlines()
            text = f": {lines[0].rstrip('.')}" if lines else ""
            raise _Failed(f"{who} raised {type(e).__name__}{text} when {desc}{where(e)}") from None

    # -- comparisons ------------------------------------------------------------------

    def _same(self, what: str, new: torch.Tensor, ref: torch.Tensor, allowed, desc: str,
              hint: str) -> None:
        worst = _beyond(new, ref, allowed)
        if worst is not None:
            err, index = worst
            raise _Failed(f"{what} changes when {desc} (max error {err:.1e}{_at(index)}): {hint}")

    def _same_output(self, out: torch.Tensor, desc: str) -> None:
        """The forward's output within the dtype's tolerance of the case's; outside float64
        the forward's own rounding (its distance from a float64 forward) is allowed
        too, measured only where the tolerance alone is crossed."""
        ref, dtype = self._reference_output(), _dtype(out)
        worst = _beyond(out, ref, lambda: bound(ref, dtype))
        if worst is not None and dtype != "float64":
            rounding = self._output_rounding(ref)
            if rounding is not None:
                allowed = bound(ref, dtype, rounding)
                worst = _beyond(out, ref, allowed)
        if worst is None:
            return
        err, flat_index = worst
        label, index = "the forward's output", list(flat_index)
        if self.shapes:
            i, start = flat_index[0], 0
            for k, shape in enumerate(self.shapes):
                if shape is None:
                    continue
                if i < start + math.prod(shape):
                    label, index = f"the forward's output {k}", list(unravel(i - start, shape))
                    break
                start += math.prod(shape)
        raise _Failed(f"{label} changes when {desc} (max error {err:.1e}{_at(index)}): "
                      + READS.format(who="forward"))

    def _reference_output(self) -> torch.Tensor:
        if self.out0 is None:
            self._fresh()
        return self.out0

    def _output_rounding(self, ref: torch.Tensor) -> torch.Tensor | None:
        try:
            with torch.no_grad():
                out64, _ = join(self.record.forward(float64(self.p), float64(self.d), *self.extra)[0], "forward")
            return ref.detach().to(torch.float64) - out64.to(ref.device, torch.float64)
        except Exception:
            return None


# -- layouts --------------------------------------------------------------------------

def _singles(shape: tuple[int, ...], channels_last: bool = True) -> list[str]:
    """The layouts of a tensor of ``shape`` that differ from the contiguous one: channels-last
    (4-D inputs), reversed strides (2 dims or more), else a strided slice (a twice-larger
    buffer costs a copy of its own in every matmul, and reversed strides already show what
    it would: storage read as contiguous, ``.view`` on a view)."""
    if math.prod(shape) <= 1:
        return []
    names = []
    if channels_last and len(shape) == 4 and not _trivial(shape, _CHANNELS_LAST):
        names.append("channels-last")
    if len(shape) >= 2 and not _trivial(shape, tuple(reversed(range(len(shape))))):
        names.append("transposed" if len(shape) == 2 else "permuted")
    return names or ["strided"]


def _trivial(shape: tuple[int, ...], order: tuple[int, ...]) -> bool:
    """Storing ``shape`` in the order of ``permute(order)`` leaves its layout as it is:
    the dims larger than 1 keep their order."""
    big = [i for i in order if shape[i] > 1]
    return big == sorted(big)


def _make(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t``'s values in ``layout``: a new tensor, with ``t``'s shape."""
    n = t.dim()
    if layout == "channels-last":
        return _stored(t, _CHANNELS_LAST, False)
    reverse = tuple(reversed(range(n)))
    if layout in ("transposed", "permuted"):
        return _stored(t, reverse, False)
    if layout == "strided":
        return _stored(t, tuple(range(n)), True)
    raise ValueError(f"no layout {layout!r}")


def _stored(t: torch.Tensor, order: tuple[int, ...], spaced: bool) -> torch.Tensor:
    """``t``'s values, with ``t``'s shape, stored in the order of ``t.permute(order)``;
    with ``spaced``, at every other element of a twice-larger buffer whose other elements
    repeat them (a backward that reads the storage as contiguous reads values of the wrong
    places, all within the tensor's own domain: valid indices stay valid)."""
    strides, step = [0] * t.dim(), 2 if spaced else 1
    for i in reversed(order):
        strides[i] = step
        step *= t.shape[i]
    if not spaced:
        return torch.empty_strided(t.shape, strides, dtype=t.dtype, device=t.device).copy_(t)
    buf = torch.empty(2 * t.numel(), dtype=t.dtype, device=t.device)
    buf.as_strided(t.shape, strides, 1).copy_(t)
    return buf.as_strided(t.shape, strides, 0).copy_(t)


def _one_value(t: torch.Tensor) -> float:
    """One value of ``t``'s size: its root mean square."""
    rms = float(t.detach().to(torch.float64).pow(2).mean().sqrt()) if t.numel() else 1.0
    return rms if math.isfinite(rms) and rms > 0 else rules.LAYOUT_FILL


def _describe(variants: list[_Variant], shapes) -> str:
    several = shapes is not None
    texts = [v.describe(several) for v in variants]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]


# -- comparison -----------------------------------------------------------------------

def _beyond(new: torch.Tensor, ref: torch.Tensor, allowed) -> tuple[float, tuple[int, ...]] | None:
    """The largest error among the elements of ``new`` beyond ``allowed`` of ``ref``
    (NaN where ``ref`` is not NaN counts), and its index; None where there is none.
    ``allowed``: a tensor, or a function that makes it (only where ``new`` and ``ref``
    differ at all)."""
    if new.dtype == ref.dtype and new.device == ref.device and torch.equal(new, ref):
        return None
    if callable(allowed):
        allowed = allowed()
    allowed = allowed.to("cpu", torch.float64)
    a = new.detach().to("cpu", torch.float64)
    r = ref.detach().to("cpu", torch.float64)
    if float(torch.sub(a, r).abs_().sub_(allowed).max()) <= 0:      # a NaN anywhere makes the max NaN
        return None
    err = torch.sub(a, r).abs_()
    bad = ~(err <= allowed) & ~((a == r) | (a.isnan() & r.isnan()))      # the same Inf, or NaN in both, agree
    if not bool(bad.any()):
        return None
    score = torch.where(bad, err.nan_to_num(float("inf"), float("inf"), float("inf")), -1.0).reshape(-1)
    i = int(score.argmax())
    return float(err.reshape(-1)[i]), unravel(i, tuple(err.shape))


def _at(index) -> str:
    return f" at {list(index)}" if len(index) else ""


def _dtype(t: torch.Tensor) -> str:
    name = str(t.dtype).removeprefix("torch.")
    return name if name in rules.TOLERANCES else "float32"


