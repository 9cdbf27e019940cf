"""The ways to hold a backward, registered in one place.

A *kind* is how the user holds the backward that the harness checks: a plain record
(``record.py``), an ``autograd.Function`` (``function.py``), a ``torch.library`` custom op
(``custom_op.py``), numpy layers (``numpy.py``) or a Function sharded over ranks (``sharded.py``).  Each module declares one :class:`Kind`
(``base.py``): its name, what the checks need to know about it, how its factory recognises
the user's object, and ``gradcheck-suite init``'s starting file.  The factories that wrap the
user's code into a :class:`~gradcheck_suite.Model` import torch and live apart, loaded on first
use: :func:`op_model` (``op.py``, for functions and custom ops) and :func:`numpy_model`
(``layers.py``).  ``common.py`` holds what those two share.

Everything reads :data:`KINDS`: the record's validation of ``Model.kind`` (``record/spec.py``),
the checks and the benchmarks through ``Model.held_as`` (the record's :class:`Kind`), ``init``'s
choices and templates (``commands/scaffold.py``), the registry's hint for a misspelled field
(``run/registry.py``), and the package's exports of the factories (``gradcheck_suite/__init__.py``).

To add a way to hold a backward:

1. write ``kinds/NAME.py`` with ``TEMPLATE`` (a starting file that passes the check) and
   ``KIND = Kind(name=..., template=TEMPLATE, ...)``, saying what its records need (see
   ``base.py``).  Keep it importable without torch: ``record/spec.py`` reads this registry at
   start-up.  ``Kind.factory`` names its factory, if it has one, as ``"module.function"``: in
   the same module where it imports torch inside its body, else in a module of its own,
   imported when first called (as ``op.py`` and ``layers.py`` are); a kind that ``op_model``
   already wraps names ``"op.op_model"`` and gives ``holds``;
2. add ``"NAME"`` to :data:`MODULES` below, where ``init`` and messages should list it.

Then ``Model(kind=...)`` accepts it, ``gradcheck-suite init`` offers it, and
``gradcheck_suite.<factory>`` exports its factory.
"""
from __future__ import annotations

import importlib
from typing import Any

from .base import Kind

#: the modules of kinds/ that declare a way to hold a backward (each its ``KIND``), in the
#: order ``init``, messages and the docs list them
MODULES = ("record", "function", "custom_op", "numpy", "sharded")

#: every way to hold a backward, in that order
KINDS: tuple[Kind, ...] = tuple(importlib.import_module(f"{__name__}.{m}").KIND for m in MODULES)

#: their names: the values ``Model.kind`` may take
NAMES: tuple[str, ...] = tuple(k.name for k in KINDS)

#: each factory's public name -> ``"module.function"`` in kinds/
FACTORIES: dict[str, str] = {k.factory.rpartition(".")[2]: k.factory for k in KINDS if k.factory}

__all__ = ["Kind", "MODULES", "KINDS", "NAMES", "FACTORIES", "kind_named", "kind_holding", "spelled", *FACTORIES]


def spelled(text: str) -> str:
    """The name of the kind that ``text`` names (its name, or an old spelling such as
    ``custom-op``); ``text`` itself where no kind has it."""
    return next((k.name for k in KINDS if text == k.name or text in k.aliases), text)


def kind_named(name: str) -> Kind:
    """The kind of this name (or an alias of it)."""
    name = spelled(name)
    for k in KINDS:
        if k.name == name:
            return k
    raise KeyError(f"unknown kind {name!r}; the kinds are {', '.join(NAMES)}")


def kind_holding(op: Any, factory: str) -> Kind | None:
    """The kind, among those that the factory of this public name (``op_model``) makes, that
    holds ``op``: one that recognises its object first, then one that takes any callable; None
    where none does."""
    mine = [k for k in KINDS if k.factory == FACTORIES.get(factory) and k.holds is not None]
    return next((k for k in sorted(mine, key=lambda k: k.fallback) if k.holds(op)), None)


def __getattr__(name: str) -> Any:
    # the factories import torch: loaded on first use, so that this registry stays light
    if name in FACTORIES:
        module, _, function_name = FACTORIES[name].rpartition(".")
        return getattr(importlib.import_module(f"{__name__}.{module}"), function_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
