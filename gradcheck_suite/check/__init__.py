"""One case through the list of stages a check runs, to one verdict.

:mod:`.case` holds a drawn case and its tensors; :mod:`.pipeline` runs the stages."""
from .pipeline import DISAGREE, ERROR, FAIL, NONDIFF, PASS, SKIPPED, CaseResult, check_case

__all__ = ["CaseResult", "check_case", "PASS", "FAIL", "DISAGREE", "NONDIFF", "SKIPPED", "ERROR"]
