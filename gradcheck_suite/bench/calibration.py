"""The matmul throughput a model's GFLOP/s is measured against.

A matmul's rate depends on its shape and dtype: 64×1000 @ 1000×100 runs at a different
rate than 256×256 @ 256×256, and a 1×4 @ 4×1 is all call overhead.  So each model row
is calibrated with a matmul of the model's own shape and dtype, timed in the same
rounds as the model (see :class:`~gradcheck_suite.bench.timing.Interleaved`): the
largest benchmark dimension is the inner one, the next two the outer ones, which for
``mlp_relu`` (N=64, D_in=1000, H=100) is its first layer, 64×1000 @ 1000×100.

A model that does more than matmuls (masks, sums, elementwise work) should reach a
fraction of that rate; above 100% the report adds a note rather than a bare number.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .timing import Region, synced


def matmul_shape(dims: Mapping[str, int]) -> tuple[int, int, int]:
    """(m, k, n) for an (m×k) @ (k×n) matmul sized like a model with these dims."""
    sizes = sorted(dims.values(), reverse=True) + [1, 1, 1]
    k, n, m = sizes[:3]
    return m, k, n


def matmul_region(shape: tuple[int, int, int], device: str = "cpu", dtype: str = "float32") -> Region:
    """(m×k) @ (k×n) in ``dtype`` on ``device``: 2·m·k·n FLOPs."""
    import torch

    m, k, n = shape
    gen = torch.Generator().manual_seed(m * 1_000_003 + k * 1009 + n)
    a = torch.randn(m, k, generator=gen, dtype=torch.float64).to(device, getattr(torch, dtype))
    b = torch.randn(k, n, generator=gen, dtype=torch.float64).to(device, getattr(torch, dtype))

    def run():
        return a @ b

    info = {"impl": "matmul", "device": device, "dtype": dtype, "shape": [m, k, n]}
    return Region(synced(run, device), False, 2 * m * k * n, info)


def fraction(flops: int | None, matmul_flops: int | None, matmul_over_model: Sequence[float]) -> float | None:
    """The model's FLOP rate over the matmul's: (model FLOPs / matmul FLOPs) times the median
    over rounds of (matmul time / model time).  Each quotient comes from one round, so a
    round slowed by other work slows both of its sides.  None without the figures."""
    if not flops or not matmul_flops or not matmul_over_model:
        return None
    return flops / matmul_flops * float(np.median(matmul_over_model))


OVER_NOTE = ("above the rate of a matmul of the model's shape: its `flops` counts more work than it runs at "
             "this size, or the work is not matmul-bound (tiny tensors, where call overhead dominates both)")
