"""The model record a user writes: :class:`Model`, :class:`Dim`, dimension expressions, the
user-facing errors, and where in the user's code a line comes from (:mod:`.blame`).

Stdlib and numpy only at import: the pytest plugin reads the record's settings at start-up."""
from .spec import Dim, Model, SpecError, Tensors

__all__ = ["Dim", "Model", "SpecError", "Tensors"]
