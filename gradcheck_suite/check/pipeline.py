"""One case, through the list of stages a check runs, to one verdict.

The verdicts, and what each means, are tabled in :mod:`.result` (``PASS``, ``FAIL``,
``DISAGREE``, ``NONDIFF``, ``SKIPPED``, ``ERROR``); the one map from findings to a verdict is
:func:`.result.decide`.

:func:`check_case` builds the case's :class:`~.state.CaseState` and runs ``STAGES`` in
order: each entry names a stage, its function, and when it applies (a test of the state:
the record's fields, or the verdict so far).  A stage ends the case by raising
:class:`~.state.Stop` (an error, a forward that fails against its reference or is not
finite, a case autograd alone has judged); no numerics live here.

To add a stage: write ``check/stages/NAME.py`` with one function
``run(state: CaseState) -> None`` (it reads what earlier stages left on the state, and
records on ``state.result``; a field it adds for later stages goes on ``CaseState``), add
one line ``Stage("name", NAME.run, when)`` to ``STAGES`` at its place in the order, and
``NAME`` to the import of ``.stages`` above it.  Its tuned numbers go to the check's section
of ``verdict/rules.py`` and ``docs/rules.md``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from ..record.errors import Unsupported
from ..record.errors import RunNote
from ..record.spec import Model
from .case import Bound, Case
from .result import NONDIFF, PASS, SKIPPED, CaseResult, settle_deferred
from .stages import (autograd, backward, batched, compiled, contract, double_backward, fd_only, finite_differences,
                     forward, forward_mode, layouts, not_finite, ranks, reference, repeatable, repeated, surrogate,
                     unused_outputs)
from .state import CaseState, Stop, internal


class Stage(NamedTuple):
    name: str
    run: Callable[[CaseState], None]
    when: Callable[[CaseState], bool] = lambda state: True


def _has_reference(s: CaseState) -> bool:
    return s.model.reference is not None


def _two_way(s: CaseState) -> bool:
    """No autograd oracle (numpy code without a reference): finite differences alone."""
    return s.model.two_way


def _three_way(s: CaseState) -> bool:
    """The manual gradient, autograd and finite differences."""
    return not s.model.two_way


def _surrogate(s: CaseState) -> bool:
    """The reference defines the gradient: autograd alone judges it."""
    return not s.model.two_way and s.model.surrogate


def _derivative(s: CaseState) -> bool:
    """The gradient is the forward's derivative: finite differences judge it too."""
    return not s.model.two_way and not s.model.surrogate


def _passes(s: CaseState) -> bool:
    return s.result.verdict in (PASS, NONDIFF)


def _unused(s: CaseState) -> bool:
    """A shipped op with several floating-point outputs, whose first derivative passed."""
    return s.result.verdict == PASS and unused_outputs.applies(s)


def _batched(s: CaseState) -> bool:
    """A shipped op (op_model) that passes, unless the record opts out (``batched=False``)."""
    return s.model.op is not None and s.model.batched and _passes(s)


def _double(s: CaseState) -> bool:
    """Opted in (order 2 or more), and the first derivative passed (its verdict, not a point
    set aside); not with a sparse COO input (the forward stage notes it)."""
    return (double_backward.order_of(s) >= 2 and _derivative(s) and s.result.verdict == PASS
            and not getattr(s.model.h, "sparse", None))


def _forward_mode(s: CaseState) -> bool:
    """An op record (where a Function may define ``jvp``) whose case passes."""
    return forward_mode.applies(s) and _derivative(s) and s.result.verdict == PASS


STAGES: tuple[Stage, ...] = (
    Stage("forward", forward.run),
    Stage("reference", reference.run, _has_reference),
    Stage("backward", backward.run),
    Stage("contract", contract.run),
    Stage("repeated calls", repeated.run),
    Stage("autograd", autograd.run, _three_way),
    Stage("repeatable", repeatable.run),
    Stage("autograd not finite", not_finite.run, _three_way),
    Stage("finite differences alone", fd_only.run, _two_way),
    Stage("surrogate", surrogate.run, _surrogate),
    Stage("finite differences", finite_differences.run, _derivative),
    Stage("ranks", ranks.run, ranks.applies),
    Stage("layouts", layouts.run, _passes),
    Stage("unused outputs", unused_outputs.run, _unused),
    Stage("compiled", compiled.run, compiled.wanted),
    Stage("batched", batched.run, _batched),
    Stage("double backward", double_backward.run, _double),
    Stage("forward mode", forward_mode.run, _forward_mode),
)


#: Stages a complex case (complex64, complex128) leaves out, and why: it is checked in the real
#: view (``case.Bound``), and these call the op on the case's tensors themselves, or lay out
#: their memory, where a real view is not the user's tensor.  The run says so once, in a note;
#: the values are judged by the stages before them.
REAL_ONLY = {
    "layouts": "its variants transpose and slice each tensor's memory, which the real view of a complex tensor "
               "does not show as the user's tensor",
    "compiled": "torch.compile of complex code is not checked here",
    "batched": "vmap over the op runs it on the case's tensors itself, outside the real view",
    "forward mode": "the jvp's tangents are checked on real tensors only",
}


def _left_out(state: CaseState, stage: Stage) -> bool:
    """A stage a complex case leaves out (``REAL_ONLY``), with a note for the run."""
    if not state.model.views or stage.name not in REAL_ONLY:
        return False
    if stage.name == "forward mode" and not _defines_jvp(state):
        return True          # nothing to leave out, and nothing said (as for a real case)
    state.result.notes.append(RunNote(f"{state.case.dtype}: the {stage.name} stage is not run on complex tensors: "
                                      f"{REAL_ONLY[stage.name]}", key=f"complex {stage.name}"))
    return True


def _real_view_note(state: CaseState) -> None:
    """How a complex case's elements are indexed in the report: in the real view."""
    if state.model.views:
        names = ", ".join(sorted(state.model.views))
        state.result.notes.append(RunNote(
            f"{state.case.dtype}: {names} {'is' if len(state.model.views) == 1 else 'are'} compared in the real view "
            "(torch.view_as_real), shapes (..., 2): an element's last index is 0 for its real part, 1 for its "
            "imaginary part", key="complex real view"))


def _defines_jvp(state: CaseState) -> bool:
    """The record gives a ``jvp``, or the op runs a Function with its own."""
    model = state.model
    if getattr(model, "jvp", None) is not None:
        return True
    try:
        return bool(forward_mode.functions_with_jvp(model.op, model.user(state.p), model.user(state.d), model.h))
    except Exception:
        return False


def check_case(model: Model, case: Case, res: CaseResult | None = None) -> CaseResult:
    """Judge one case; ``res``, when given, is filled in (another thread may watch its phase)."""
    res = CaseResult(model.name, case) if res is None else res
    start = time.perf_counter()
    try:
        state = CaseState(Bound(model, case), case, res)   # hyperparameters passed on, a tuple of outputs joined
        for stage in STAGES:
            if stage.when(state) and not _left_out(state, stage):
                stage.run(state)
        _real_view_note(state)
    except Stop:
        _real_view_note(state)
    except Unsupported as e:      # torch accepts it, the harness does not check it: set aside, with why
        res.verdict = SKIPPED
        res.notes.append(str(e))
    except Exception as e:  # the harness itself, on this model's case: never read as the user's
        internal(res, "checking the case", e)
    settle_deferred(res)
    res.seconds = time.perf_counter() - start
    return res
