"""A case's result, the verdict names, and the one map from findings to a verdict.

pass             the manual gradient agrees with autograd in every element, and both
                 agree with finite differences
fail             the manual gradient disagrees with oracles that agree with each other;
                 or the forward differs from the record's reference; or (opted in) the
                 double backward disagrees with the reference's second derivative.
                 numpy code without a reference is judged by finite differences alone
oracles disagree autograd and finite differences differ (a forward autograd cannot see
                 through, e.g. a custom autograd Function with its own backward)
non-differentiable point
                 a kink or a tie where the gradients differ: never a failure
skipped          the forward is not finite at this case's values (a domain matter)
error            a broken contract: missing or extra gradients, wrong shape, dtype or
                 device, NaN/Inf where autograd is finite, inputs changed in place,
                 another result on a later call, an exception; for a shipped op also a
                 tensor saved on ctx changed in place, a gradient for a non-tensor
                 argument, or another gradient when some other input is frozen

:func:`decide` is the map from what the probes of finite differences found
(:class:`~gradcheck_suite.verdict.oracles.Finding`) to a verdict; every stage that judges
with findings calls it, and words the verdict its own way.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from ..verdict.oracles import Finding
from ..verdict.tolerance import TensorComparison
from .case import Case

PASS, FAIL, DISAGREE, NONDIFF, SKIPPED, ERROR = (
    "pass", "fail", "oracles disagree", "non-differentiable point", "skipped", "error")


@dataclasses.dataclass
class CaseResult:
    model: str
    case: Case
    verdict: str = PASS
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    tensors: dict[str, TensorComparison] = dataclasses.field(default_factory=dict)
    failing: list[str] = dataclasses.field(default_factory=list)
    autograd_rel_err: float = 0.0
    fd_rel_err: float = 0.0
    autograd_ratio: float = 0.0    # the worst error against autograd over its tolerance: what decided
    fd_ratio: float = 0.0          # the worst distance from finite differences over the allowance they judged
    seconds: float = 0.0
    traceback: str | None = None   # of an exception from the model's code, for --verbose
    summary: str | None = None     # the headline, where it is not "the manual gradient of ... disagrees"
    phase: str = ""                # what runs now (or ran last): forward, backward, ...
    internal: bool = False         # the error is the harness's own (its traceback is always shown)
    diagnosis: list = dataclasses.field(default_factory=list)   # diagnose.Kind per failing tensor
    location: object = None        # diagnose.Location: the first wrong line of the backward
    location_note: str | None = None   # why there is no location
    fd_ran: bool = True            # False: no second oracle ran (the forward fails in float64)
    deferred: str | None = None    # a contract problem judged after the values (see settle_deferred)

    @property
    def ok(self) -> bool:
        """Not a failure: pass, and the verdicts that set a case aside."""
        return self.verdict in (PASS, NONDIFF, SKIPPED)

    @property
    def score(self) -> float:
        """Worst error over its tolerance; hypothesis steers toward large values."""
        return max((c.max_ratio for c in self.tensors.values()), default=0.0)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What a set of findings decides (see :func:`decide`)."""

    verdict: str | None        # FAIL, DISAGREE or NONDIFF; None: the verdict stands
    failing: list[str]         # the probes whose findings fail the manual gradient
    disputed: list[str]        # the probes where the oracles disagree with each other
    kinks: list[str]           # the probes that saw a kink
    set_aside: bool = False    # kinks set aside, and the rest agree: the verdict stands


def decide(findings: Mapping[str, Sequence[Finding]], *, mismatched: bool = True, two_way: bool = False,
           kinks_aside: bool = False) -> Decision:
    """The one map from findings (probe label -> what its probes concluded) to a verdict.

    - ``mismatched``: the manual gradient differs from the reference somewhere (or was
      probed only where it does): only then can a finding fail it.  Resolved for autograd,
      it is the odd one out; unresolved, finite differences cannot tell a difference that
      autograd sees exactly, and no step shows a kink there, so autograd stands.
    - ``two_way``: finite differences are the only oracle (the manual gradient was passed
      as both values), so a finding of ``NEITHER`` fails it, and there is nothing to dispute.
    - otherwise a finding for the manual gradient, or for neither, means the two oracles
      disagree: ``oracles disagree``.
    - a kink is a non-differentiable point; with ``kinks_aside`` (elements judged one by
      one) the kinks are set aside instead where any probe agrees, and the verdict stands.

    The order of ``failing``, ``disputed`` and ``kinks`` is that of ``findings``.
    """
    fails = (Finding.NEITHER,) if two_way else (Finding.FOR_AUTOGRAD, Finding.UNRESOLVED)
    failing = [n for n, found in findings.items() if any(f in found for f in fails)] if mismatched else []
    disputed = [] if two_way else [n for n, found in findings.items()
                                   if Finding.FOR_MANUAL in found or Finding.NEITHER in found]
    kinks = [n for n, found in findings.items() if Finding.KINK in found]
    if failing:
        return Decision(FAIL, failing, disputed, kinks)
    if disputed:
        return Decision(DISAGREE, failing, disputed, kinks)
    if kinks and kinks_aside and any(Finding.AGREE in found for found in findings.values()):
        return Decision(None, failing, disputed, kinks, set_aside=True)
    if kinks:
        return Decision(NONDIFF, failing, disputed, kinks)
    return Decision(None, failing, disputed, kinks)


def settle(res: CaseResult, decision: Decision, *, failed: str, kink: str, disputed: str = "") -> None:
    """Write ``decision`` on ``res`` in a stage's words: ``failed`` the summary of a
    failure (``{names}``: the failing probes), ``disputed`` the problem where the oracles
    disagree (``{names}``: the disputed probes), ``kink`` the note of a non-differentiable
    point.  A verdict of None leaves ``res`` as it is, save its ``failing``."""
    res.failing = decision.failing
    if decision.verdict == FAIL:
        res.verdict = FAIL
        res.summary = failed.format(names=", ".join(n.split(" (")[0] for n in decision.failing))
    elif decision.verdict == DISAGREE:
        res.verdict = DISAGREE
        res.problems.append(disputed.format(names=", ".join(decision.disputed)))
    elif decision.verdict == NONDIFF:
        res.verdict = NONDIFF
        res.notes.append(kink)


def by_comparison(res: CaseResult) -> Decision:
    """Autograd alone judges (no finite differences): a tensor beyond its bound is resolved
    for autograd, through :func:`decide`."""
    return decide({n: [Finding.AGREE if c.ok else Finding.FOR_AUTOGRAD] for n, c in res.tensors.items()})


def settle_deferred(res: CaseResult) -> None:
    """A contract problem judged after the values (``res.deferred``): wrong values come
    first, and the contract problem explains them (a note); a case that passes, or is set
    aside, becomes an error; one that is already an error gets it as one problem more."""
    if not res.deferred:
        return
    if res.verdict == FAIL:
        res.notes.append(res.deferred)
    elif res.verdict in (PASS, NONDIFF, SKIPPED):
        res.verdict = ERROR
        res.problems.insert(0, res.deferred)
    else:
        res.problems.append(res.deferred)
