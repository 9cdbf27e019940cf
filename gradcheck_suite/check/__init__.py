"""One case through the list of stages a check runs, to one verdict.

:mod:`.case` holds a drawn case and its tensors; :mod:`.pipeline` runs the stages
(:mod:`.stages`, one module each) over a :class:`~.state.CaseState`; :mod:`.result` holds the
result, the verdict names and the one map from findings to a verdict."""
from .pipeline import check_case
from .result import DISAGREE, ERROR, FAIL, NONDIFF, PASS, SKIPPED, CaseResult

__all__ = ["CaseResult", "check_case", "PASS", "FAIL", "DISAGREE", "NONDIFF", "SKIPPED", "ERROR"]
