"""A bank of public code that ships hand-written gradients, wrapped unchanged as harness
records, each labelled correct or wrong (``Entry.expected``) with a short reason.

    _entry.py        an entry: the record, its label, and how training and gradcheck call it
    verify.py        the brute-force check of every label against float64 autograd

The entries themselves are other people's code (PyTorch's docs and tutorials, Megatron-LM,
timm, EfficientNet-PyTorch, DANN, Triton's tutorial, cs231n solutions, Deep Learning from
Scratch), so they stay out of this repository: any module placed in this folder that
defines ``ENTRIES`` (a list of :class:`Entry`, built with ``op_entry`` / ``numpy_entry``)
joins the bank.  ``benchmarks/public_bank.py`` runs the harness and gradcheck over it.
"""
from __future__ import annotations

from ._entry import Entry, Spec

__all__ = ["Entry", "Spec", "entries"]


def entries() -> list[Entry]:
    """Every entry of the modules in this folder: Functions, then custom ops, then numpy layers."""
    import importlib
    import pkgutil

    found: list[Entry] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == "verify":
            continue
        found += getattr(importlib.import_module(f"{__name__}.{info.name}"), "ENTRIES", [])
    if not found:
        raise SystemExit("the bank is empty: put modules that define ENTRIES in benchmarks/public_bank/ "
                         "(their code is other people's, so none is committed)")
    order = {"function": 0, "custom op": 1, "numpy": 2}
    found.sort(key=lambda e: order.get(e.kind, 3))
    names = [e.name for e in found]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"entry names used twice: {', '.join(duplicated)}")
    return found
