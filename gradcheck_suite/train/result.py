"""What a training run is asked and what it gives back: the options, the verdict names, the
result (with its JSON form), and the error that ends a run in one line.

Torch-free: the command and the plugin build ``Options`` and read ``TrainResult`` without it.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

SAME, MANUAL, BOTH, ERROR = "same", "manual diverges", "both diverge", "error"


@dataclasses.dataclass
class Options:
    """One training run's settings; None where the record's ``train`` dict or the default decides."""

    steps: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    batch: str | None = None
    dims: Mapping[str, int] | None = None
    dtype: str | None = None
    seed: int = 0
    device: str = "cpu"
    scale: float = 1.0             # the start's and the data's value scale, as in a check's case


@dataclasses.dataclass
class TrainResult:
    """A training run's verdict, its one-line message, and the per-step record behind them."""

    name: str
    dtype: str
    verdict: str
    steps: int
    lr: float | None = None
    optimizer: str = "sgd"
    batch: str = "fixed"
    dims: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    parted_at: int | None = None
    nonfinite_at: dict = dataclasses.field(default_factory=lambda: {"manual": None, "autograd": None})
    diverged_at: int | None = None               # autograd's own loss blew up or left the numbers
    losses: dict = dataclasses.field(default_factory=lambda: {"manual": [], "autograd": [], "float64": []})
    distance: list = dataclasses.field(default_factory=list)   # manual from autograd, per step
    envelope: list = dataclasses.field(default_factory=list)   # the threshold per step (margin x drift)
    envelope_from: str = ""
    message: str = ""
    notes: list = dataclasses.field(default_factory=list)
    params: dict = dataclasses.field(default_factory=dict)    # the manual run's last parameters
    seconds: float = 0.0
    plot: str | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "verdict": self.verdict, "steps": self.steps,
                "lr": self.lr, "optimizer": self.optimizer, "batch": self.batch, "dims": self.dims,
                "seed": self.seed, "parted_at": self.parted_at, "nonfinite_at": self.nonfinite_at,
                "diverged_at": self.diverged_at,
                "losses": {k: [_number(v) for v in vs] for k, vs in self.losses.items()},
                "distance": [_number(v) for v in self.distance],
                "envelope": [_number(v) for v in self.envelope], "envelope_from": self.envelope_from,
                "message": self.message, "notes": self.notes, "plot": self.plot,
                "seconds": round(self.seconds, 3)}


def _number(v: float | None) -> float | None:
    """JSON has no NaN or Inf: a step that did not happen, or a non-finite value, is null."""
    return None if v is None or not math.isfinite(v) else v


class TrainError(Exception):
    """A contract problem or an exception of the model's code: the run's one-line message."""
