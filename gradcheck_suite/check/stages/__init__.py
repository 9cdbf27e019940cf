"""The stages a case goes through, one module each.

Every stage module exposes one function, ``run(state: CaseState) -> None``: it reads what
earlier stages left on the :class:`~gradcheck_suite.check.state.CaseState`, adds its own,
and ends the case, where it decides it, by raising :class:`~gradcheck_suite.check.state.Stop`.
Their order, and when each applies, is the list ``STAGES`` in :mod:`..pipeline`.
"""
