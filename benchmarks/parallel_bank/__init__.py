"""A bank of public parallel Functions (tensor-, sequence- and context-parallel collectives with
hand-written backwards), each as a sharded record, labelled correct or wrong, with the world sizes
where a wrong one's bug shows.

    _entry.py        an entry (``ParallelEntry``) and ``sharded_model``, the record's arguments
    verify.py        the brute-force check of every label on gloo ranks against float64 autograd
                     of the unsharded reference

The entries are other people's code (Megatron-LM, DeepSpeed, torch.distributed.nn,
flash-attention, torchtitan's DTensor boundary), so they stay out of this repository: any module placed in this folder
that defines ``ENTRIES`` (a list of :class:`ParallelEntry`) joins the bank.
``benchmarks/parallel_bank.py`` prints the table.
"""
from __future__ import annotations

from ._entry import ParallelEntry, ShardedSpec, sharded_model

__all__ = ["ParallelEntry", "ShardedSpec", "entries", "sharded_model"]


def entries() -> list[ParallelEntry]:
    """Every entry of the modules in this folder, in module order."""
    import importlib
    import pkgutil

    found: list[ParallelEntry] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == "verify":
            continue
        found += getattr(importlib.import_module(f"{__name__}.{info.name}"), "ENTRIES", [])
    if not found:
        raise SystemExit("the parallel bank is empty: put modules that define ENTRIES in benchmarks/parallel_bank/ "
                         "(their code is other people's, so none is committed)")
    names = [e.code for e in found]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"entry names used twice: {', '.join(duplicated)}")
    return found
