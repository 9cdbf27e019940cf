"""Run one model over generated cases: a covering schedule of corner cases first, then
hypothesis draws, the checker judges, and a failure shrinks to the smallest case that
still fails."""
from __future__ import annotations

import dataclasses
import math
import time
import traceback
import unittest
from collections.abc import Callable, Mapping

from ..check.case import Case
from ..check.stages.compiled import backend_for
from ..kinds.op import with_opcheck
from ..kinds.sharded import WORLD_SIZE

from ..record.errors import RunNote
from ..check import FAIL, NONDIFF, PASS, SKIPPED, CaseResult
from .limits import CaseTimeout, run_case
from ..record.spec import Model
from ..verdict import rules

@dataclasses.dataclass
class ModelRun:
    """What one model's run found, for the table, the JSON report and pytest."""

    model: str
    dtype: str
    device: str
    verdict: str = "pass"          # pass, fail or error
    checked: int = 0               # cases judged (pass or not) before any failure
    nondiff: int = 0               # cases set aside as non-differentiable points
    skipped: int = 0               # cases set aside: a forward or autograd not finite, a sparse tensor
    shrink_steps: int = 0
    worst_autograd: float = 0.0    # worst relative error against autograd
    worst_fd: float = 0.0          # worst relative error against finite differences
    worst_autograd_ratio: float = 0.0   # worst error against autograd over its tolerance (what decided)
    worst_fd_ratio: float = 0.0         # worst distance from finite differences over their allowance
    seconds: float = 0.0
    failure: CaseResult | None = None
    problems: list[str] = dataclasses.field(default_factory=list)
    two_way: bool = False          # no autograd oracle: finite differences alone
    fd_missing: int = 0            # cases checked without finite differences (the forward fails in float64)
    scales: set[float] = dataclasses.field(default_factory=set)        # value scales reached
    sizes: dict[str, set[int]] = dataclasses.field(default_factory=dict)  # sizes reached, per dim
    world_sizes: set[int] = dataclasses.field(default_factory=set)   # a sharded record's world sizes reached
    compared: dict[str, tuple[int, tuple]] = dataclasses.field(default_factory=dict)  # most elements, a shape
    planned: int = 0               # cases the profile asked for (corners and draws)
    budget_cut: bool = False       # the quick profile's time budget stopped the cases early
    seconds_per_case: float = 0.0  # the cases' average time, where the budget was looked at
    notes: dict[str, str] = dataclasses.field(default_factory=dict)   # what holds for the model, by key (record.errors.RunNote)
    aside: dict[str, list] = dataclasses.field(default_factory=dict)  # why cases were set aside: [count, a case]

    def coverage(self) -> dict:
        """What the cases reached: the value scales, and the sizes of every dim."""
        return {"scales": sorted(self.scales), "sizes": {k: sorted(v) for k, v in self.sizes.items()}}


class _OutOfTime(BaseException):
    """The quick profile's time budget is spent: no further case starts.  A BaseException,
    so that hypothesis stops at once instead of treating it as a failure to shrink."""


def _runs_opcheck(profile: str) -> bool:
    """Whether the profile runs ``torch.library.opcheck`` on custom ops whose record leaves it open."""
    from . import strategies
    return bool(strategies.PROFILES.get(profile, {}).get("opcheck"))


class _Failed(Exception):
    def __init__(self, result: CaseResult):
        super().__init__(result.verdict)
        self.result = result


def run_model(model: Model, *, dtype: str | None = None, device: str = "cpu", profile: str = "quick",
              examples: int | None = None, dims: Mapping[str, int] | None = None, seed: int | None = None,
              scale: float | None = None, on_case: Callable[[ModelRun], None] | None = None,
              database=None, hyper: Mapping[str, object] | None = None, case_timeout: float | None = None,
              on_tick: Callable[[ModelRun, str, float], None] | None = None,
              compile: str | None = None, order: int | None = None, fullgraph: bool = False) -> ModelRun:
    """Check ``model`` on generated cases; what is given (dims, hyperparameters, seed,
    scale) stays fixed.

    With every dim and hyperparameter, the seed and the scale given, exactly that one case
    runs.  Otherwise the corner cases of :func:`strategies.corners` come first and
    hypothesis draws the rest of the profile's count.  The nightly profile keeps failures in
    a folder per model, dtype and device under hypothesis's directory database, or under
    ``database``.  A case that runs past ``case_timeout`` seconds is an error and ends the
    run (no shrinking); ``on_tick(run, phase, seconds)`` reports a running case (see
    ``limits.run_case``).  ``compile`` (a backend: ``--compile``) also runs each case under
    torch.compile; the record's ``compile`` field and the profile decide where it is None
    (:func:`..check.stages.compiled.backend_for`); with ``fullgraph`` (``--compile-fullgraph``)
    a graph break there is an error.  ``order`` (``--order``) is the highest derivative
    checked, over the record's ``order``.
    """
    light = model
    if profile != "quick" and _runs_opcheck(profile):   # hypothesis loads with the profiles: not for quick
        model = with_opcheck(model)          # a custom op's registration, unless its record says no
    run = ModelRun(model.name, dtype or model.dtype, device, two_way=model.two_way)
    fixed_hyper = dict(hyper or {})
    start = time.perf_counter()
    seen: dict[tuple, CaseResult] = {}

    tick = None if on_tick is None else (lambda phase, seconds: on_tick(run, phase, seconds))
    budget = rules.QUICK_SECONDS if profile == "quick" and examples is None else None
    drawing = []          # non-empty once hypothesis draws: the budget cuts draws, never the corners
    backend = backend_for(model, profile, compile)
    if backend is not None and case_timeout:     # compiling is the compiler's time, not the model's
        case_timeout += rules.COMPILE_TIMEOUT.get(backend, max(rules.COMPILE_TIMEOUT.values()))

    heavy = _Heavy(model is not light and profile != "quick" or backend is not None)

    def judge(case: Case) -> CaseResult:
        if (order is not None and case.order is None) or (fullgraph and not case.fullgraph):
            case = dataclasses.replace(case, order=case.order if order is None else order,
                                       fullgraph=case.fullgraph or fullgraph)
        key = (tuple(case.dims.items()), repr(case.hyper), case.dtype, case.device, case.seed, case.scale)
        res = seen.get(key)
        if res is None:
            if budget is not None and drawing and run.failure is None and _spent(run, budget, start):
                raise _OutOfTime()
            full = heavy.wanted(case, run.failure is not None)
            if backend is not None and case.compile is None and full:
                case = dataclasses.replace(case, compile=backend)
            try:
                res = seen[key] = run_case(model if full else light, case, timeout=case_timeout, tick=tick)
            except CaseTimeout as e:
                if run.failure is None:           # while shrinking, the failure found first stands
                    run.checked += 1
                    run.failure = e.result
                raise
            _count(run, res)
            if res.ok:
                _lighten(res)       # a passing case's per-element bounds are never read again
            if on_case is not None:
                on_case(run)
        if not res.ok:
            if run.failure is None:
                run.failure = res
            raise _Failed(res)
        return res

    fixed = dict(dims or {})
    why = model.allows({**fixed, **fixed_hyper})
    if why is not None:
        run.problems.append(f"the given dims and hyperparameters do not fit the record: {why}")
        run.verdict = "error"
        return run
    crashed = False
    try:
        if (len(fixed) == len(model.dims) and len(fixed_hyper) == len(model.hyper)
                and seed is not None and scale is not None):
            try:
                judge(Case(model.name, fixed, run.dtype, device, seed, scale, fixed_hyper))
            except _Failed as e:
                run.failure = e.result
        else:
            _search(model, run, judge, profile=profile, examples=examples, fixed=fixed, fixed_hyper=fixed_hyper,
                    seed=seed, scale=scale, database=database, drawing=drawing)
    except CaseTimeout:
        pass                                     # judge() kept it as the failure
    except _OutOfTime:                           # noted below
        if run.checked == 0:
            run.problems.append(f"no case could be judged within the quick profile's time budget: {run.nondiff} "
                                f"non-differentiable, {run.skipped} with a forward or autograd that is not finite")
    except Exception as e:   # hypothesis or the harness itself: reported on this model, the rest go on
        run.problems.append(_crash(e, run))
        crashed = True
    if run.failure is not None:
        # a broken contract, or oracles that disagree (no trustworthy verdict), is an error
        run.verdict = "fail" if run.failure.verdict == FAIL else "error"
        if run.failure.verdict == FAIL:
            _diagnose(model, run.failure, time.perf_counter() - start, tick)
    if run.verdict == "pass" and not crashed:
        empty = [f"{n} (shape {tuple(shape)})" for n, (count, shape) in run.compared.items() if count == 0]
        if empty:
            run.problems.append(f"nothing was compared for {', '.join(empty)}: 0 elements in every case "
                                "(a size 0 in the record's shape, or a dim expression that is always 0?)")
    if run.budget_cut and run.failure is None:
        ran = run.checked + run.nondiff + run.skipped
        run.notes["quick-budget"] = (
            f"the quick profile's time budget ({rules.QUICK_SECONDS:g} s a model) stopped the cases after {ran} of "
            f"{run.planned} (about {run.seconds_per_case:.1f} s a case; the corner cases all ran); "
            f"--examples {run.planned} runs them all")
    if crashed or (run.problems and run.verdict == "pass"):
        run.verdict = "error"
    run.seconds = time.perf_counter() - start
    return run


class _Heavy:
    """Which cases run the costly stages a profile or option adds (torch.compile, a custom
    op's opcheck): the first case of each shape (dims, hyperparameters, dtype), up to
    ``rules.HEAVY_SHAPES`` shapes a model, and every case once the run has failed (shrinking
    must see the failure again).  Both test what a shape decides: the graph torch.compile
    traces, specialises and guards on, and opcheck's fake tensors and traced dispatch; a
    case's values are judged in eager by every case."""

    def __init__(self, on: bool):
        self.on = on
        self.shapes: set[tuple] = set()

    def wanted(self, case: Case, failing: bool) -> bool:
        if not self.on:
            return False
        shape = (tuple(case.dims.items()), repr(case.hyper), case.dtype, case.device)
        if failing:
            return True
        if shape in self.shapes or len(self.shapes) >= rules.HEAVY_SHAPES:
            return False
        self.shapes.add(shape)
        return True


def _spent(run: ModelRun, budget: float, start: float) -> bool:
    """The quick budget is used up: one more case, as long as the cases so far took on
    average, would end past it."""
    ran = max(1, run.checked + run.nondiff + run.skipped)
    elapsed = time.perf_counter() - start
    run.seconds_per_case = elapsed / ran
    if elapsed + run.seconds_per_case <= budget:
        return False
    run.budget_cut = True
    return True


def _lighten(res: CaseResult) -> None:
    """Drop a judged case's per-element bounds (one float64 tensor the size of each
    gradient): the run keeps every result it judged, and at a 4096x4096 weight twenty of
    them would hold 2.7 GB."""
    for c in res.tensors.values():
        c.bound = None


def diagnosis_budget(check_seconds: float) -> float:
    """Seconds the diagnosis of a failure may take after a check that took ``check_seconds``."""
    return max(rules.DIAGNOSE_MIN, rules.DIAGNOSE_SHARE * check_seconds)


def _diagnose(model: Model, res: CaseResult, check_seconds: float = 0.0, tick=None) -> None:
    """The mistake of each failing tensor and the first wrong line of the backward, on
    the shrunk failing case, within :func:`diagnosis_budget`; a problem there is a note,
    never a lost report.  It runs in a worker thread, so that the progress line and the
    heartbeat go on (phase ``diagnosis``)."""
    from ..diagnose import diagnose
    from .limits import run_ticking
    budget = diagnosis_budget(check_seconds)
    deadline = time.perf_counter() + budget
    try:
        found = run_ticking(lambda: diagnose(model, res.case, res.failing,
                                             {n: c.bound for n, c in res.tensors.items()}, deadline=deadline),
                            f"diagnosis (budget {budget:.0f} s)", tick, timeout=rules.DIAGNOSE_OVERRUN * budget)
    except TimeoutError:
        res.location_note = f"no diagnosis: it did not finish within its budget ({rules.DIAGNOSE_OVERRUN * budget:.0f} s)"
        return
    except Exception as e:   # the model's code, run again under a tracer, or the diagnosis itself
        res.location_note = f"no diagnosis: {type(e).__name__}: {e}"
        return
    if found is not None:
        res.diagnosis, res.location, res.location_note = found.mistakes, found.location, found.location_note
        if found.cut:
            res.notes.append(found.cut + f" ({budget:.0f} s)")


def _count(run: ModelRun, res: CaseResult) -> None:
    run.scales.add(res.case.scale)
    for note in res.notes:
        if isinstance(note, RunNote) and note.key not in run.notes:
            run.notes[note.key] = f"{note} (case {res.case.describe()})"
    for k, v in res.case.dims.items():
        run.sizes.setdefault(k, set()).add(v)
    if WORLD_SIZE in res.case.hyper:
        run.world_sizes.add(res.case.hyper[WORLD_SIZE])
    for n, c in res.tensors.items():
        if res.verdict in (PASS, NONDIFF) and " " not in n and not n.startswith("forward"):
            count = math.prod(c.shape)
            if count >= run.compared.get(n, (-1, ()))[0]:
                run.compared[n] = (count, c.shape)
    if run.failure is not None:           # shrinking
        run.shrink_steps += 1
    elif res.verdict == NONDIFF:
        run.nondiff += 1
        _set_aside(run, res)
    elif res.verdict == SKIPPED:
        run.skipped += 1
        _set_aside(run, res)
    else:
        run.checked += 1
        run.worst_autograd = max(run.worst_autograd, res.autograd_rel_err)
        run.worst_fd = max(run.worst_fd, res.fd_rel_err)
        run.fd_missing += not res.fd_ran
        run.worst_autograd_ratio = max(run.worst_autograd_ratio, res.autograd_ratio)
        run.worst_fd_ratio = max(run.worst_fd_ratio, res.fd_ratio)


#: Why a case is set aside, by the check's note (see ``check``): the reason, and what to do.
ASIDE_REASONS = (
    ("the forward's output is not finite", "a forward that is NaN or Inf at the drawn values",
     "keep the draws inside its domain with the record's domain= or a factory, or, where it overflows at "
     "large scales only, lower its scale_range"),
    ("autograd's gradient is not finite", "an autograd gradient that is NaN or Inf (an overflow in the dtype)",
     "lower the record's scales, or check in a wider dtype"),
    ("a kink or tie", "a kink or tie, where the gradient is a matter of convention", ""),
    ("which the harness does not check here", "a tensor of a layout the harness does not check (sparse)",
     "densify it (.to_dense()), or, for a sparse COO input, hold the op with op_model"),
)


#: a case set aside for a tensor of a layout the harness does not check: the reason and the advice
_LAYOUT_REASON, _LAYOUT_ADVICE = next(entry[1:] for entry in ASIDE_REASONS if entry[0].startswith("which the harness"))


def _set_aside(run: ModelRun, res: CaseResult) -> None:
    text = " ".join(res.notes) if res.verdict == SKIPPED else "a kink or tie"
    reason = next((r for key, r, _ in ASIDE_REASONS if key in text), res.verdict)
    entry = run.aside.setdefault(reason, [0, res.case.describe(), []])
    entry[0] += 1
    if res.case.scale not in entry[2]:
        entry[2].append(res.case.scale)


def _search(model: Model, run: ModelRun, judge, *, profile, examples, fixed, fixed_hyper, seed, scale,
            database, drawing: list) -> None:
    # hypothesis loads only here: reproducing one given case starts faster without it
    import hypothesis
    from hypothesis import Phase, given
    from hypothesis import errors as hyp_errors

    from . import strategies

    chosen = strategies.profile_settings(profile, examples=examples)
    total = chosen.max_examples
    if chosen.database is not None:     # the nightly profile
        chosen = hypothesis.settings(chosen, database=strategies.database_for(
            database or chosen.database, model.name, run.dtype, run.device))
    strategy = strategies.cases(model, dtype=run.dtype, device=run.device, fixed_dims=fixed, seed=seed, scale=scale,
                                fixed_hyper=fixed_hyper)
    where = ", the rest filtered out by the record's where" if model.where is not None else ""

    def unjudged() -> str:
        layout = run.aside.get(_LAYOUT_REASON, [0])[0]     # a sparse tensor: its reason, and what is supported
        return (f"no case could be judged: {run.nondiff} non-differentiable, {run.skipped - layout} with a forward or "
                "autograd that is not finite" + (f", {layout} with {_LAYOUT_REASON}: {_LAYOUT_ADVICE}" if layout else "")
                + where)

    def prop(case: Case) -> None:
        res = judge(case)
        hypothesis.target(min(res.score, rules.HUGE), label="error over tolerance")
        hypothesis.event("scale", f"1e{round(math.log10(case.scale)):+d}")
        hypothesis.assume(res.verdict not in (NONDIFF, SKIPPED))

    def search(settings: hypothesis.settings) -> None:
        try:
            settings(given(strategy)(prop))()
        except _Failed as e:
            run.failure = e.result                     # the shrunk case
        except hyp_errors.Unsatisfiable:
            run.problems.append(unjudged())

    if chosen.database is not None:               # a failure saved by an earlier run replays first
        try:
            search(hypothesis.settings(chosen, phases=[Phase.reuse, Phase.shrink]))
        except unittest.SkipTest:                # nothing was saved: hypothesis ran no case
            pass
        if run.failure is not None:
            return

    corners = strategies.corners(model, fixed_dims=fixed, fixed_hyper=fixed_hyper, seed=seed, scale=scale)[:total]
    run.planned = total
    for dims, hyper, s, sc in corners:
        case = Case(model.name, dims, run.dtype, run.device, s, sc, hyper)
        try:
            judge(case)
        except _Failed as e:
            run.failure = _shrink(model, e.result, judge, fixed, seed, scale)
            return
    left = total - len(corners)
    if left > 0:
        drawing.append(True)
        search(hypothesis.settings(chosen, max_examples=left))

    elif run.checked == 0 and not run.problems:
        run.problems.append(unjudged())


def shrink_budget(case_seconds: float) -> float:
    """Seconds a shrink may take after a failing case that took ``case_seconds``."""
    return max(rules.SHRINK_SECONDS, min(rules.SHRINK_CAP, rules.SHRINK_CASES * case_seconds))


def _shrink(model: Model, failure: CaseResult, judge, fixed, seed, scale) -> CaseResult:
    """Steps toward a smaller failing case: first the corners with every free dim at 1,
    then at 2 (within its bounds), then greedy steps: the scale toward 1, each free dim
    toward its low end (to it, halfway, one less), the seed toward 0.  It stops where no
    step is left (the dims at their low ends, the scale 1, the seed 0), or at the budget of
    ``rules.SHRINK_STEPS`` cases and :func:`shrink_budget` seconds."""
    steps = 0
    spent = _shrink_clock(shrink_budget(failure.seconds))
    for case in _small_corners(model, failure.case, fixed):
        steps += 1
        try:
            judge(case)
        except _Failed as e:
            failure = e.result
            break
        if spent():
            return failure
    improved = True
    while improved and steps < rules.SHRINK_STEPS:
        improved = False
        for case in _simpler(model, failure.case, fixed, seed, scale):
            steps += 1
            try:
                judge(case)
            except _Failed as e:
                failure, improved = e.result, True
                break
            if steps >= rules.SHRINK_STEPS or spent():
                return failure
        if spent():
            break
    return failure


def _shrink_clock(budget: float):
    """A test that says whether ``budget`` seconds of this process's CPU time have gone, per
    torch intra-op thread (or ``rules.SHRINK_WALL`` times as many seconds of the wall clock):
    see ``rules.SHRINK_WALL``."""
    import torch
    # N threads spend up to N CPU seconds a second on the same steps (an OpenMP thread spins
    # while it waits): counted per thread, the budget takes the same steps at any thread count
    cpu = time.process_time() + budget * max(1, torch.get_num_threads())
    wall = time.perf_counter() + rules.SHRINK_WALL * budget
    return lambda: time.process_time() > cpu or time.perf_counter() > wall


def _small_corners(model: Model, case: Case, fixed):
    """The failing case with every free dim at 1, then at 2, where the record allows that
    (a dim whose range starts higher takes its low end, one that ends lower its high end),
    each only where it is smaller than the failing case; the rest of the case stays."""
    from ..record import dimexpr
    order = dimexpr.order({k: v.reads() for k, v in model.dims.items()})
    found = []
    for size in (1, 2):
        got: dict[str, object] = dict(case.hyper)
        for k in order:
            if k in fixed:
                got[k] = case.dims[k]
                continue
            try:
                low, high = model.dims[k].bounds(got)
            except Exception:     # a bound the record cannot give here: no such corner
                break
            got[k] = min(max(size, low), high, case.dims[k])
        else:
            dims = {k: got[k] for k in case.dims}
        if len(got) < len(case.hyper) + len(case.dims):
            continue
        if dims != dict(case.dims) and dims not in found and model.allows({**dims, **case.hyper}) is None:
            found.append(dims)
            yield dataclasses.replace(case, dims=dims)


def _simpler(model: Model, case: Case, fixed, seed, scale):
    if scale is None and case.scale != 1.0:
        yield dataclasses.replace(case, scale=1.0)
    for k, v in case.dims.items():
        if k in fixed:
            continue
        low = model.dims[k].bounds(case.values)[0]
        for smaller in dict.fromkeys((low, (low + v) // 2, v - 1)):
            dims = {**case.dims, k: smaller}
            if low <= smaller < v and model.allows({**dims, **case.hyper}) is None:
                yield dataclasses.replace(case, dims=dims)
    if seed is None and case.seed != 0:
        yield dataclasses.replace(case, seed=0)


def _crash(e: Exception, run: ModelRun) -> str:
    from hypothesis import errors as hyp_errors

    if isinstance(e, hyp_errors.Flaky):
        what = ("flaky: a case failed once and passed when hypothesis ran it again "
                "(does the backward or forward depend on state or on chance?)")
        if run.failure is not None:
            what += f"; the failing run: {run.failure.case.describe()}"
        return what
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" (at {frame.filename}:{frame.lineno})" if frame else ""
    return f"the run stopped: {type(e).__name__}: {e}{where}"
