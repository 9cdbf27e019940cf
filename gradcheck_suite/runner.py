"""Run one model over generated cases: hypothesis draws, the checker judges, a failure
shrinks to the smallest case that still fails."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

from .case import Case
from .check import FAIL, NONDIFF, SKIPPED, CaseResult
from .limits import CaseTimeout, run_case
from .spec import Model


@dataclasses.dataclass
class ModelRun:
    """What one model's run found, for the table, the JSON report and pytest."""

    model: str
    dtype: str
    device: str
    verdict: str = "pass"          # pass, fail or error
    checked: int = 0               # cases judged (pass or not) before any failure
    nondiff: int = 0               # cases set aside as non-differentiable points
    skipped: int = 0               # cases set aside because the forward was not finite
    shrink_steps: int = 0
    worst_autograd: float = 0.0    # worst relative error against autograd
    worst_fd: float = 0.0          # worst relative error against finite differences
    seconds: float = 0.0
    failure: CaseResult | None = None
    problems: list[str] = dataclasses.field(default_factory=list)


class _Failed(Exception):
    def __init__(self, result: CaseResult):
        super().__init__(result.verdict)
        self.result = result


def run_model(model: Model, *, dtype: str | None = None, device: str = "cpu", profile: str = "quick",
              examples: int | None = None, dims: Mapping[str, int] | None = None, seed: int | None = None,
              scale: float | None = None, on_case: Callable[[ModelRun], None] | None = None,
              case_timeout: float | None = None,
              on_tick: Callable[[ModelRun, str, float], None] | None = None) -> ModelRun:
    """Check ``model`` on generated cases; what is given (dims, seed, scale) stays fixed.

    With every dim, the seed and the scale given, exactly that one case runs.  A case
    that runs past ``case_timeout`` seconds is an error and ends the run (no shrinking);
    ``on_tick(run, phase, seconds)`` reports a running case (see ``limits.run_case``).
    """
    run = ModelRun(model.name, dtype or model.dtype, device)
    start = time.perf_counter()

    tick = None if on_tick is None else (lambda phase, seconds: on_tick(run, phase, seconds))

    def judge(case: Case) -> None:
        try:
            res = run_case(model, case, timeout=case_timeout, tick=tick)
        except CaseTimeout as e:
            if run.failure is None:           # while shrinking, the failure found first stands
                run.checked += 1
                run.failure = e.result
            raise
        if run.failure is not None:           # hypothesis is shrinking
            run.shrink_steps += 1
        elif res.verdict == NONDIFF:
            run.nondiff += 1
        elif res.verdict == SKIPPED:
            run.skipped += 1
        else:
            run.checked += 1
            run.worst_autograd = max(run.worst_autograd, res.autograd_rel_err)
            run.worst_fd = max(run.worst_fd, res.fd_rel_err)
        if on_case is not None:
            on_case(run)
        if not res.ok:
            if run.failure is None:
                run.failure = res
            raise _Failed(res)
        return res

    fixed = dict(dims or {})
    if len(fixed) == len(model.dims) and seed is not None and scale is not None:
        try:
            judge(Case(model.name, fixed, run.dtype, device, seed, scale))
        except (_Failed, CaseTimeout):
            pass
    else:
        # hypothesis loads only here: reproducing one given case starts faster without it
        import hypothesis
        from hypothesis import errors as hyp_errors
        from hypothesis import given

        from . import strategies

        strategy = strategies.cases(model, dtype=run.dtype, device=device, fixed_dims=fixed, seed=seed, scale=scale)

        @strategies.profile_settings(profile, examples=examples)
        @given(strategy)
        def prop(case: Case) -> None:
            res = judge(case)
            hypothesis.target(min(res.score, 1e300), label="error over tolerance")
            hypothesis.assume(res.verdict not in (NONDIFF, SKIPPED))

        try:
            prop()
        except _Failed as e:
            run.failure = e.result                     # the shrunk case
        except CaseTimeout:
            pass                                       # judge() kept it
        except hyp_errors.Unsatisfiable:
            run.problems.append(f"no case could be judged: {run.nondiff} non-differentiable, "
                                f"{run.skipped} with a forward that is not finite")
    if run.failure is not None:
        # a broken contract, or oracles that disagree (no trustworthy verdict), is an error
        run.verdict = "fail" if run.failure.verdict == FAIL else "error"
    elif run.problems:
        run.verdict = "error"
    run.seconds = time.perf_counter() - start
    return run
