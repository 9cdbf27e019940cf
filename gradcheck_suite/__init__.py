"""Check hand-written backward passes against autograd and finite differences,
on shapes and values drawn by hypothesis."""
from .kinds import FACTORIES
from .record.spec import Dim, Model, SpecError, Tensors

__all__ = ["Dim", "Model", "SpecError", "Tensors", "Case", "CaseResult", "Registry", "check_case", "load",
           *FACTORIES]     # op_model, numpy_model: one per way to hold a backward that has a factory
__version__ = "0.1.0"


def __getattr__(name):
    # the checker and registry import torch; keep `import gradcheck_suite` light
    if name in ("Case",):
        from .check.case import Case
        return Case
    if name in ("CaseResult", "check_case"):
        from .check import pipeline as check
        return getattr(check, name)
    if name in FACTORIES:
        from . import kinds
        return getattr(kinds, name)
    if name in ("Registry", "load"):
        from .run import registry
        return getattr(registry, name)
    raise AttributeError(f"module 'gradcheck_suite' has no attribute {name!r}")
