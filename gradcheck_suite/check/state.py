"""What the stages of one case share: :class:`CaseState`, and :class:`Stop`, the one way a
stage ends the case.

Each stage reads what earlier stages left on the state and adds its own; the fields are in
the order the stages fill them (see :mod:`.pipeline`).  A stage that finds the case decided
(an error, a failure of the forward against its reference, a forward that is not finite)
records that on ``state.result`` and raises :class:`Stop`; the later stages do not run.
"""
from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Mapping

import torch

from ..record.blame import ours, where
from ..record.spec import Tensors
from ..verdict import oracles
from ..verdict.tolerance import TensorComparison
from .case import Bound, Case
from ..record.errors import ContractError, FactoryError, Unsupported
from .result import ERROR, CaseResult


class Stop(Exception):
    """The case is decided: its result says how, and no later stage runs."""


@dataclasses.dataclass(eq=False)
class CaseState:
    """One case on its way through the stages."""

    model: Bound                   # the record, with the case's hyperparameters bound
    case: Case
    result: CaseResult
    # the forward (stages.forward)
    p: Tensors | None = None       # the case's parameters and data, in its dtype and device
    d: Tensors | None = None
    before: dict[str, torch.Tensor] | None = None   # copies of every input, to see a change in place;
    #                                                 dropped after the contract (a 4096x4096 weight is 67 MB)
    out: torch.Tensor | None = None    # the forward's output (joined)
    cache: object = None               # the forward's cache, for the backward
    leaves: Mapping[str, torch.Tensor] | None = None   # the forward's inputs as autograd leaves, and
    graph: torch.Tensor | None = None                  # its output in their graph (see stages.forward)
    # the backward (stages.backward, stages.repeated)
    g: torch.Tensor | None = None      # the upstream gradient
    early: dict[str, torch.Tensor] | None = None   # autograd through the forward's graph, before the backward
    grads: Mapping[str, torch.Tensor] | None = None   # the manual gradients
    again: list | None = None          # the gradients of the further backward calls; dropped once judged
    # autograd (stages.autograd, check.floor)
    ag: dict[str, torch.Tensor] | None = None      # autograd's gradients
    p64: Tensors | None = None         # float64 copies of p and d
    d64: Tensors | None = None
    rounding: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)   # autograd's own rounding
    finite: dict[str, object] = dataclasses.field(default_factory=dict)   # True, or where autograd is finite
    typical: dict[str, float] = dataclasses.field(default_factory=dict)   # each tensor's typical magnitude
    traced: oracles.Traced | None = None   # autograd traced with hooks: the bounds have the computation floor
    tolerated: dict[str, TensorComparison] = dataclasses.field(default_factory=dict)   # within the bound only
    #                                        thanks to the measured jitter: their comparison without it
    carried: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)   # the computation's own
    #                                        rounding, carried to each tensor
    bitwise: bool = False              # every further backward call repeated the first, bit for bit
    overflow: bool = False             # autograd itself is NaN or Inf somewhere: the case is set aside
    forward_gap: float = 0.0           # a float64 forward's largest distance from the float64 reference,
    #                                    where it computes in a lower precision inside (stages.reference)
    ref64: torch.Tensor | None = None  # the reference's output in float64, in a case of another dtype
    #                                    (stages.reference; None where it failed there)

    @property
    def autograd_phase(self) -> str:
        """The phase name of autograd's runs: on the reference where the record has one."""
        return "autograd on the " + ("reference" if self.model.reference else "forward")

    def error(self, text: str) -> Stop:
        """The case is an error with ``text``: ``raise state.error(...)``."""
        self.result.verdict = ERROR
        self.result.problems.append(text)
        return Stop()

    def call(self, what: str, fn, *args):
        """``fn(*args)``, the model's code, as phase ``what``: an exception it raises is the
        case's error, with the line of the user's code it came from; one raised by the
        harness itself is reported as internal."""
        self.result.phase = what
        try:
            return fn(*args)
        except Unsupported:
            raise                 # not the user's error: the case is set aside (check_case)
        except (FactoryError, ContractError) as e:
            raise self.error(str(e)) from None
        except Exception as e:  # the user's code: report it, never a traceback
            if ours(e):
                internal(self.result, what, e)
                raise Stop() from None
            self.result.traceback = "".join(traceback.format_exception(e))
            raise self.error(f"{what} raised {type(e).__name__}: {e}{where(e)}") from None

    def tensor(self, name: str, float64: bool = False) -> torch.Tensor:
        """The case's tensor ``name``, a parameter or data (its float64 copy with ``float64``)."""
        p, d = (self.p64, self.d64) if float64 else (self.p, self.d)
        return p[name] if name in p else d[name]


def internal(res: CaseResult, what: str, e: BaseException) -> None:
    """A failure of gradcheck-suite itself: said so, with the traceback, never blamed on the model."""
    res.traceback = "".join(traceback.format_exception(e))
    res.internal = True
    res.verdict = ERROR
    frame = traceback.extract_tb(e.__traceback__)[-1]
    res.problems.append(f"internal error in gradcheck-suite while {what}: {type(e).__name__}: {e} "
                        f"(at {frame.filename}:{frame.lineno}); this is not your model's fault: "
                        "please report it with the traceback below")
