"""The errors a user's code meets, worded for the user: a broken contract, tensors the record
could not build, a note that holds for the whole model, and what a wrong shape usually means.

Stdlib only: the ways to hold a backward (``kinds/``) raise these as well as the check."""
from __future__ import annotations

import math


class FactoryError(Exception):
    """The model's tensors could not be built as its record says."""


class RunNote(str):
    """A case's note that holds for the model, not only for that case: the run reports it
    even when every case passes, once per ``key`` (its first case's text)."""

    key: str

    def __new__(cls, text: str, key: str) -> RunNote:
        note = super().__new__(cls, text)
        note.key = key
        return note

    def __reduce__(self):          # travels whole from an isolated run
        return RunNote, (str(self), self.key)


class Unsupported(Exception):
    """Something torch accepts that the harness does not check (a sparse tensor where it
    compares dense ones): the case is set aside (SKIPPED) with this one-line reason, never
    the user's error."""


class ContractError(Exception):
    """The user's code broke the record's contract (reported as one line, no traceback)."""


def shape_hint(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    """What a gradient of the right size in the wrong shape usually means."""
    if [s for s in got if s != 1] == [s for s in want if s != 1] and len(got) > len(want):
        return ": a sum with keepdims?"
    if [s for s in got if s != 1] == [s for s in want if s != 1]:
        return ": a missing unsqueeze, or a sum over the wrong dims?"
    if sorted(got) == sorted(want):
        return ": a transposed product?"
    if math.prod(got) == math.prod(want):
        return ": a reshape?"
    if len(got) == len(want) + 1 and got[1:] == want:
        return ": not summed over the batch?"
    return ""
