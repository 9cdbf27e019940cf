"""Tasks for the rank pool that fail in the ways tests/test_rank_faults.py checks: each
runs on every rank (``task(payload, rank, world_size)``), and goes wrong on one."""
from __future__ import annotations

import ctypes
import os

import torch
import torch.distributed as dist


def fine(payload, rank, world_size):
    t = torch.ones(4, 8, dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0, 0])


def skip_all_reduce(payload, rank, world_size):
    t = torch.ones(4, 8, dtype=torch.float64)
    if rank != 1:
        dist.all_reduce(t)
    return 0


def other_size(payload, rank, world_size):
    t = torch.ones(4 if rank != 1 else 2, 8, dtype=torch.float64)
    dist.all_reduce(t)
    return 0


def other_collective(payload, rank, world_size):
    t = torch.ones(4, 8, dtype=torch.float64)
    if rank == 1:
        dist.all_gather(list(torch.empty(world_size, 4, 8, dtype=torch.float64)), t)
    else:
        dist.all_reduce(t)
    return 0


def skip_then_spin(payload, rank, world_size):
    t = torch.ones(4, 8, dtype=torch.float64)
    if rank == 1:
        while True:
            pass
    dist.all_reduce(t)
    return 0


def segfault(payload, rank, world_size):
    if rank == 1:
        ctypes.string_at(0)
    dist.all_reduce(torch.ones(2, dtype=torch.float64))


def exit3(payload, rank, world_size):
    if rank == 1:
        os._exit(3)
    dist.all_reduce(torch.ones(2, dtype=torch.float64))


def spin(payload, rank, world_size):
    if rank == 1:
        while True:
            pass
    return 0
