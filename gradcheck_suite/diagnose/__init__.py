"""After a failure: what mistake a failing backward made, and the line of it that goes wrong.

Runs once, on the shrunk failing case, never while searching (:func:`diagnose`).

The mistake, per failing tensor (:mod:`.mistake`): the manual gradient against autograd's over
the whole tensor, within the case's own per-element bound, the simplest relation that explains
it: one of :data:`MISTAKES` (``conjugate``, ``sign``, ``scale``, ``transpose``, ``ignores_upstream``, ``zero``,
``swapped``, ``permuted``, ``partial``, ``other``), judged at the record's benchmark size too,
where a mistake judged there says which size its figures are from.

The line (:mod:`.locate`): the forward and the backward run again under ``sys.settrace``
(:mod:`.trace`), autograd gives the gradient of every tensor the forward computed
(:mod:`.truth`), and the backward's assignments are walked in order to the first that is not
the gradient it stands for; then back to the line that first goes wrong, where values show it
is earlier (:mod:`.origin`).  Every line it cites comes with its file (:mod:`.source`).

The results are :class:`Diagnosis`, :class:`Mistake` and :class:`Location` (:mod:`.result`).
"""
from .core import diagnose
from .result import MISTAKES, Diagnosis, Location, Mistake

__all__ = ["diagnose", "Diagnosis", "Location", "Mistake", "MISTAKES"]
