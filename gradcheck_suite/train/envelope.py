"""The envelope: how far apart correct runs drift, step by step, and the parting line it draws.

The manual run parts from autograd's where their distance exceeds ``rules.TRAIN_MARGIN`` times
the drift of pairs of correct runs that differ by rounding alone (float32 autograd against
float64 for a float64 model; autograd in the dtype against float64, and against
``rules.TRAIN_TWINS`` rounding twins, for a lower dtype).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from ..check.case import Bound
from ..verdict import rules
from .runs import Run, distance_between


class Envelope:
    """The drift of pairs of correct runs, step by step, as the parting line
    ``rules.TRAIN_MARGIN`` x drift (never below that many times the envelope dtype's epsilon).

    Each pair's distance is measured every step once its runs exist; the drift at step s is
    the largest of them all so far.  Some runs start late, once the manual run first leaves
    the line the others draw (while it stays under, no wider envelope could make it part):

    - float64 model: no pair at first (the floor alone); then a float32 autograd run against
      the float64 one;
    - lower dtype: autograd in the dtype against float64 from the start; then
      ``rules.TRAIN_TWINS`` rounding twins against autograd in the dtype.

    A run that starts at step s replays steps 1..s from the same start and batches, next to a
    replay of the autograd run it is measured against (both are deterministic, and so is a
    twin's draw), so its drift is known for every step, as if it had run from the start.
    """

    def __init__(self, bound: Bound, start, dtype: torch.dtype, device: str, s: dict, lr: float,
                 batches: Callable[[int], Mapping[str, torch.Tensor]], runs: Mapping[str, Run]):
        self.bound, self.start, self.dtype, self.device, self.s, self.lr = bound, start, dtype, device, s, lr
        self.batches, self.autograd = batches, runs["autograd"]
        self.floor = torch.finfo(dtype).eps
        self.low = "float64" in runs               # the model's dtype is below float64
        self.pairs: list[tuple[Run, Run]] = [(runs["autograd"], runs["float64"])] if self.low else []
        self.waiting = True                         # the late runs have not started
        self.loss_scale, self.param_scale = 0.0, rules.TRAIN_TINY
        self.scales: list[tuple[float, float]] = []     # per step, for a replay
        self.drifts: list[float] = []                   # the running maximum per step

    def scale(self, ref_loss: float | None, ref_norm: float) -> None:
        """This step's scales of a distance: the largest reference loss so far, the reference's norm."""
        if ref_loss is not None and math.isfinite(ref_loss):
            self.loss_scale = max(self.loss_scale, abs(ref_loss))
        self.param_scale = max(ref_norm, rules.TRAIN_TINY)
        self.scales.append((self.loss_scale, self.param_scale))

    def measure(self, step: int) -> None:
        """This step's drift: the largest distance of a running pair, folded into the maximum so far."""
        if len(self.drifts) >= step:
            return
        last = self.drifts[-1] if self.drifts else 0.0
        for a, b in self.pairs:
            drift = distance_between(a, b, self.loss_scale, self.param_scale)
            last = max(last, drift) if drift is not None else last
        self.drifts.append(last)

    def threshold(self, step: int) -> float:
        """The parting line at ``step``: the margin times the drift so far, or times the floor."""
        drift = self.drifts[step - 1] if len(self.drifts) >= step else 0.0
        return rules.TRAIN_MARGIN * max(drift, self.floor)

    def advance(self, step: int, batch) -> None:
        """The late runs, once they started, keep step with the others."""
        for a, _ in self.pairs:
            if len(a.losses) < step:
                a.advance(batch, self.s["loss"])

    def thresholds(self, steps: int) -> list[float]:
        """The parting line of every step from 1 to ``steps``, as the late runs left it."""
        return [self.threshold(i) for i in range(1, steps + 1)]

    def _late_runs(self) -> list[Run]:
        make = lambda label, dtype, twin=None: Run(label, self.bound, self.start, dtype,  # noqa: E731
                                                   self.device, self.s["optimizer"], self.lr, manual=False,
                                                   twin=twin)
        if self.low:
            return [make(f"rounding twin {i + 1}", self.dtype, twin=i) for i in range(rules.TRAIN_TWINS)]
        return [make("envelope", self.dtype)]

    def catch_up(self, step: int) -> None:
        """Start the late runs: replay steps 1..step with them and a replay of autograd's run,
        and fold their drifts into every step's."""
        late, self.waiting = self._late_runs(), False
        if not late:
            return
        replay = Run("autograd replay", self.bound, self.start, self.autograd.dtype, self.device,
                     self.s["optimizer"], self.lr, manual=False)
        last = 0.0
        for t in range(1, step + 1):
            batch = self.batches(t - 1)
            replay.advance(batch, self.s["loss"])
            for run in late:
                run.advance(batch, self.s["loss"])
                drift = distance_between(run, replay, *self.scales[t - 1])
                last = max(last, drift) if drift is not None else last
            self.drifts[t - 1] = max(self.drifts[t - 1], last)
        self.pairs += [(run, self.autograd) for run in late]
        del replay

    def described(self) -> str:
        """How the parting line was drawn, for the report."""
        name = str(self.dtype).replace("torch.", "")
        margin = rules.TRAIN_MARGIN
        if not self.low and self.waiting:
            return (f"{margin:g} × {name}'s epsilon, the floor: the manual run never left it, and no "
                    f"drift can lower it, so the {name} run was not needed")
        if not self.low:
            return (f"{margin:g} × the drift of autograd in {name} against autograd in float64 (the nearest "
                    "run that rounds differently from a float64 one)")
        text = f"{margin:g} × the drift of autograd in {name} against autograd in float64"
        if self.waiting:
            return text + "; the manual run never left it, so the rounding twins were not needed"
        return (text + f", or against {rules.TRAIN_TWINS} rounding twins (autograd with its gradient moved by up to "
                f"{name}'s epsilon in each element), whichever is wider")
