"""Check hand-written backward passes against autograd and finite differences,
on shapes and values drawn by hypothesis.

The public face: everything a user's code, the docs and the tests reach for is exported here.
The record (``Model``, ``Dim``, ``Tensors``, ``SpecError``) loads at once; the rest loads on
first use, so that ``import gradcheck_suite`` (and the pytest plugin's start-up) does not import
torch:

- the ways to hold a backward besides a ``Model``: ``op_model``, ``numpy_model``;
- one case: ``Case``, ``check_case``, its ``CaseResult`` and the verdict names ``PASS``,
  ``FAIL``, ``DISAGREE``, ``NONDIFF``, ``SKIPPED``, ``ERROR``;
- one model's run over drawn cases: ``run_model``;
- the models by name: ``Registry``, ``load``.
"""
from .kinds import FACTORIES
from .record.spec import Dim, Model, SpecError, Tensors

__all__ = ["Dim", "Model", "SpecError", "Tensors", "Case", "CaseResult", "Registry", "check_case", "load",
           *FACTORIES, "run_model", "PASS", "FAIL", "DISAGREE", "NONDIFF", "SKIPPED", "ERROR"]
__version__ = "0.1.0"

#: where each lazily exported name lives (a module of this package); these import torch
_LAZY = {
    "Case": ".check.case",
    **dict.fromkeys(("CaseResult", "check_case", "PASS", "FAIL", "DISAGREE", "NONDIFF", "SKIPPED", "ERROR"),
                    ".check"),
    **dict.fromkeys(FACTORIES, ".kinds"),      # op_model, numpy_model: one per kind with a factory
    **dict.fromkeys(("Registry", "load"), ".run.registry"),
    "run_model": ".run.runner",
}


def __getattr__(name):
    # the checker, the runner and the registry import torch; keep `import gradcheck_suite` light
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'gradcheck_suite' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
