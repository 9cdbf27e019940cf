"""What is timed, and how: interleaved blocks of the sides of one comparison.

What is timed (:func:`region`), for one model at fixed dims on one device and dtype:

===========  =================  ==================================================
impl         phase              timed region (everything else is setup)
===========  =================  ==================================================
manual       backward           ``model.backward(p, d, cache, g)``, grad mode off
manual       forward+backward   ``model.forward`` then ``model.backward``, grad off
autograd     backward           ``torch.autograd.grad(out, leaves, g,
                                retain_graph=True)`` on a graph built once in setup
autograd     forward+backward   ``model.forward`` on leaves that require grad, then
                                ``torch.autograd.grad``
===========  =================  ==================================================

Tensors, the upstream gradient ``g`` and (for the backward phase) the forward are setup.
On CUDA the region ends with ``torch.cuda.synchronize()``, so it times the kernels and
not just their launch.

How (:class:`Interleaved`): each round times one block of every side (manual, autograd,
and the matmul that calibrates the throughput) back to back, in an order that rotates
from round to round.  A block repeats its side enough calls to last about
``block_seconds``.  Whatever slows the machine during a round slows every side of it,
so the ratio manual/autograd (taken over each full rotation of the order, see
:func:`~gradcheck_suite.bench.rows.paired_ratios`) stays put while absolute times swing.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import os
import time
from collections.abc import Callable, Mapping

from ..verdict import rules
from .setup import autograd_inputs, setup

IMPLS = ("manual", "autograd")
BACKWARD, FORWARD_BACKWARD = "backward", "forward+backward"
PHASES = (BACKWARD, FORWARD_BACKWARD)
#: (device, dtype) cells of the grid; float64 on CPU only.
TARGETS = (("cpu", "float32"), ("cpu", "float64"), ("cuda", "float32"))
#: Size sweep: each dimension times these factors (about a decade, steps of √2).  Factor 1
#: is the grid's own forward+backward row, so the sweep and the grid agree there.
#: deep_linear's benchmark size is tiny, so it is swept upwards.
SWEEP = {
    "mlp_relu": tuple(2 ** (k / 2) for k in range(-6, 0)),
    "linear_layer": tuple(2 ** (k / 2) for k in range(-6, 0)),
    "deep_linear": tuple(2 ** (k / 2) for k in range(1, 9)),
}
@dataclasses.dataclass
class Region:
    """The code to time, the grad mode it runs under, and what to record about it."""

    run: Callable[[], object]
    grad_enabled: bool
    flops: int | None
    info: dict


def region(model, dims: Mapping[str, int], impl: str, phase: str, device: str = "cpu",
           dtype: str = "float32", seed: int = 0) -> Region:
    """Build tensors (and, for the backward phase, run the forward) and return the timed region."""
    import torch

    from ..verdict.oracles import differentiated

    if impl not in IMPLS or phase not in PHASES:
        raise ValueError(f"impl must be one of {IMPLS} and phase one of {PHASES}, got {impl!r}, {phase!r}")
    flops = model_flops(model, dims, phase, device, dtype)
    model, p, d, g = setup(model, dims, device, dtype, seed)
    with torch.no_grad():
        _, cache = model.forward(p, d)

    if impl == "manual":
        if phase == BACKWARD:
            def run():
                return model.backward(p, d, cache, g)
        else:
            def run():
                _, c = model.forward(p, d)
                return model.backward(p, d, c, g)
    else:
        P, D, inputs = autograd_inputs(model, p, d)
        if phase == BACKWARD:
            with torch.enable_grad():
                graph_out = differentiated(model, P, D)     # the reference, where the model has one

            def run():
                return torch.autograd.grad(graph_out, inputs, g, retain_graph=True, allow_unused=True)
        else:
            def run():
                return torch.autograd.grad(differentiated(model, P, D), inputs, g, allow_unused=True)

    info = {"model": model.name, "impl": impl, "phase": phase, "device": device, "dtype": dtype,
            "dims": dict(dims)}
    return Region(synced(run, device), impl == "autograd", flops, info)


_COUNTED: dict[tuple, tuple[int, int] | None] = {}


def model_flops(model, dims: Mapping[str, int], phase: str, device: str = "cpu", dtype: str = "float32") -> int | None:
    """The FLOPs of one call of ``phase``: from the record's ``flops``, or, where it gives
    none, counted once per model, dims, device and dtype from the ops it runs (:mod:`.flops`).
    None where the count itself fails (the row then has no % matmul, its times still count)."""
    from .flops import counted

    if model.flops is not None:
        fwd, bwd = model.flops({**dict(dims), **dict(model.bench_hyper)})
    else:
        key = (id(model), tuple(sorted(dims.items())), device, dtype)
        if key not in _COUNTED:
            try:
                _COUNTED[key] = counted(model, dims, device, dtype)
            except Exception:  # a user's op under the dispatch mode; timing it does not need the count
                _COUNTED[key] = None
        if _COUNTED[key] is None:
            return None
        fwd, bwd = _COUNTED[key]
    return int(bwd if phase == BACKWARD else fwd + bwd)


def synced(run: Callable[[], object], device: str) -> Callable[[], object]:
    """``run`` followed by a CUDA synchronize on a CUDA device, so the kernels are timed."""
    if not device.startswith("cuda"):
        return run
    import torch

    def synced_run():
        result = run()
        torch.cuda.synchronize()
        return result
    return synced_run


class Interleaved:
    """Times several regions in alternating blocks: round i times one block of each, the
    order rotated by i (A B, B A, A B, ... for two sides).

    ``samples[name]`` holds one figure per round: the seconds per call of that block.

    ``agree``: where several processes time their own share of one collective computation
    (the ranks of a sharded record), every one must run the same calls, or one waits in a
    collective that the others never join.  ``agree(values)`` returns the largest of each
    value over the processes; it is applied to the single-call times that size the blocks
    and to the round time that sizes a visit, so that all size them alike.
    """

    def __init__(self, sides: Mapping[str, Region], *, block_seconds: float | None = None, warmup: int | None = None,
                 timer: Callable[[], float] = time.perf_counter,
                 agree: Callable[[list[float]], list[float]] | None = None):
        if not sides:
            raise ValueError("nothing to time")
        self.sides = dict(sides)
        self.names = list(sides)
        self.block_seconds = rules.BLOCK_SECONDS if block_seconds is None else block_seconds
        self.timer = timer
        self.samples: dict[str, list[float]] = {n: [] for n in self.names}
        self.calls: dict[str, int] = {}
        self.agree = agree or (lambda values: values)
        self._warmup(rules.WARMUP_CALLS if warmup is None else warmup)

    def _block(self, name: str, calls: int) -> float:
        import torch

        side = self.sides[name]
        with torch.set_grad_enabled(side.grad_enabled):
            start = self.timer()
            for _ in range(calls):
                side.run()
            return self.timer() - start

    def _warmup(self, warmup: int) -> None:
        single = []
        for name in self.names:
            self._block(name, warmup)
            # the fastest of a few single calls sizes the block (a stall would only shrink it)
            single.append(min(self._block(name, 1) for _ in range(2)))
        for name, once in zip(self.names, self.agree(single)):
            self.calls[name] = max(1, math.ceil(self.block_seconds / max(once, 1e-9)))
        # the fastest of a few full rounds, not recorded, tells how long a round takes: one
        # round that another process stalled once sized a visit at a single rotation
        rounds = []
        for _ in range(rules.SIZING_ROUNDS):
            start = self.timer()
            for name in self.names:
                self._block(name, self.calls[name])
            rounds.append(self.timer() - start)
        self.round_seconds = self.agree([min(rounds)])[0]

    def rounds_for(self, budget: float, low: int, high: int) -> int:
        """How many rounds fit in ``budget`` seconds, between ``low`` and ``high``."""
        return max(low, min(high, int(budget / max(self.round_seconds, 1e-9))))

    def round(self) -> None:
        # the garbage collector stays off inside a round, as in timeit: when it runs
        # depends on what the process did before (a check, other rows), not on the code
        k = len(self.samples[self.names[0]]) % len(self.names)
        enabled = gc.isenabled()
        gc.disable()
        try:
            for name in self.names[k:] + self.names[:k]:
                calls = self.calls[name]
                self.samples[name].append(self._block(name, calls) / calls)
        finally:
            if enabled:
                gc.enable()

    def ratios(self, a: str, b: str) -> list[float]:
        """Per-round a/b."""
        return [x / y for x, y in zip(self.samples[a], self.samples[b]) if y > 0]


def scaled_dims(model, factor: float) -> dict[str, int]:
    """The benchmark dims with every dimension times ``factor`` (at least 1)."""
    return {k: max(1, round(v * factor)) for k, v in model.bench_dims.items()}


def sweep_points() -> list[tuple[str, float]]:
    return [(name, f) for name, factors in SWEEP.items() for f in factors]


def cpu_snapshot() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process), or None
    where /proc/stat is missing.  Two snapshots tell how much others ran meanwhile."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: busy, and steal (other guests) too
    busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields))
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_cores(start: tuple[float, float] | None, end: tuple[float, float] | None, wall: float) -> float | None:
    """Average number of cores other processes (and other guests' steal) used between two snapshots."""
    if start is None or end is None or wall <= 0:
        return None
    return max(0.0, (end[0] - start[0]) - (end[1] - start[1])) / wall


def load_average() -> float | None:
    """The 1-minute load average (what ``uptime`` shows first), or None where there is none."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None
