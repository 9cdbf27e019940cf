"""Sharded Functions and pool tasks for tests/test_rank_faults.py, each going wrong on one rank:
it raises, skips a collective, calls it with another size, segfaults, exits, or spins.

The records are at the top level (the ranks load them from here by name); each sets a small
``collective_timeout`` so that a hang ends in seconds.  A task runs on every rank as
``task(payload, rank, world_size)``.
"""
from __future__ import annotations

import ctypes
import os

import torch
import torch.distributed as dist
from torch.distributed.tensor import Partial, Replicate

from gradcheck_suite import Dim, sharded_model

#: seconds a collective of these records waits for the other ranks
TIMEOUT = 2.0


def _faulty(name: str, fault):
    """A copy-to-parallel-region Function (identity forward, all-reduce backward) with
    ``fault(g)`` run on rank 1 in its backward, just before the all-reduce."""

    class Copy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, g):
            g = g.clone()
            if dist.get_rank() == 1:
                g = fault(g)
                if g is None:
                    return None
            dist.all_reduce(g)
            return g

    Copy.__name__ = Copy.__qualname__ = f"Copy_{name}"
    globals()[Copy.__name__] = Copy       # importable by name, as a shipped Function is
    return sharded_model(Copy, name=name, dims={"n": Dim(2, 4, 4), "h": Dim(2, 6, 6)},
                         inputs={"x": (("n", "h"), Replicate())}, reference=lambda x: x,
                         output=Replicate(), grad=Partial(), world_sizes=(2,), collective_timeout=TIMEOUT)


def _raise(g):
    raise ValueError("rank one's own error")


def _raise_inside(g):
    dist.all_reduce(g, op="sum")    # torch refuses an op that is not a ReduceOp, inside the collective
    return g


def _other_size(g):
    return g[:1].clone()


def _segfault(g):
    ctypes.string_at(0)


def _exit(g):
    os._exit(3)


def _spin(g):
    while True:
        pass


raises = _faulty("raises", _raise)
raises_inside = _faulty("raises_inside", _raise_inside)
other_size = _faulty("other_size", _other_size)
segfaults = _faulty("segfaults", _segfault)
exits = _faulty("exits", _exit)
spins = _faulty("spins", _spin)


class CopySkips(torch.autograd.Function):
    """Rank 1 returns its gradient without the all-reduce that the others call."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        if dist.get_rank() != 1:
            dist.all_reduce(g)
        return g


skips = sharded_model(CopySkips, name="skips", dims={"n": Dim(2, 4, 4), "h": Dim(2, 6, 6)},
                      inputs={"x": (("n", "h"), Replicate())}, reference=lambda x: x, output=Replicate(), grad=Partial(),
                      world_sizes=(2,), collective_timeout=TIMEOUT)


class CopyFine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g)
        return g


fine = sharded_model(CopyFine, name="fine", dims={"n": Dim(2, 4, 4), "h": Dim(2, 6, 6)},
                     inputs={"x": (("n", "h"), Replicate())}, reference=lambda x: x, output=Replicate(), grad=Partial(),
                     world_sizes=(2,), collective_timeout=TIMEOUT)


class CopySpins(torch.autograd.Function):
    """Megatron's copy region (identity backward under a replicated gradient, no collective)
    whose rank 1 spins in Python: only the case's time limit ends it."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        if dist.get_rank() == 1:
            while True:
                pass
        return g


spins_alone = sharded_model(CopySpins, name="spins_alone", dims={"n": Dim(2, 4, 4), "h": Dim(2, 6, 6)},
                            inputs={"x": (("n", "h"), Replicate())}, reference=lambda x: x, output=Replicate(),
                            grad=Replicate(), world_sizes=(2,), collective_timeout=TIMEOUT)


# -- tasks for the pool itself ----------------------------------------------------------------

def all_reduce_ones(payload, rank, world_size):
    t = torch.ones(4, 8, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0, 0])


def skip_all_reduce(payload, rank, world_size):
    """Rank 1 returns without the all-reduce that the others wait in."""
    t = torch.ones(4, 8, dtype=torch.float64)
    if rank != 1:
        dist.all_reduce(t)
    return 0


def other_collective(payload, rank, world_size):
    """Rank 1 all-gathers where the others all-reduce."""
    t = torch.ones(4, 8, dtype=torch.float64)
    if rank == 1:
        dist.all_gather(list(torch.empty(world_size, 4, 8, dtype=torch.float64)), t)
    else:
        dist.all_reduce(t)
    return 0


def spin_before_all_reduce(payload, rank, world_size):
    """Rank 1 never reaches the all-reduce that the others wait in."""
    t = torch.ones(4, 8, dtype=torch.float64)
    if rank == 1:
        while True:
            pass
    dist.all_reduce(t)
    return 0


def spin(payload, rank, world_size):
    """Rank 1 spins in Python, outside any collective; the others return."""
    if rank == 1:
        while True:
            pass
    return 0
